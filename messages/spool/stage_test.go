package spool

import (
	"archive/zip"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/line-agent/line-agent/messages/bridge"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// trickNames are names that once passed the extension check and were then
// written as run.command, run.sh, run.sh and tool.app (issue 8 item 6),
// with a few of their relatives.
var trickNames = []string{
	"run.command/",
	"run.sh\u0000",
	"run.sh\\",
	"tool.app\n",
	"run.sh\r",
	"run.sh\t",
	"dir/run.sh",
	`dir\run.sh`,
	"run.sh/.",
	"..",
	".",
	"photo\u202egnp.sh",
	"run.sh\x7f",
	"run.sh\xff",
}

// machO are the first bytes of every Mach-O form: thin 32- and 64-bit in
// both byte orders, and universal (fat) headers, 32- and 64-bit, in both.
var machO = map[string][]byte{
	"MH_MAGIC":      {0xfe, 0xed, 0xfa, 0xce},
	"MH_CIGAM":      {0xce, 0xfa, 0xed, 0xfe},
	"MH_MAGIC_64":   {0xfe, 0xed, 0xfa, 0xcf},
	"MH_CIGAM_64":   {0xcf, 0xfa, 0xed, 0xfe},
	"FAT_MAGIC":     {0xca, 0xfe, 0xba, 0xbe},
	"FAT_CIGAM":     {0xbe, 0xba, 0xfe, 0xca},
	"FAT_MAGIC_64":  {0xca, 0xfe, 0xba, 0xbf},
	"FAT_CIGAM_64":  {0xbf, 0xba, 0xfe, 0xca},
	"shebang":       []byte("#!/bin/sh\n"),
	"shebang-space": []byte("#! /usr/bin/env python3\n"),
}

func stagedNames(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			out = append(out, p)
		}
		return nil
	})
	return out
}

// Every trick name is refused through the spool's Stage (the private-API
// helper's door), nothing is written, and the error does not repeat it.
func TestStageRefusesTrickNames(t *testing.T) {
	dir := t.TempDir()
	sp := New(Options{Dir: dir})
	for _, name := range trickNames {
		path, release, err := sp.Stage(context.Background(), bridge.Asset{Name: name, Data: []byte("echo hi\n")})
		if err == nil {
			release()
			t.Errorf("%q: staged as %s", name, filepath.Base(path))
			continue
		}
		wantCode(t, err, linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT)
	}
	if left := stagedNames(t, dir); len(left) != 0 {
		t.Fatalf("written: %v", left)
	}
}

// Programs and scripts are refused by content whatever the name says.
func TestStageRefusesProgramsByContent(t *testing.T) {
	dir := t.TempDir()
	sp := New(Options{Dir: dir})
	for what, head := range machO {
		data := append(append([]byte(nil), head...), make([]byte, 64)...)
		_, release, err := sp.Stage(context.Background(), bridge.Asset{Name: "photo.jpg", Data: data})
		if err == nil {
			release()
			t.Errorf("%s: staged", what)
			continue
		}
		wantCode(t, err, linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT)
	}
	if left := stagedNames(t, dir); len(left) != 0 {
		t.Fatalf("written: %v", left)
	}
}

// The name judged is the name written: a declared type that would add a
// program's extension is refused, and what is staged is named exactly as
// Admit said.
func TestStageWritesTheJudgedName(t *testing.T) {
	dir := t.TempDir()
	sp := New(Options{Dir: dir})
	png := append([]byte("\x89PNG\r\n\x1a\n"), make([]byte, 64)...)
	for _, c := range []struct{ name, mime, want string }{
		{"cat.png", "", "cat.png"},
		{"cat.png", "image/png", "cat.png"},
		{"photo", "image/png", "photo.png"},
		{"", "", "attachment"},
		{"résumé 2024.pdf", "", "résumé 2024.pdf"},
		{".hidden.png", "", ".hidden.png"},
		{"blob", "application/octet-stream", "blob"},
	} {
		path, release, err := sp.Stage(context.Background(), bridge.Asset{Name: c.name, MimeType: c.mime, Data: png})
		if err != nil {
			t.Errorf("%q %q: %v", c.name, c.mime, err)
			continue
		}
		if got := filepath.Base(path); got != c.want {
			t.Errorf("%q %q: written as %q, want %q", c.name, c.mime, got, c.want)
		}
		if got, _ := os.ReadFile(path); !bytes.Equal(got, png) {
			t.Errorf("%q: content differs", c.name)
		}
		release()
	}
	for _, c := range []struct{ name, mime string }{
		{"x", "text/javascript"},
		{"x", "application/x-sh"},
	} {
		path, release, err := sp.Stage(context.Background(), bridge.Asset{Name: c.name, MimeType: c.mime, Data: []byte("alert(1)")})
		if err == nil {
			release()
			t.Errorf("%q %q: staged as %s", c.name, c.mime, filepath.Base(path))
			continue
		}
		wantCode(t, err, linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT)
	}
	// A long name keeps its extension and is cut at a character boundary.
	long := strings.Repeat("é", 150) + ".png"
	path, release, err := sp.Stage(context.Background(), bridge.Asset{Name: long, Data: png})
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if base := filepath.Base(path); len(base) > maxNameBytes || !strings.HasSuffix(base, "é.png") {
		t.Fatalf("long name written as %q (%d bytes)", base, len(base))
	}
}

// Admit, the one rule both doors use, judges names and content directly.
func TestAdmit(t *testing.T) {
	for _, name := range trickNames {
		if got, err := Admit(name, "", []byte("plain")); err == nil {
			t.Errorf("Admit(%q) = %q, want a refusal", name, got)
		} else {
			wantCode(t, err, linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT)
			if strings.Contains(err.Error(), "run.") || strings.Contains(err.Error(), "tool.") {
				t.Errorf("%q: the error %q repeats the name", name, err)
			}
		}
	}
	for _, name := range []string{"run.command", "RUN.SH", "tool.app", "run.sh.", "run.sh ", "run.sh. . ", "x.pkg", "x.dmg", "x.scpt"} {
		if _, err := Admit(name, "", []byte("plain")); err == nil {
			t.Errorf("Admit(%q) accepted", name)
		}
	}
	for what, head := range machO {
		if _, err := Admit("photo.jpg", "image/jpeg", append(append([]byte(nil), head...), 0, 0, 0, 0)); err == nil {
			t.Errorf("%s accepted", what)
		}
	}
	app := zipWith(t, map[string]os.FileMode{"Tool.app/Contents/MacOS/Tool": 0o644})
	if _, err := Admit("tool.zip", "", app); err == nil {
		t.Error("a zipped .app accepted")
	}
	exe := zipWith(t, map[string]os.FileMode{"tool": 0o755})
	if _, err := Admit("tool.zip", "", exe); err == nil {
		t.Error("a zipped executable accepted")
	}
	docs := zipWith(t, map[string]os.FileMode{"docs/readme.txt": 0o644})
	if got, err := Admit("docs.zip", "", docs); err != nil || got != "docs.zip" {
		t.Errorf("a plain zip: %q, %v", got, err)
	}
}

func zipWith(t *testing.T, files map[string]os.FileMode) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	for name, mode := range files {
		hdr := &zip.FileHeader{Name: name}
		hdr.SetMode(mode)
		w, err := zw.CreateHeader(hdr)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte("content"))
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}
