package spool

import (
	"bytes"
	"context"
	"encoding/binary"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// ftyp builds an ISO-BMFF file: an ftyp box with major and compatible
// brands, then filler.
func ftyp(major string, compatible ...string) []byte {
	size := 16 + 4*len(compatible)
	b := make([]byte, 0, size+64)
	b = binary.BigEndian.AppendUint32(b, uint32(size))
	b = append(b, "ftyp"+major+"\x00\x00\x00\x00"...)
	for _, c := range compatible {
		b = append(b, c...)
	}
	return append(b, bytes.Repeat([]byte{0x11}, 64)...)
}

var (
	jpegImg = append([]byte{0xff, 0xd8, 0xff, 0xe0, 0, 0x10, 'J', 'F', 'I', 'F', 0}, bytes.Repeat([]byte{0x42}, 256)...)
	pngImg  = append([]byte("\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR"), bytes.Repeat([]byte{0x42}, 256)...)
	heicImg = ftyp("heic", "mif1", "heic")
	heifImg = ftyp("mif1", "mif1", "miaf")
	// A HEIF whose major brand is generic but which says it is HEVC-coded.
	heicByCompat = ftyp("mif1", "mif1", "heix")
	avifImg      = ftyp("avif", "mif1", "miaf", "avif")
	gifImg       = append([]byte("GIF89a\x01\x00\x01\x00"), bytes.Repeat([]byte{0}, 64)...)
	pdfDoc       = []byte("%PDF-1.7\n1 0 obj\n<< /Type /Catalog >>\nendobj\n")
)

var stagedImageRE = regexp.MustCompile(`^background-[0-9a-f]{24}\.(jpg|png|heic|heif)$`)

func newSpool(t *testing.T, client *http.Client) (*Spool, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "spool")
	// The test servers are on 127.0.0.1: loopback is allowed, for tests only.
	return New(Options{Dir: dir, HTTPClient: client, FetchTimeout: 2 * time.Second, AllowLoopbackForTests: true}), dir
}

// leftovers lists what Image left in the spool's image folder.
func leftovers(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, ImagesSubdir))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func checkStaged(t *testing.T, dir string, img *StagedImage, cleanup func(), want []byte, format string) {
	t.Helper()
	if img.Format != format || img.Size != int64(len(want)) {
		t.Fatalf("staged %+v, want format %s size %d", img, format, len(want))
	}
	if filepath.Dir(img.Path) != filepath.Join(dir, ImagesSubdir) || !stagedImageRE.MatchString(filepath.Base(img.Path)) {
		t.Fatalf("staged at %s", img.Path)
	}
	got, err := os.ReadFile(img.Path)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("staged content differs (%v)", err)
	}
	fi, err := os.Stat(img.Path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("file mode %v, %v", fi.Mode(), err)
	}
	for _, d := range []string{dir, filepath.Join(dir, ImagesSubdir)} {
		fi, err := os.Lstat(d)
		if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
			t.Fatalf("%s mode %v, %v", d, fi.Mode(), err)
		}
	}
	cleanup()
	cleanup() // twice is fine
	if _, err := os.Stat(img.Path); !os.IsNotExist(err) {
		t.Fatalf("staged file still there after cleanup: %v", err)
	}
}

// Every accepted format, from bytes and from a URL, with and without an
// agreeing declared type.
func TestImageAccepted(t *testing.T) {
	images := map[string]struct {
		data   []byte
		format string
		mimes  []string
	}{
		"jpeg":          {jpegImg, FormatJPEG, []string{"", "image/jpeg", "IMAGE/JPEG", "image/jpg"}},
		"png":           {pngImg, FormatPNG, []string{"", "image/png", "image/png; name=x.png"}},
		"heic":          {heicImg, FormatHEIC, []string{"", "image/heic", "image/heif"}},
		"heic-compat":   {heicByCompat, FormatHEIC, []string{"", "image/heic"}},
		"heif":          {heifImg, FormatHEIF, []string{"", "image/heif"}},
		"heic-hevc":     {ftyp("hevc", "msf1"), FormatHEIC, []string{""}},
		"heif-msf1":     {ftyp("msf1", "iso8"), FormatHEIF, []string{""}},
		"heif-by-brand": {ftyp("heif"), FormatHEIF, []string{""}},
	}
	routes := map[string]http.HandlerFunc{}
	for name, im := range images {
		routes["/"+name] = func(w http.ResponseWriter, r *http.Request) { w.Write(im.data) }
	}
	srv := newTLSServer(t, routes)
	sp, dir := newSpool(t, srv.Client())
	for name, im := range images {
		for _, mt := range im.mimes {
			t.Run(name+"/bytes/"+mt, func(t *testing.T) {
				img, cleanup, err := sp.Image(context.Background(), ImageSource{Data: im.data, MimeType: mt}, ImageLimits{})
				if err != nil {
					t.Fatal(err)
				}
				checkStaged(t, dir, img, cleanup, im.data, im.format)
			})
			t.Run(name+"/url/"+mt, func(t *testing.T) {
				img, cleanup, err := sp.Image(context.Background(), ImageSource{URL: srv.url("/" + name), MimeType: mt}, ImageLimits{})
				if err != nil {
					t.Fatal(err)
				}
				checkStaged(t, dir, img, cleanup, im.data, im.format)
			})
		}
	}
	if left := leftovers(t, dir); len(left) != 0 {
		t.Fatalf("left behind: %v", left)
	}
}

