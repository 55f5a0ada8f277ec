package installer

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"howett.net/plist"
)

// decodePlist reads an XML property list with encoding/xml alone (strict),
// so the check does not trust the same library's idea of a plist: dicts
// become maps, arrays slices, <true/>/<false/> bools, <integer> ints.
func decodePlist(t *testing.T, b []byte) any {
	t.Helper()
	d := xml.NewDecoder(bytes.NewReader(b))
	d.Strict = true
	var sawDoctype bool
	for {
		tok, err := d.Token()
		if err != nil {
			t.Fatalf("no <plist> element: %v\n%s", err, b)
		}
		switch tk := tok.(type) {
		case xml.Directive:
			sawDoctype = strings.HasPrefix(string(tk), `DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN"`)
		case xml.StartElement:
			if tk.Name.Local != "plist" || len(tk.Attr) != 1 || tk.Attr[0].Value != "1.0" {
				t.Fatalf("root element %v, want <plist version=\"1.0\">", tk)
			}
			if !sawDoctype {
				t.Fatal("no plist DOCTYPE before <plist>")
			}
			v, err := plistValue(d, nil)
			if err != nil {
				t.Fatalf("%v\n%s", err, b)
			}
			if end, err := nextElement(d); err != nil || end != nil {
				t.Fatalf("more than one value in <plist>: %v %v", end, err)
			}
			for {
				tok, err := d.Token()
				if err == io.EOF {
					return v
				}
				if err != nil {
					t.Fatalf("after </plist>: %v", err)
				}
				if cd, ok := tok.(xml.CharData); !ok || len(bytes.TrimSpace(cd)) != 0 {
					t.Fatalf("content after </plist>: %#v", tok)
				}
			}
		}
	}
}

// nextElement skips whitespace to the next start element; nil at an end
// element.
func nextElement(d *xml.Decoder) (*xml.StartElement, error) {
	for {
		tok, err := d.Token()
		if err != nil {
			return nil, err
		}
		switch tk := tok.(type) {
		case xml.StartElement:
			return &tk, nil
		case xml.EndElement:
			return nil, nil
		case xml.CharData:
			if len(bytes.TrimSpace(tk)) != 0 {
				return nil, fmt.Errorf("stray text %q", tk)
			}
		default:
			return nil, fmt.Errorf("unexpected %#v", tk)
		}
	}
}

