package bridge

import (
	"encoding/json"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestLineReaderBoundsMemory(t *testing.T) {
	const limit = 1000
	huge := strings.Repeat("y", 50<<20) // 50 MiB in one line
	in := io.MultiReader(strings.NewReader("first\r\n"), strings.NewReader(huge), strings.NewReader("\nlast\n"))
	lr := newLineReader(in, limit)
	if l, err := lr.next(); err != nil || string(l) != "first" {
		t.Fatalf("first: %q %v", l, err)
	}
	_, err := lr.next()
	var tl *lineTooLongError
	if !errors.As(err, &tl) || tl.size < len(huge) {
		t.Fatalf("want lineTooLongError for the whole line, got %v", err)
	}
	if l, err := lr.next(); err != nil || string(l) != "last" {
		t.Fatalf("last: %q %v", l, err)
	}
	if lr.peak > limit+readBufferBytes {
		t.Fatalf("held %d bytes of one line; limit %d", lr.peak, limit)
	}
	if _, err := lr.next(); err != io.EOF {
		t.Fatalf("want EOF, got %v", err)
	}
	// Exactly at the limit passes; one over fails.
	lr = newLineReader(strings.NewReader(strings.Repeat("z", limit)+"\n"+strings.Repeat("z", limit+1)+"\n"), limit)
	if l, err := lr.next(); err != nil || len(l) != limit {
		t.Fatalf("at limit: %d %v", len(l), err)
	}
	if _, err := lr.next(); !errors.As(err, &tl) {
		t.Fatalf("over limit: %v", err)
	}
}

func TestPortForUID(t *testing.T) {
	for uid, want := range map[int]int{501: 45670, 502: 45671, 0: 45670, -1: 45670, 1 << 20: 65535} {
		if got := portForUID(uid); got != want {
			t.Errorf("uid %d: port %d, want %d", uid, got, want)
		}
	}
}

func TestReactionType(t *testing.T) {
	for _, c := range []struct {
		code          int
		emoji         string
		kind, feature string
		wantInvalid   bool
	}{
		{2000, "", "love", "", false},
		{2005, "", "question", "", false},
		{3002, "", "-dislike", "", false},
		{2006, "🎉", "emoji", FeatureEmojiTapback, false},
		{3006, "🎉", "-emoji", FeatureEmojiTapback, false},
		{2006, "", "", "", true},
		{2001, "🎉", "", "", true},
		{2007, "", "", "", true},
		{1000, "", "", "", true},
		{0, "", "", "", true},
		{4000, "", "", "", true},
	} {
		kind, feature, err := reactionType(c.code, c.emoji)
		if (err != nil) != c.wantInvalid || kind != c.kind || feature != c.feature {
			t.Errorf("%d %q: %q %q %v", c.code, c.emoji, kind, feature, err)
		}
	}
}

func TestParseAnswer(t *testing.T) {
	decode := func(s string) map[string]json.RawMessage {
		var m map[string]json.RawMessage
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	a, msg := parseAnswer(decode(`{"transactionId":"1","identifier":"G","available":true}`))
	if msg != "" || a.identifier != "G" {
		t.Fatalf("%+v %q", a, msg)
	}
	if v, ok := a.boolean("available"); !v || !ok {
		t.Fatal("available")
	}
	a, _ = parseAnswer(decode(`{"transactionId":"1","data":{"assetId":"A","available":0}}`))
	if a.str("assetId") != "A" {
		t.Fatalf("nested data: %+v", a)
	}
	if v, ok := a.boolean("available"); v || !ok {
		t.Fatal("0 is false")
	}
	if _, msg := parseAnswer(decode(`{"transactionId":"1","error":"Chat does not exist!"}`)); msg != "Chat does not exist!" {
		t.Fatalf("error %q", msg)
	}
	if _, msg := parseAnswer(decode(`{"transactionId":"1","error":null}`)); msg != "" {
		t.Fatalf("null error taken as failure: %q", msg)
	}
	if id := transactionID(decode(`{"transactionId":17}`)); id != "17" {
		t.Fatalf("numeric id %q", id)
	}
}

func TestHelperErrorCodes(t *testing.T) {
	for text, want := range map[string]string{
		"Chat does not exist!":   "NOT_FOUND",
		"Message not found: X":   "NOT_FOUND",
		"Provide a chat GUID!":   "INVALID_ARGUMENT",
		"Failed to create chat!": "INTERNAL",
	} {
		if got := helperError("a", text).Code.String(); !strings.HasSuffix(got, want) {
			t.Errorf("%q: %s, want %s", text, got, want)
		}
	}
}

func TestSafeFileName(t *testing.T) {
	for in, want := range map[string]string{
		"photo.jpg":          "photo.jpg",
		"../../etc/passwd":   "passwd.png",
		`C:\Users\x\cat.png`: "cat.png",
		"":                   "attachment.png",
		"..":                 "attachment.png",
		"bad\x00name\n.png":  "badname.png",
	} {
		if got := safeFileName(in, "image/png"); got != want {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
	}
}

func TestDirStager(t *testing.T) {
	s := DirStager{Dir: t.TempDir()}
	if _, _, err := s.Stage(t.Context(), Asset{URL: "https://example.com/a.png"}); err == nil {
		t.Fatal("a URL was accepted without a downloader")
	}
	path, release, err := s.Stage(t.Context(), Asset{Name: "a.txt", Data: []byte("hi")})
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "hi" {
		t.Fatalf("staged %q %v", b, err)
	}
	release()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("not released: %v", err)
	}
}

// A long name of multibyte characters is shortened on a character
// boundary, keeping its extension (issue 8 item 12): cut mid-character it
// is not valid UTF-8, JSON turns the broken bytes into U+FFFD on the way
// to the helper, and the helper finds no such file.
func TestSafeFileNameCutsOnCharacterBoundary(t *testing.T) {
	for _, stem := range []string{strings.Repeat("é", 150), strings.Repeat("😀", 150), "a" + strings.Repeat("é", 150), strings.Repeat("😀", 150) + "ab", strings.Repeat("x", 300)} {
		for _, ext := range []string{".jpg", ".jpeg"} {
			name := stem + ext
			got := safeFileName(name, "image/jpeg")
			if !utf8.ValidString(got) || len(got) > 200 || len(got) < 197 || !strings.HasSuffix(name, got) {
				t.Errorf("%.12q...%s: %q (%d bytes), want the valid end of the name", stem, ext, got, len(got))
			}
		}
	}
}
