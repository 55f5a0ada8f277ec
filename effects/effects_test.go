package effects

import (
	"errors"
	"strings"
	"testing"
)

func TestCatalogMatchesProviderDocs(t *testing.T) {
	// The provider documentation's table: 4 bubble and 9 screen effects.
	want := map[string]string{
		"slam":        "com.apple.MobileSMS.expressivesend.impact",
		"loud":        "com.apple.MobileSMS.expressivesend.loud",
		"gentle":      "com.apple.MobileSMS.expressivesend.gentle",
		"invisible":   "com.apple.MobileSMS.expressivesend.invisibleink",
		"confetti":    "com.apple.messages.effect.CKConfettiEffect",
		"fireworks":   "com.apple.messages.effect.CKFireworksEffect",
		"balloons":    "com.apple.messages.effect.CKBalloonEffect",
		"heart":       "com.apple.messages.effect.CKHeartEffect",
		"lasers":      "com.apple.messages.effect.CKLasersEffect",
		"celebration": "com.apple.messages.effect.CKHappyBirthdayEffect",
		"sparkles":    "com.apple.messages.effect.CKSparklesEffect",
		"spotlight":   "com.apple.messages.effect.CKSpotlightEffect",
		"echo":        "com.apple.messages.effect.CKEchoEffect",
	}
	bubbles, screens := 0, 0
	for _, e := range All() {
		if want[e.Name] != e.ID {
			t.Errorf("%s: id %q, want %q", e.Name, e.ID, want[e.Name])
		}
		if e.Kind == Bubble {
			bubbles++
		} else {
			screens++
		}
		byName, err := Lookup(strings.ToUpper(e.Name))
		if err != nil || byName != e {
			t.Errorf("Lookup(%q) = %v, %v", e.Name, byName, err)
		}
		byID, err := Lookup(e.ID)
		if err != nil || byID != e {
			t.Errorf("Lookup(%q) = %v, %v", e.ID, byID, err)
		}
	}
	if len(All()) != len(want) || bubbles != 4 || screens != 9 {
		t.Fatalf("catalog has %d effects (%d bubble, %d screen), want 13 (4, 9)", len(All()), bubbles, screens)
	}
}

func TestUnknownEffectListsValidNames(t *testing.T) {
	_, err := Lookup("explode")
	var u *UnknownError
	if !errors.As(err, &u) {
		t.Fatalf("Lookup(explode) error = %v, want *UnknownError", err)
	}
	if !strings.Contains(err.Error(), "slam") || !strings.Contains(err.Error(), "echo") {
		t.Errorf("error %q does not list the valid names", err)
	}
}

func TestTapbacks(t *testing.T) {
	for i, name := range []string{"love", "like", "dislike", "laugh", "emphasize", "question"} {
		tb, err := LookupTapback(name)
		if err != nil || tb.Code != 2000+i {
			t.Errorf("LookupTapback(%q) = %v, %v", name, tb, err)
		}
		n, removed, ok := Associated(2000 + i)
		if !ok || removed || n != name {
			t.Errorf("Associated(%d) = %q %v %v", 2000+i, n, removed, ok)
		}
		n, removed, ok = Associated(3000 + i)
		if !ok || !removed || n != name {
			t.Errorf("Associated(%d) = %q %v %v", 3000+i, n, removed, ok)
		}
	}
	if _, err := LookupTapback("wow"); err == nil || !strings.Contains(err.Error(), "question") {
		t.Errorf("LookupTapback(wow) error = %v", err)
	}
	for code, want := range map[int]string{2006: "emoji", 2007: "sticker", 3006: "emoji", 1000: "sticker_placed"} {
		if n, _, ok := Associated(code); !ok || n != want {
			t.Errorf("Associated(%d) = %q, want %q", code, n, want)
		}
	}
	for _, code := range []int{0, 1, 1999, 2008, 2999, 3008, 4000} {
		if _, _, ok := Associated(code); ok {
			t.Errorf("Associated(%d) ok, want not a reaction", code)
		}
	}
}

// ReactionCode is the one computation of a reaction's code; Associated
// reads every code it gives back as the same reaction.
func TestReactionCode(t *testing.T) {
	for _, c := range []struct {
		tapback       string
		emoji, remove bool
		want          int
	}{
		{"love", false, false, 2000}, {"Question", false, false, 2005}, {"haha", false, false, 2003},
		{"dislike", false, true, 3002}, {"", true, false, 2006}, {"", true, true, 3006},
	} {
		got, err := ReactionCode(c.tapback, c.emoji, c.remove)
		if err != nil || got != c.want {
			t.Errorf("ReactionCode(%q, %v, %v) = %d, %v; want %d", c.tapback, c.emoji, c.remove, got, err, c.want)
		}
		name, removed, ok := Associated(got)
		if !ok || removed != c.remove || (c.emoji && name != "emoji") {
			t.Errorf("Associated(%d) = %q %v %v", got, name, removed, ok)
		}
	}
	for _, bad := range []struct {
		tapback string
		emoji   bool
		says    string
	}{{"hug", false, "question"}, {"", false, "exactly one of tapback"}, {"love", true, "not both"}} {
		if _, err := ReactionCode(bad.tapback, bad.emoji, false); err == nil || !strings.Contains(err.Error(), bad.says) {
			t.Errorf("ReactionCode(%q, %v) error = %v, want it to say %q", bad.tapback, bad.emoji, err, bad.says)
		}
	}
}

func TestAssociatedGUID(t *testing.T) {
	g, p, err := ParseAssociatedGUID("p:2/ABC-123")
	if err != nil || g != "ABC-123" || p != 2 {
		t.Fatalf("p:2/ABC-123 = %q %d %v", g, p, err)
	}
	if g, p, err = ParseAssociatedGUID("bp:XYZ"); err != nil || g != "XYZ" || p != 0 {
		t.Fatalf("bp:XYZ = %q %d %v", g, p, err)
	}
	if s := FormatAssociatedGUID("ABC", 1); s != "p:1/ABC" {
		t.Fatalf("Format = %q", s)
	}
	for _, bad := range []string{"", "ABC", "p:", "p:/X", "p:1/", "p:x/ABC", "bp:", "p:99999999999999/X"} {
		if _, _, err := ParseAssociatedGUID(bad); err == nil {
			t.Errorf("ParseAssociatedGUID(%q) accepted", bad)
		}
	}
}
