package applescript

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// pngBytes is a PNG header followed by filler: enough for the sniffer.
var pngBytes = append([]byte("\x89PNG\r\n\x1a\n"), bytes.Repeat([]byte{0xab}, 4096)...)

func dataFile(data []byte, name string) *linev1.SendAttachment {
	return &linev1.SendAttachment{Source: &linev1.SendAttachment_Data{Data: data}, FileName: name}
}

func urlFile(u string) *linev1.SendAttachment {
	return &linev1.SendAttachment{Source: &linev1.SendAttachment_Url{Url: u}}
}

// stagedNameRE is every name the stager may produce.
var stagedNameRE = regexp.MustCompile(`^attachment-[0-9a-f]{24}(\.[a-z0-9]{1,10})?$`)

func (h *harness) stagedFiles() []string {
	h.t.Helper()
	ents, err := os.ReadDir(h.stageDir)
	if err != nil && !os.IsNotExist(err) {
		h.t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// A file is staged 0600 in a 0700 directory under a generated name that
// keeps only a sanitized extension, Messages reads exactly the bytes sent,
// and the file is gone when the command ends. (A name with a path in it,
// "../../etc/passwd.png", is refused: TestTrickNamesRefused.)
func TestAttachmentStagedAndCleaned(t *testing.T) {
	h := newHarness(t, nil, nil)
	for _, name := range []string{"pass wd.PNG", "photo", "x.$(id)", `evil"name.png`} {
		t.Run(name, func(t *testing.T) {
			before := len(h.records())
			snap, err := h.exec(fileTo(chatOne, dataFile(pngBytes, name)))
			if err != nil {
				t.Fatal(err)
			}
			if !snap.GetSent() || snap.GetMessageGuid() == "" {
				t.Fatalf("snapshot %v", snap)
			}
			recs := h.records()[before:]
			if len(recs) != 1 {
				t.Fatalf("runs %d", len(recs))
			}
			r := recs[0]
			if r.Script != scriptFileToChat || r.Argv[1] != chatOne {
				t.Fatalf("run %+v", r)
			}
			path := r.Argv[0]
			if filepath.Dir(path) != h.stageDir {
				t.Fatalf("staged at %s, not in %s", path, h.stageDir)
			}
			base := filepath.Base(path)
			if !stagedNameRE.MatchString(base) || !strings.HasSuffix(base, ".png") {
				t.Fatalf("staged name %q", base)
			}
			sum := sha256.Sum256(pngBytes)
			if r.FileSHA256 != hex.EncodeToString(sum[:]) || r.FileMode != "-rw-------" {
				t.Fatalf("Messages saw sha %s mode %s err %s", r.FileSHA256, r.FileMode, r.FileErr)
			}
			if strings.Contains(r.Script, path) {
				t.Fatal("path in script source")
			}
			fi, err := os.Stat(h.stageDir)
			if err != nil || fi.Mode().Perm() != 0o700 {
				t.Fatalf("stage dir mode %v, %v", fi.Mode(), err)
			}
			if left := h.stagedFiles(); len(left) != 0 {
				t.Fatalf("staged files left: %v", left)
			}
		})
	}
}

// A failed send cleans up too.
func TestAttachmentCleanedOnFailure(t *testing.T) {
	h := newHarness(t, []string{"FAKEOSA_FAIL=-1728"}, nil)
	_, err := h.exec(fileTo(chatOne, dataFile(pngBytes, "a.png")))
	wantCode(t, err, linev1.ErrorCode_ERROR_CODE_NOT_FOUND)
	if len(h.records()) != 1 {
		t.Fatal("osascript did not run")
	}
	if left := h.stagedFiles(); len(left) != 0 {
		t.Fatalf("staged files left: %v", left)
	}
}

// Attachment sends to a participant work the same way.
func TestAttachmentToParticipant(t *testing.T) {
	h := newHarness(t, nil, nil)
	cmd := fileTo("", dataFile([]byte("%PDF-1.7 hello"), "doc.pdf"))
	cmd.Target = &linev1.Command_Participants{Participants: &linev1.Participants{Handles: []string{"friend@example.com"}}}
	snap, err := h.exec(cmd)
	if err != nil {
		t.Fatal(err)
	}
	if snap.GetChatGuid() != "any;-;friend@example.com" {
		t.Fatalf("snapshot %v", snap)
	}
	if r := h.records()[0]; r.Script != scriptFileToParticipant || !strings.HasSuffix(r.Argv[0], ".pdf") {
		t.Fatalf("run %+v", r)
	}
}

func zipOf(t *testing.T, files map[string]os.FileMode) []byte {
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

// Executables are refused by content, by extension and inside zips; nothing
// is staged and nothing runs.
func TestForbiddenAttachments(t *testing.T) {
	h := newHarness(t, nil, func(o *Options) { o.MaxAttachmentBytes = 1 << 20 })
	cases := map[string]*linev1.SendAttachment{
		"elf":        dataFile(append([]byte("\x7fELF\x02\x01\x01"), make([]byte, 64)...), "picture.jpg"),
		"macho":      dataFile(append([]byte{0xcf, 0xfa, 0xed, 0xfe}, make([]byte, 64)...), "picture.jpg"),
		"fat":        dataFile(append([]byte{0xca, 0xfe, 0xba, 0xbe}, make([]byte, 64)...), ""),
		"shebang":    dataFile([]byte("#!/bin/sh\nid\n"), "notes.txt"),
		"pe":         dataFile(append([]byte("MZ\x90\x00"), make([]byte, 64)...), "x.png"),
		"scpt":       dataFile([]byte("FasdUAS 1.101.10"), "x"),
		"ext-exe":    dataFile([]byte("plain"), "setup.EXE"),
		"ext-cmd":    dataFile([]byte("plain"), "run.command"),
		"ext-pkg":    dataFile([]byte("plain"), "install.pkg"),
		"ext-webloc": dataFile([]byte("plain"), "link.webloc"),
		"zip-app":    dataFile(zipOf(t, map[string]os.FileMode{"Evil.app/Contents/Info.plist": 0o644}), "bundle.zip"),
		"zip-exec":   dataFile(zipOf(t, map[string]os.FileMode{"tool": 0o755}), "bundle.zip"),
		"empty":      dataFile(nil, "a.png"),
		"over-cap":   dataFile(append(pngBytes[:8:8], make([]byte, 1<<20)...), "big.png"),
		"no-source":  {FileName: "a.png"},
		"file-url":   urlFile("file:///etc/passwd"),
		"http-url":   urlFile("http://127.0.0.1:1/a.png"),
		"cred-url":   urlFile("https://user:pass@127.0.0.1:1/a.png"),
		"path-url":   urlFile("/etc/passwd"),
	}
	for name, sa := range cases {
		_, err := h.exec(fileTo(chatOne, sa))
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		wantCode(t, err, linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT)
	}
	if n := len(h.records()); n != 0 {
		t.Fatalf("osascript ran %d times", n)
	}
	if left := h.stagedFiles(); len(left) != 0 {
		t.Fatalf("staged: %v", left)
	}
	// A harmless zip is fine.
	if _, err := h.exec(fileTo(chatOne, dataFile(zipOf(t, map[string]os.FileMode{"a/readme.txt": 0o644}), "docs.zip"))); err != nil {
		t.Fatalf("plain zip: %v", err)
	}
}

// URL attachments: fetched over TLS from a local test server; every bad case
// is a typed error and nothing is sent.
func TestURLAttachments(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/ok.png", func(w http.ResponseWriter, r *http.Request) { w.Write(pngBytes) })
	mux.HandleFunc("/missing", http.NotFound)
	mux.HandleFunc("/huge", func(w http.ResponseWriter, r *http.Request) {
		// No Content-Length: the cap must hold while streaming.
		w.Write(pngBytes[:8])
		chunk := make([]byte, 32<<10)
		for i := 0; i < 1000 && r.Context().Err() == nil; i++ {
			if _, err := w.Write(chunk); err != nil {
				return
			}
			w.(http.Flusher).Flush()
		}
	})
	mux.HandleFunc("/declared-huge", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(10<<20))
		w.Write(pngBytes)
	})
	mux.HandleFunc("/trickle", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/png")
		w.Write(pngBytes[:8])
		for i := 0; i < 600; i++ { // at most a minute; the client gives up long before
			select {
			case <-r.Context().Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			w.Write([]byte{0})
			w.(http.Flusher).Flush()
		}
	})
	mux.HandleFunc("/to-http", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://127.0.0.1:1/ok.png", http.StatusFound)
	})
	mux.HandleFunc("/to-https", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/ok.png", http.StatusFound)
	})
	srv := httptest.NewTLSServer(mux)
	defer srv.Close()

	h := newHarness(t, nil, func(o *Options) {
		o.HTTPClient = srv.Client()
		o.AllowLoopbackForTests = true // the server is on 127.0.0.1
		o.MaxAttachmentBytes = 256 << 10
		o.FetchTimeout = 800 * time.Millisecond
	})

	snap, err := h.exec(fileTo(chatOne, urlFile(srv.URL+"/ok.png")))
	if err != nil {
		t.Fatalf("ok: %v", err)
	}
	if !snap.GetSent() {
		t.Fatalf("snapshot %v", snap)
	}
	if _, err := h.exec(fileTo(chatOne, urlFile(srv.URL+"/to-https"))); err != nil {
		t.Fatalf("https redirect: %v", err)
	}
	good := len(h.records())
	if good != 2 || !strings.HasSuffix(h.records()[0].Argv[0], ".png") {
		t.Fatalf("runs %+v", h.records())
	}

	for _, c := range []struct {
		path, inMsg string
	}{
		{"/missing", "404"},
		{"/huge", "limit"},
		{"/declared-huge", "limit"},
		{"/trickle", "did not finish"},
		{"/to-http", "non-HTTPS"},
	} {
		t.Run(c.path, func(t *testing.T) {
			start := time.Now()
			_, err := h.exec(fileTo(chatOne, urlFile(srv.URL+c.path)))
			me := wantCode(t, err, linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT)
			if !strings.Contains(me.Error(), c.inMsg) {
				t.Fatalf("error %q lacks %q", me.Error(), c.inMsg)
			}
			if strings.Contains(me.Error(), c.path) {
				t.Fatalf("error %q leaks the URL path", me.Error())
			}
			if el := time.Since(start); el > 10*time.Second {
				t.Fatalf("took %s", el)
			}
		})
	}
	if n := len(h.records()); n != good {
		t.Fatalf("osascript ran for a bad URL: %d runs", n)
	}
	if left := h.stagedFiles(); len(left) != 0 {
		t.Fatalf("staged: %v", left)
	}
}

