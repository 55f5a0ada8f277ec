package imessagev1_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bufbuild/protocompile"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// The published protos we must match: the package spectrum-ts 12.8.0
// resolves (photon-api-facts.md, "Versions observed"), and the npm integrity
// of its tarball, so that a registry mirror serving anything else fails
// instead of comparing against it.
const (
	publishedPackage   = "@photon-ai/advanced-imessage@2.2.0"
	publishedIntegrity = "sha512-WpRU/dAfPwZo6OZAwdKJ6YTmrJZAbhAVlO2skRucMmgyGHrhpyHt3p7ZJKvlkT900Fx7bFMN1VxheuV+jNh2KQ=="
	// publishedProtoDir is where the .proto files sit in the tarball; it is
	// the import root (they import "photon/imessage/v1/..." and
	// "google/api/...").
	publishedProtoDir = "package/proto"
)

// services are the services line-relay serves; all must be declared here and
// published there.
var services = []protoreflect.FullName{
	pkg + ".MessageService",
	pkg + ".ChatService",
	pkg + ".GroupService",
	pkg + ".PollService",
	pkg + ".AttachmentService",
	pkg + ".EventService",
}

// TestPublishedCompat fetches the SDK's published protos from npm, compiles
// them, and compares every service, method, message, field and enum value we
// declare with theirs (compareAPI). It skips only when npm is missing or the
// registry cannot be reached outside CI; with CI=true both fail.
func TestPublishedCompat(t *testing.T) {
	root := fetchPublished(t)
	published := declarations(compilePublished(t, root))
	ours := declarations(ourFiles())

	var diffs []string
	for _, s := range services {
		if _, ok := ours[s]; !ok {
			diffs = append(diffs, fmt.Sprintf("%s: not declared here", s))
		}
		if _, ok := published[s]; !ok {
			diffs = append(diffs, fmt.Sprintf("%s: not in the published protos", s))
		}
	}
	diffs = append(diffs, compareAPI(ours, published)...)
	if len(diffs) > 0 {
		t.Fatalf("%d differences between proto/photon/imessage/v1 and %s (ours first, then published):\n%s",
			len(diffs), publishedPackage, strings.Join(diffs, "\n"))
	}

	var fields, values, methods int
	for _, d := range ours {
		switch d := d.(type) {
		case protoreflect.MessageDescriptor:
			fields += d.Fields().Len()
		case protoreflect.EnumDescriptor:
			values += d.Values().Len()
		case protoreflect.ServiceDescriptor:
			methods += d.Methods().Len()
		}
	}
	var left []string
	for _, n := range published.names() {
		if _, ok := ours[n]; !ok {
			left = append(left, string(n.Name()))
		}
	}
	t.Logf("%s matches: %d declarations (%d methods, %d fields, %d enum values)", publishedPackage, len(ours), methods, fields, values)
	t.Logf("published but not declared here (%d): %s", len(left), strings.Join(left, " "))
}

// fetchPublished runs npm pack for publishedPackage in a temporary directory,
// checks the tarball's integrity, and unpacks its .proto files there. It
// returns the import root. Nothing is kept: npm's cache is pointed into the
// same temporary directory.
func fetchPublished(t *testing.T) string {
	t.Helper()
	ci, _ := strconv.ParseBool(os.Getenv("CI"))
	unavailable := func(format string, args ...any) {
		t.Helper()
		msg := fmt.Sprintf(format, args...)
		if ci {
			t.Fatalf("%s (CI is set, so this fails instead of skipping)", msg)
		}
		t.Skipf("skipping the comparison with the published protos: %s", msg)
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		unavailable("npm is not on PATH (it fetches %s)", publishedPackage)
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "pack", "--json", "--ignore-scripts", publishedPackage)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"npm_config_cache="+filepath.Join(dir, "npm-cache"),
		"npm_config_update_notifier=false",
		"npm_config_fund=false",
		"npm_config_audit=false",
		// One quick retry: an unreachable registry should skip (or fail in
		// CI) within seconds, not after npm's minute of backoff.
		"npm_config_fetch_retries=1",
		"npm_config_fetch_retry_maxtimeout=10000",
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		unavailable("npm pack %s failed: %v\n%s", publishedPackage, err, strings.TrimSpace(stderr.String()))
	}
	var packed []struct {
		Filename string `json:"filename"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &packed); err != nil || len(packed) != 1 || packed[0].Filename == "" {
		t.Fatalf("npm pack --json printed something other than one packed file (%v):\n%s", err, stdout.String())
	}
	tgz, err := os.ReadFile(filepath.Join(dir, filepath.Base(packed[0].Filename)))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha512.Sum512(tgz)
	if got := "sha512-" + base64.StdEncoding.EncodeToString(sum[:]); got != publishedIntegrity {
		t.Fatalf("%s from npm has integrity %s, want %s: not the package the facts were taken from", publishedPackage, got, publishedIntegrity)
	}
	n, err := unpackProtos(tgz, filepath.Join(dir, "unpacked"))
	if err != nil {
		t.Fatalf("unpack %s: %v", packed[0].Filename, err)
	}
	if n == 0 {
		t.Fatalf("%s has no .proto files under %s/", publishedPackage, publishedProtoDir)
	}
	return filepath.Join(dir, "unpacked", publishedProtoDir)
}

// unpackProtos writes the regular .proto files under publishedProtoDir/ of an
// npm tarball into dst, keeping their paths, and returns how many it wrote.
func unpackProtos(tgz []byte, dst string) (int, error) {
	zr, err := gzip.NewReader(bytes.NewReader(tgz))
	if err != nil {
		return 0, err
	}
	tr := tar.NewReader(zr)
	n := 0
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		name := path.Clean(h.Name)
		if h.Typeflag != tar.TypeReg || !strings.HasPrefix(name, publishedProtoDir+"/") || !strings.HasSuffix(name, ".proto") {
			continue
		}
		if !filepath.IsLocal(name) {
			return n, fmt.Errorf("entry %q leaves the directory", h.Name)
		}
		if h.Size > 1<<20 {
			return n, fmt.Errorf("entry %q is %d bytes, too big for a .proto", h.Name, h.Size)
		}
		p := filepath.Join(dst, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return n, err
		}
		data, err := io.ReadAll(io.LimitReader(tr, 1<<20))
		if err != nil {
			return n, err
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			return n, err
		}
		n++
	}
}

// compilePublished parses and links every published file of pkg (with the
// google/api files shipped beside them and protocompile's own copies of the
// well-known google/protobuf files).
func compilePublished(t *testing.T, root string) []protoreflect.FileDescriptor {
	t.Helper()
	pkgDir := filepath.Join(root, filepath.FromSlash(strings.ReplaceAll(string(pkg), ".", "/")))
	paths, err := filepath.Glob(filepath.Join(pkgDir, "*.proto"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no published .proto files in %s (%v)", pkgDir, err)
	}
	var names []string
	for _, p := range paths {
		rel, err := filepath.Rel(root, p)
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, filepath.ToSlash(rel))
	}
	slices.Sort(names)
	c := protocompile.Compiler{
		Resolver: protocompile.WithStandardImports(&protocompile.SourceResolver{ImportPaths: []string{root}}),
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	linked, err := c.Compile(ctx, names...)
	if err != nil {
		t.Fatalf("compile the published protos: %v", err)
	}
	files := make([]protoreflect.FileDescriptor, 0, len(linked))
	for _, f := range linked {
		files = append(files, f)
	}
	return files
}