// Everything else is INVALID_ARGUMENT, says why, and stages nothing.
func TestImageRefused(t *testing.T) {
	var endlessSent atomic.Int64
	srv := newTLSServer(t, map[string]http.HandlerFunc{
		"/gif": func(w http.ResponseWriter, r *http.Request) { w.Write(gifImg) },
		"/endless": func(w http.ResponseWriter, r *http.Request) {
			w.Write(pngImg)
			chunk := make([]byte, 16<<10)
			for endlessSent.Load() < 1<<30 {
				n, err := w.Write(chunk)
				endlessSent.Add(int64(n))
				if err != nil {
					return
				}
			}
		},
		"/missing": http.NotFound,
	})
	sp, dir := newSpool(t, srv.Client())
	small := ImageLimits{MaxBytes: 1024}
	cases := []struct {
		name string
		src  ImageSource
		lim  ImageLimits
		want string
	}{
		{"garbage", ImageSource{Data: []byte("definitely not an image, just words")}, small, "text/plain; accepted formats are JPEG, PNG, HEIC and HEIF"},
		{"random", ImageSource{Data: []byte{0x00, 0x01, 0x02, 0x03, 0xfe}}, small, "not a recognised format"},
		{"short png signature", ImageSource{Data: []byte("\x89PNG\r\n")}, small, "accepted formats"},
		{"jpeg prefix only", ImageSource{Data: []byte{0xff, 0xd8}}, small, "accepted formats"},
		{"gif", ImageSource{Data: gifImg}, small, "image/gif; accepted formats are JPEG, PNG, HEIC and HEIF"},
		{"gif url", ImageSource{URL: srv.url("/gif")}, small, "image/gif"},
		{"pdf", ImageSource{Data: pdfDoc, MimeType: "image/png"}, small, "application/pdf; accepted formats"},
		{"avif", ImageSource{Data: avifImg}, small, "AVIF"},
		{"mp4", ImageSource{Data: ftyp("isom", "iso2", "mp41")}, small, "brand \"isom\""},
		{"ftyp box too short", ImageSource{Data: append([]byte{0, 0, 0, 8}, "ftypheic"...)}, small, "accepted formats"},
		{"ftyp box past the end", ImageSource{Data: append([]byte{0, 0, 1, 0}, "ftypheic\x00\x00\x00\x00mif1"...)}, small, "accepted formats"},
		{"png declared jpeg", ImageSource{Data: pngImg, MimeType: "image/jpeg"}, small, "declared image/jpeg but the content is PNG"},
		{"jpeg declared png", ImageSource{Data: jpegImg, MimeType: "image/png"}, small, "declared image/png but the content is JPEG"},
		{"heif declared heic", ImageSource{Data: heifImg, MimeType: "image/heic"}, small, "declared image/heic but the content is HEIF"},
		{"png declared gif", ImageSource{Data: pngImg, MimeType: "image/gif"}, small, "declared image/gif but the content is PNG"},
		{"png declared octet-stream", ImageSource{Data: pngImg, MimeType: "application/octet-stream"}, small, "but the content is PNG"},
		{"unparsable type", ImageSource{Data: pngImg, MimeType: "image/png; ;;=="}, small, "does not parse"},
		{"over the cap", ImageSource{Data: append(bytes.Clone(pngImg), make([]byte, 1024)...)}, small, "over the 1024-byte limit"},
		{"over the default cap", ImageSource{Data: append(bytes.Clone(pngImg), make([]byte, DefaultMaxImageBytes)...)}, ImageLimits{}, "over the 10485760-byte limit"},
		{"over the cap streaming", ImageSource{URL: srv.url("/endless")}, small, "over the 1024-byte limit"},
		{"empty", ImageSource{}, small, "empty"},
		{"empty data", ImageSource{Data: []byte{}, MimeType: "image/png"}, small, "empty"},
		{"both", ImageSource{Data: pngImg, URL: srv.url("/gif")}, small, "both"},
		{"http url", ImageSource{URL: "http://127.0.0.1/x.png"}, small, "https"},
		{"404", ImageSource{URL: srv.url("/missing")}, small, "HTTP 404"},
		{"file url", ImageSource{URL: "file:///etc/hosts"}, small, "https"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			bounded(t, 5*time.Second, func() {
				img, cleanup, err := sp.Image(context.Background(), c.src, c.lim)
				if img != nil || cleanup != nil {
					t.Fatalf("accepted: %+v", img)
				}
				me := wantCode(t, err, linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT)
				if !strings.Contains(me.Error(), c.want) {
					t.Fatalf("error %q lacks %q", me.Error(), c.want)
				}
				noSecret(t, err)
			})
		})
	}
	if n := endlessSent.Load(); n >= 64<<20 {
		t.Fatalf("the endless server sent %d bytes for a 1 KiB cap", n)
	}
	if left := leftovers(t, dir); len(left) != 0 {
		t.Fatalf("left behind: %v", left)
	}
}