func TestSanitizeExt(t *testing.T) {
	for in, want := range map[string]string{
		"a.PNG": "png", "dir/x.jpeg": "jpeg", `c:\x\y.gif`: "gif", "noext": "", "x.$(id)": "",
		"x.verylongextension": "", ".bashrc": "bashrc", "x.tar.gz": "gz", "x.p ng": "", "x.pñg": "",
	} {
		if got := sanitizeExt(in); got != want {
			t.Errorf("sanitizeExt(%q) = %q, want %q", in, got, want)
		}
	}
}

// Names that once slipped past the extension check (issue 8 item 6) are
// refused through this door too, by the rule the spool's stager uses
// (spool.Admit), as are programs in every Mach-O form and scripts whatever
// their name; osascript never runs and nothing is staged.
func TestTrickNamesRefused(t *testing.T) {
	h := newHarness(t, nil, nil)
	for _, name := range []string{
		"run.command/", "run.sh\u0000", "run.sh\\", "tool.app\n", "run.sh\r", "../../etc/passwd.png",
		`..\x.png`, "photo\u202egnp.sh", "run.sh.", "RUN.SH", "x.pkg",
	} {
		_, err := h.exec(fileTo(chatOne, dataFile([]byte("echo hi\n"), name)))
		if err == nil {
			t.Errorf("%q: sent", name)
			continue
		}
		wantCode(t, err, linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT)
	}
	for what, head := range map[string][]byte{
		"MH_MAGIC": {0xfe, 0xed, 0xfa, 0xce}, "MH_CIGAM": {0xce, 0xfa, 0xed, 0xfe},
		"MH_MAGIC_64": {0xfe, 0xed, 0xfa, 0xcf}, "MH_CIGAM_64": {0xcf, 0xfa, 0xed, 0xfe},
		"FAT_MAGIC": {0xca, 0xfe, 0xba, 0xbe}, "FAT_CIGAM": {0xbe, 0xba, 0xfe, 0xca},
		"FAT_MAGIC_64": {0xca, 0xfe, 0xba, 0xbf}, "FAT_CIGAM_64": {0xbf, 0xba, 0xfe, 0xca},
		"shebang": []byte("#!/bin/zsh\n"),
	} {
		_, err := h.exec(fileTo(chatOne, dataFile(append(head, make([]byte, 64)...), "photo.jpg")))
		if err == nil {
			t.Errorf("%s: sent", what)
			continue
		}
		wantCode(t, err, linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT)
	}
	// A declared type that is a script's is refused; one that names a
	// picture gives a name without extension the picture's.
	if _, err := h.exec(fileTo(chatOne, &linev1.SendAttachment{Source: &linev1.SendAttachment_Data{Data: []byte("echo")}, MimeType: "application/x-sh"})); err == nil {
		t.Error("a declared shell script was sent")
	}
	if n := len(h.records()); n != 0 {
		t.Fatalf("osascript ran %d times", n)
	}
	if left := h.stagedFiles(); len(left) != 0 {
		t.Fatalf("staged: %v", left)
	}
	if _, err := h.exec(fileTo(chatOne, &linev1.SendAttachment{Source: &linev1.SendAttachment_Data{Data: pngBytes}, FileName: "photo", MimeType: "image/png"})); err != nil {
		t.Fatal(err)
	}
	if r := h.records()[0]; !strings.HasSuffix(r.Argv[0], ".png") {
		t.Fatalf("staged as %s", r.Argv[0])
	}
}

