package spool

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/line-agent/line-agent/command"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// DefaultMaxImageBytes caps a chat background when ImageLimits says nothing.
const DefaultMaxImageBytes = 10 << 20

// ImagesSubdir is the folder under Options.Dir where Image stages.
const ImagesSubdir = "images"

// Image formats, as StagedImage.Format names them.
const (
	FormatJPEG = "jpeg"
	FormatPNG  = "png"
	FormatHEIC = "heic"
	FormatHEIF = "heif"
)

// acceptedFormats is what errors list.
const acceptedFormats = "JPEG, PNG, HEIC and HEIF"

// ImageSource is a chat background as a command carries it: bytes or an
// HTTPS URL (exactly one), and optionally the declared MIME type. No field
// is ever a local path or a command: Data "clear" is five bytes.
type ImageSource struct {
	Data     []byte
	URL      string
	MimeType string
}

// ImageLimits bound one Image call.
type ImageLimits struct {
	// MaxBytes caps the image, as bytes or fetched (enforced while
	// streaming). Default DefaultMaxImageBytes (10 MB).
	MaxBytes int64
	// FetchTimeout bounds the download. Default the Spool's FetchTimeout.
	FetchTimeout time.Duration
}

// StagedImage is an accepted image written to the spool.
type StagedImage struct {
	// Path is the staged file: Options.Dir/images/background-<random>.<ext>.
	Path string
	// Format is FormatJPEG, FormatPNG, FormatHEIC or FormatHEIF, from the
	// content.
	Format string
	// Size is the file's length in bytes.
	Size int64
}

// Image takes a chat background in: the bytes given, or the URL fetched
// through the Spool's Fetcher under lim; the format sniffed from the content
// (JPEG, PNG, HEIC, HEIF; anything else is refused); the declared MIME type,
// when given, checked against it; then written 0600 under a generated name
// into Options.Dir/images (both folders 0700). cleanup removes the file and
// may be called more than once. Every error is a *command.Error (see
// Fetcher for the fetch's); on error nothing is left behind and cleanup is
// nil.
func (s *Spool) Image(ctx context.Context, src ImageSource, lim ImageLimits) (*StagedImage, func(), error) {
	limit := lim.MaxBytes
	if limit <= 0 {
		limit = DefaultMaxImageBytes
	}
	data := src.Data
	switch {
	case len(src.Data) > 0 && src.URL != "":
		return nil, nil, invalid("the image has both bytes and a url; give one")
	case src.URL != "":
		f := s.fetch
		f.MaxBytes, f.Noun = limit, "the image"
		if lim.FetchTimeout > 0 {
			f.Timeout = lim.FetchTimeout
		}
		var err error
		if data, err = f.Fetch(ctx, src.URL); err != nil {
			return nil, nil, err
		}
	case len(src.Data) == 0:
		return nil, nil, invalid("the image is empty (no bytes and no url)")
	case int64(len(src.Data)) > limit:
		return nil, nil, invalid("the image is %d bytes, over the %d-byte limit", len(src.Data), limit)
	}
	format, err := CheckImage(data, src.MimeType)
	if err != nil {
		return nil, nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, command.AsError(err)
	}
	dir := filepath.Join(s.opts.Dir, ImagesSubdir)
	path, err := writePrivate(s.opts.Dir, dir, "background-", extOf[format], data)
	if err != nil {
		return nil, nil, command.Errorf(linev1.ErrorCode_ERROR_CODE_INTERNAL, "staging the image: %w", err)
	}
	var once sync.Once
	cleanup := func() { once.Do(func() { _ = os.Remove(path) }) }
	return &StagedImage{Path: path, Format: format, Size: int64(len(data))}, cleanup, nil
}

var extOf = map[string]string{FormatJPEG: "jpg", FormatPNG: "png", FormatHEIC: "heic", FormatHEIF: "heif"}

var formatName = map[string]string{FormatJPEG: "JPEG", FormatPNG: "PNG", FormatHEIC: "HEIC", FormatHEIF: "HEIF"}

// declared maps an accepted MIME type to the formats it agrees with. HEIC is
// a kind of HEIF, so image/heif also covers HEIC content; image/heic does
// not cover HEIF that is not HEVC-coded.
var declared = map[string][]string{
	"image/jpeg":  {FormatJPEG},
	"image/jpg":   {FormatJPEG},
	"image/pjpeg": {FormatJPEG},
	"image/png":   {FormatPNG},
	"image/heic":  {FormatHEIC},
	"image/heif":  {FormatHEIF, FormatHEIC},
}