// "clear" is data, never a command or a file name: as bytes it is five
// bytes of no image format; as a URL it is refused without reading the
// file called clear that sits in the working directory.
func TestImageClearIsJustBytes(t *testing.T) {
	wd := t.TempDir()
	t.Chdir(wd)
	if err := os.WriteFile("clear", pngImg, 0o600); err != nil {
		t.Fatal(err)
	}
	sp, dir := newSpool(t, nil)
	for _, src := range []ImageSource{
		{Data: []byte("clear")},
		{Data: []byte("clear"), MimeType: "image/png"},
		{URL: "clear"},
		{URL: "./clear"},
		{URL: "file://" + filepath.Join(wd, "clear")},
	} {
		img, _, err := sp.Image(context.Background(), src, ImageLimits{})
		if img != nil {
			t.Fatalf("%+v accepted as %+v", src, img)
		}
		wantCode(t, err, linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT)
	}
	// PNG bytes with a declared type of "clear" are still checked as a type.
	if _, _, err := sp.Image(context.Background(), ImageSource{Data: pngImg, MimeType: "clear"}, ImageLimits{}); err == nil {
		t.Fatal("declared type \"clear\" accepted")
	}
	if left := leftovers(t, dir); len(left) != 0 {
		t.Fatalf("left behind: %v", left)
	}
}

// The spool folders are narrowed to 0700 even when they existed wider, a
// symlink in place of the image folder is refused, and names are generated.
func TestImageSpoolDir(t *testing.T) {
	sp, dir := newSpool(t, nil)
	if err := os.MkdirAll(filepath.Join(dir, ImagesSubdir), 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	os.Chmod(filepath.Join(dir, ImagesSubdir), 0o755)
	seen := map[string]bool{}
	for range 3 {
		img, cleanup, err := sp.Image(context.Background(), ImageSource{Data: pngImg, MimeType: "image/png"}, ImageLimits{})
		if err != nil {
			t.Fatal(err)
		}
		if seen[img.Path] {
			t.Fatal("a name was reused")
		}
		seen[img.Path] = true
		checkStaged(t, dir, img, cleanup, pngImg, FormatPNG)
	}

	other := t.TempDir()
	sp2, dir2 := newSpool(t, nil)
	if err := os.MkdirAll(dir2, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(other, filepath.Join(dir2, ImagesSubdir)); err != nil {
		t.Fatal(err)
	}
	_, _, err := sp2.Image(context.Background(), ImageSource{Data: pngImg}, ImageLimits{})
	wantCode(t, err, linev1.ErrorCode_ERROR_CODE_INTERNAL)
	if ents, _ := os.ReadDir(other); len(ents) != 0 {
		t.Fatalf("wrote through the symlink: %v", ents)
	}
}

// A cancelled command stages nothing.
func TestImageCancelled(t *testing.T) {
	sp, dir := newSpool(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := sp.Image(ctx, ImageSource{Data: pngImg}, ImageLimits{}); err == nil {
		t.Fatal("staged after cancel")
	}
	if left := leftovers(t, dir); len(left) != 0 {
		t.Fatalf("left behind: %v", left)
	}
}
