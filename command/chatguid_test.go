package command

import (
	"strings"
	"testing"
)

func TestParseChatGUID(t *testing.T) {
	for in, want := range map[string]ChatGUID{
		"iMessage;-;+15551234567":      {Service: "iMessage", ID: "+15551234567"},
		"any;+;chat123":                {Service: "any", Group: true, ID: "chat123"},
		"SMS;-;12345":                  {Service: "SMS", ID: "12345"},
		"imessage;-;Alice@Example.COM": {Service: "iMessage", ID: "alice@example.com"},
		"iMessage;-;+1 (555) 765-4321": {Service: "iMessage", ID: "+15557654321"},
		"RCS;-;5557654321":             {Service: "RCS", ID: "+15557654321"},
		"iMessage;-;urn:biz:1234-abcd": {Service: "iMessage", ID: "urn:biz:1234-abcd"},
		"iMessage;+;chat0044123456789": {Service: "iMessage", Group: true, ID: "chat0044123456789"},
		"any;+;5557654321":             {Service: "any", Group: true, ID: "5557654321"}, // a group's id is not a handle
	} {
		got, err := ParseChatGUID(in)
		if err != nil || got != want {
			t.Errorf("ParseChatGUID(%q) = %+v, %v; want %+v", in, got, err, want)
		}
		if c := CanonicalChatGUID(in); c != want.String() {
			t.Errorf("CanonicalChatGUID(%q) = %q, want %q", in, c, want.String())
		}
	}
	for _, bad := range []string{"", "chat123", "iMessage;x;+1555", "Mail;-;+15551230001", "iMessage;-;", "iMessage;-;a;b",
		"iMessage;-;+1555\n1230001", ";-;+15551234567", "iMessage;+;chat 1", "iMessage;-;\x00", strings.Repeat("g", MaxChatGUIDBytes+1)} {
		if _, err := ParseChatGUID(bad); err == nil {
			t.Errorf("ParseChatGUID(%q) accepted", bad)
		}
		if c := CanonicalChatGUID(bad); c != bad {
			t.Errorf("CanonicalChatGUID(%q) = %q, want it unchanged", bad, c)
		}
	}
}

func TestChatGUIDSpellings(t *testing.T) {
	same := [][]string{
		{"iMessage;-;+15551234567", "SMS;-;+15551234567", "any;-;+15551234567", "RCS;-;+15551234567", "any;-;+1 555 123 4567"},
		{"iMessage;+;chat123", "any;+;chat123"},
		{"iMessage;-;Bob@Example.com", "any;-;bob@example.com"},
	}
	for _, group := range same {
		for _, g := range group[1:] {
			if !SameChat(group[0], g) {
				t.Errorf("%s and %s should be the same chat", group[0], g)
			}
		}
	}
	if SameChat("iMessage;-;+15551234567", "iMessage;+;+15551234567") {
		t.Error("one-to-one and group must differ")
	}
	if got := ChatKey("not a guid"); got != "not a guid" {
		t.Errorf("ChatKey of a non-GUID = %q", got)
	}
}