// CheckImage returns the format of data (FormatJPEG...) when it is an
// accepted image whose content agrees with mimeType (ignored when empty),
// or an INVALID_ARGUMENT error saying why not.
func CheckImage(data []byte, mimeType string) (string, error) {
	if len(data) == 0 {
		return "", invalid("the image is empty")
	}
	format := SniffImage(data)
	if format == "" {
		return "", invalid("the image is %s; accepted formats are %s", describe(data), acceptedFormats)
	}
	if strings.TrimSpace(mimeType) == "" {
		return format, nil
	}
	shown := mimeType
	if len(shown) > 64 {
		shown = shown[:64] + "..."
	}
	mt, _, err := mime.ParseMediaType(mimeType)
	if err != nil {
		return "", invalid("the declared type %q does not parse; accepted types are image/jpeg, image/png, image/heic and image/heif", shown)
	}
	for _, f := range declared[mt] {
		if f == format {
			return format, nil
		}
	}
	return "", invalid("declared %s but the content is %s", mt, formatName[format])
}

// SniffImage names the accepted format data is, by content alone, or "".
func SniffImage(data []byte) string {
	switch {
	case bytes.HasPrefix(data, []byte{0xff, 0xd8, 0xff}):
		return FormatJPEG
	case bytes.HasPrefix(data, []byte("\x89PNG\r\n\x1a\n")):
		return FormatPNG
	}
	brands := ftypBrands(data)
	has := func(set ...string) bool {
		for _, b := range brands {
			for _, s := range set {
				if b == s {
					return true
				}
			}
		}
		return false
	}
	switch {
	case len(brands) == 0:
		return ""
	case has("heic", "heix", "hevc", "heim", "heis", "hevm", "hevs"):
		return FormatHEIC
	case has("avif", "avis"):
		// AVIF is a HEIF too (it lists mif1) but not an accepted format.
		return ""
	case has("mif1", "msf1", "heif"):
		return FormatHEIF
	}
	return ""
}

// ftypBrands returns the major and compatible brands of an ISO-BMFF file
// starting with an ftyp box, or nil.
func ftypBrands(data []byte) []string {
	if len(data) < 16 || string(data[4:8]) != "ftyp" {
		return nil
	}
	size := int(binary.BigEndian.Uint32(data[:4]))
	if size < 16 || size > len(data) || size > 4096 {
		return nil
	}
	brands := []string{string(data[8:12])}
	for off := 16; off+4 <= size; off += 4 {
		brands = append(brands, string(data[off:off+4]))
	}
	return brands
}

// describe says what refused content looks like, for the error.
func describe(data []byte) string {
	if b := ftypBrands(data); len(b) > 0 {
		if b[0] == "avif" || b[0] == "avis" {
			return "AVIF"
		}
		return "an ISO media file of brand " + fmt.Sprintf("%q", b[0])
	}
	ct := http.DetectContentType(data)
	if ct == "application/octet-stream" {
		return "not a recognised format"
	}
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	return ct
}

// writePrivate writes data into dir (under root; both created 0700, dir
// refused if it is a symlink or not a directory) as a new 0600 file named
// prefix + random hex + "." + ext, and returns its path.
func writePrivate(root, dir, prefix, ext string, data []byte) (string, error) {
	for _, d := range []string{root, dir} {
		if err := privateDir(d); err != nil {
			return "", err
		}
	}
	var rnd [12]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return "", err
	}
	path := filepath.Join(dir, prefix+hex.EncodeToString(rnd[:])+"."+ext)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", err
	}
	_, werr := f.Write(data)
	if err := errors.Join(werr, f.Close()); err != nil {
		os.Remove(path)
		return "", err
	}
	return path, nil
}

// privateDir creates d 0700, refuses a symlink or a non-directory in its
// place, and narrows an existing directory to 0700.
func privateDir(d string) error {
	if err := os.MkdirAll(d, 0o700); err != nil {
		return err
	}
	fi, err := os.Lstat(d)
	if err != nil {
		return err
	}
	if fi.Mode()&fs.ModeSymlink != 0 || !fi.IsDir() {
		return fmt.Errorf("%s is not a plain directory", d)
	}
	if fi.Mode().Perm() != 0o700 {
		return os.Chmod(d, 0o700)
	}
	return nil
}