// Without the test-only allowance an attachment URL on loopback is refused
// before any connection; no error about a URL repeats its path or query.
func TestURLAttachmentGuardAndSecrets(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		http.NotFound(w, r)
	}))
	defer srv.Close()
	const secret = "/SECRETPATHSEG/cat.png?sig=SECRETSIG123"
	leaks := func(t *testing.T, err error) {
		t.Helper()
		me := wantCode(t, err, linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT)
		for _, s := range []string{me.Error(), me.Proto().GetMessage(), me.LastState} {
			if strings.Contains(s, "SECRET") || strings.Contains(s, "sig=") {
				t.Errorf("error %q repeats the url", s)
			}
		}
	}

	h := newHarness(t, nil, func(o *Options) { o.HTTPClient = srv.Client() })
	_, err := h.exec(fileTo(chatOne, urlFile(srv.URL+secret)))
	leaks(t, err)
	if me := wantCode(t, err, linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT); !strings.Contains(me.Error(), "loopback") {
		t.Errorf("error %q", me.Error())
	}
	if hits.Load() != 0 {
		t.Fatal("the loopback server was contacted")
	}
	for _, raw := range []string{"http://127.0.0.1" + secret, "https://user:pw@127.0.0.1" + secret, "https://[::1]" + secret} {
		_, err := h.exec(fileTo(chatOne, urlFile(raw)))
		leaks(t, err)
	}

	h = newHarness(t, nil, func(o *Options) { o.HTTPClient = srv.Client(); o.AllowLoopbackForTests = true })
	_, err = h.exec(fileTo(chatOne, urlFile(srv.URL+secret)))
	leaks(t, err)
	if hits.Load() != 1 {
		t.Fatalf("%d hits with the allowance", hits.Load())
	}
	if len(h.records()) != 0 {
		t.Fatal("osascript ran")
	}
}
