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
		"0044 20 7946 0958":   "+442079460958", // the international prefix
		"+49.30.1234567":      "+49301234567",
		"+1 (555) 765-4321":   "+15557654321",
		"12345":               "12345", // a short code stays as written
		"Bob@Example.COM":     "bob@example.com",
		"  alice@example.com": "alice@example.com",
		"a@example.com\n":     "a@example.com",
		"hello there":         "hello there",
	} {
		if got := NormalizeLine(in); got != want {
			t.Errorf("NormalizeLine(%q) = %q, want %q", in, got, want)
		}
		// A handle the rule accepts is sent onward in the same spelling.
		if got, err := NormalizeHandle(in); CheckHandle(in) == nil && (err != nil || got != want) {
			t.Errorf("NormalizeHandle(%q) = %q, %v; want %q", in, got, err, want)
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
		"bob@example.com;drop", "+1555abc", "\x00+15550000001",
		// The cases the AppleScript driver refused before this was the one
		// rule: an E.164 country code never starts with 0, a domain has no
		// empty label, a bare address has no display name or comment.
		"+0123456789", "a@example..com", "a@@example.com", "Name <a@example.com>", "a(b)@example.com", "a@[127.0.0.1]", "+1555\x001230001"} {
		err := CheckHandle(bad)
		if err == nil || err.Code != linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT {
			t.Errorf("CheckHandle(%q) = %v, want INVALID_ARGUMENT", bad, err)
		}
	}
}

// NormalizeHandle refuses what CheckHandle refuses; NormalizeHandles
// spells every participant and refuses none at all.
func TestNormalizeHandles(t *testing.T) {
	if _, err := NormalizeHandle("+1 555 abc 0001"); err == nil {
		t.Error("a number with letters was accepted")
	}
	if hs, err := NormalizeHandles([]string{"(555) 765-4321", "Bob@Example.com"}); err != nil || hs[0] != "+15557654321" || hs[1] != "bob@example.com" {
		t.Errorf("NormalizeHandles: %q %v", hs, err)
	}
	if _, err := NormalizeHandles([]string{"+15557654321", "bob"}); err == nil {
		t.Error("a bad participant among good ones was accepted")
	}
	if _, err := NormalizeHandles(nil); err == nil {
		t.Error("no participants were accepted")
	}
}

func TestPlatformChatGUID(t *testing.T) {
	for in, want := range map[string]string{
		"iMessage;-;+15557654321":    "any;-;+15557654321",
		"SMS;-;(555) 765-4321":       "any;-;+15557654321",
		"iMessage;-;Bob@Example.com": "any;-;bob@example.com",
		"iMessage;+;chat123456":      "any;+;chat123456",
		"any;+;chat123456":           "any;+;chat123456",
		"not a guid":                 "not a guid",
	} {
		if got := PlatformChatGUID(in); got != want {
			t.Errorf("PlatformChatGUID(%q) = %q, want %q", in, got, want)
		}
	}
}