// plistValue reads one value; start is its element, or nil to read it.
func plistValue(d *xml.Decoder, start *xml.StartElement) (any, error) {
	if start == nil {
		var err error
		if start, err = nextElement(d); err != nil || start == nil {
			return nil, fmt.Errorf("want a value: %v", err)
		}
	}
	text := func() (string, error) {
		var s string
		if err := d.DecodeElement(&s, start); err != nil {
			return "", err
		}
		return s, nil
	}
	switch start.Name.Local {
	case "string":
		return text()
	case "integer":
		s, err := text()
		if err != nil {
			return nil, err
		}
		return strconv.Atoi(s)
	case "true", "false":
		if err := d.Skip(); err != nil {
			return nil, err
		}
		return start.Name.Local == "true", nil
	case "array":
		out := []any{}
		for {
			el, err := nextElement(d)
			if err != nil {
				return nil, err
			}
			if el == nil {
				return out, nil
			}
			v, err := plistValue(d, el)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
	case "dict":
		out := map[string]any{}
		for {
			el, err := nextElement(d)
			if err != nil {
				return nil, err
			}
			if el == nil {
				return out, nil
			}
			if el.Name.Local != "key" {
				return nil, fmt.Errorf("dict entry <%s>, want <key>", el.Name.Local)
			}
			var k string
			if err := d.DecodeElement(&k, el); err != nil {
				return nil, err
			}
			if _, dup := out[k]; dup {
				return nil, fmt.Errorf("key %q twice", k)
			}
			v, err := plistValue(d, nil)
			if err != nil {
				return nil, fmt.Errorf("key %q: %w", k, err)
			}
			out[k] = v
		}
	}
	return nil, fmt.Errorf("unknown plist element <%s>", start.Name.Local)
}

func TestPlistHasEveryKeyAndNothingElse(t *testing.T) {
	l := LaunchAgent{Binary: "/usr/local/bin/line-agent", DataDir: "/Users/ann/Library/Application Support/line-agent", LogDir: "/Users/ann/Library/Logs/line-agent"}
	b, err := l.Plist()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"Label":                  "dev.line-agent.agent",
		"ProgramArguments":       []any{"/usr/local/bin/line-agent", "run", "--data", "/Users/ann/Library/Application Support/line-agent", "--driver", "macos"},
		"RunAtLoad":              true,
		"KeepAlive":              map[string]any{"SuccessfulExit": false},
		"ThrottleInterval":       10,
		"LimitLoadToSessionType": "Aqua",
		"ProcessType":            "Interactive",
		"ExitTimeOut":            30,
		"StandardOutPath":        "/Users/ann/Library/Logs/line-agent/stdout.log",
		"StandardErrorPath":      "/Users/ann/Library/Logs/line-agent/stderr.log",
		"EnvironmentVariables":   map[string]any{"LINE_AGENT_LOG_FORMAT": "json"},
	}
	if got := decodePlist(t, b); !reflect.DeepEqual(got, want) {
		t.Fatalf("plist =\n%#v\nwant\n%#v\n%s", got, want, b)
	}
	// A second, independent parser (the one the rest of the module uses
	// for Apple's plists) reads the same thing.
	var p struct {
		Label     string `plist:"Label"`
		KeepAlive struct {
			SuccessfulExit bool `plist:"SuccessfulExit"`
		} `plist:"KeepAlive"`
		ThrottleInterval int `plist:"ThrottleInterval"`
	}
	if _, err := plist.Unmarshal(b, &p); err != nil || p.Label != Label || p.KeepAlive.SuccessfulExit || p.ThrottleInterval != ThrottleInterval {
		t.Fatalf("howett.net/plist reads %+v, %v", p, err)
	}
}

func TestPlistKeepsAwkwardPathsIntact(t *testing.T) {
	odd := `/Users/a&b/<data> "q" 'x' ]]> done`
	l := LaunchAgent{Binary: "/opt/line agent/bin/line-agent", DataDir: odd, LogDir: "/tmp/logs & <more>", Driver: "sim"}
	b, err := l.Plist()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte("a&b")) || bytes.Contains(b, []byte("<data>")) {
		t.Fatalf("a value was spliced into the XML unescaped:\n%s", b)
	}
	got := decodePlist(t, b).(map[string]any)
	args := got["ProgramArguments"].([]any)
	want := []any{"/opt/line agent/bin/line-agent", "run", "--data", odd, "--driver", "sim"}
	if !reflect.DeepEqual(args, want) {
		t.Fatalf("ProgramArguments = %q, want %q", args, want)
	}
	if got["StandardErrorPath"] != "/tmp/logs & <more>/stderr.log" {
		t.Fatalf("StandardErrorPath = %q", got["StandardErrorPath"])
	}
	back, err := programArguments(b)
	if err != nil || !reflect.DeepEqual(back, []string{"/opt/line agent/bin/line-agent", "run", "--data", odd, "--driver", "sim"}) {
		t.Fatalf("programArguments = %q, %v", back, err)
	}
}

func TestPlistRejectsRelativePaths(t *testing.T) {
	for _, l := range []LaunchAgent{
		{Binary: "line-agent", DataDir: "/d", LogDir: "/l"},
		{Binary: "/b", DataDir: "data", LogDir: "/l"},
		{Binary: "/b", DataDir: "/d", LogDir: "logs"},
	} {
		if _, err := l.Plist(); !errors.Is(err, ErrRelativePath) {
			t.Errorf("%+v: err = %v, want ErrRelativePath", l, err)
		}
	}
}
