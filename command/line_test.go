package command

import (
	"testing"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

func TestNormalizeLine(t *testing.T) {
	for in, want := range map[string]string{
		"+15550000001":        "+15550000001",
		" +1 555-000-0001 ":   "+15550000001",
		"(555) 000-0001":      "+15550000001",
		"555.000.0001":        "+15550000001",
		"1 555 000 0001":      "+15550000001",
		"+44 20 7946 0958":    "+442079460958",
		"12345":               "12345", // a short code stays as written
		"Bob@Example.COM":     "bob@example.com",
		"  alice@example.com": "alice@example.com",
		"hello there":         "hello there",
	} {
		if got := NormalizeLine(in); got != want {
			t.Errorf("NormalizeLine(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCheckHandle(t *testing.T) {
	for _, ok := range []string{"+15550000001", "(555) 000-0001", "bob@example.com", "Bob@Example.com", "12345", "+442079460958"} {
		if err := CheckHandle(ok); err != nil {
			t.Errorf("CheckHandle(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", "+1", "+1234567890123456", "12", "hello", "@example.com", "bob@", "bob@example", "bob@.com", "a b@example.com",
		"bob@example.com;drop", "+1555abc", "\x00+15550000001"} {
		err := CheckHandle(bad)
		if err == nil || err.Code != linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT {
			t.Errorf("CheckHandle(%q) = %v, want INVALID_ARGUMENT", bad, err)
		}
	}
}
