package installer

import (
	"bytes"
	"encoding/xml"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/line-agent/line-agent/installer/fakelaunchctl"
)

// The package build (packaging/macos) runs only on a Mac; these tests check
// what Linux can: the scripts parse and are executable, make pkg fails
// plainly here, the postinstall does what it says, the distribution is
// well-formed.

const pkgDir = "../packaging/macos"

func TestPackageScriptsAreExecutableAndParse(t *testing.T) {
	for _, s := range []struct{ path, shell string }{
		{"build-pkg.sh", "bash"},
		{"scripts/postinstall", "sh"},
	} {
		p := filepath.Join(pkgDir, s.path)
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o111 != 0o111 {
			t.Errorf("%s has mode %v: pkgbuild needs scripts executable", p, fi.Mode())
		}
		if out, err := exec.Command(s.shell, "-n", p).CombinedOutput(); err != nil {
			t.Errorf("%s -n %s: %v\n%s", s.shell, p, err, out)
		}
		// shellcheck where it is installed; CI does not depend on it.
		if sc, err := exec.LookPath("shellcheck"); err == nil {
			if out, err := exec.Command(sc, p).CombinedOutput(); err != nil {
				t.Errorf("shellcheck %s: %v\n%s", p, err, out)
			}
		}
	}
}

func TestMakePkgSaysItNeedsMacOS(t *testing.T) {
	if runtime.GOOS == "darwin" {
		t.Skip("on a Mac the script builds the package")
	}
	out := t.TempDir()
	cmd := exec.Command("bash", filepath.Join(pkgDir, "build-pkg.sh"))
	cmd.Env = append(os.Environ(), "OUT_DIR="+out)
	b, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("build-pkg.sh on %s: %v, want exit 1\n%s", runtime.GOOS, err, b)
	}
	if !strings.Contains(string(b), "make pkg needs macOS: pkgbuild not found") {
		t.Fatalf("output does not say it needs macOS:\n%s", b)
	}
	if entries, _ := os.ReadDir(out); len(entries) != 0 {
		t.Fatalf("it wrote %v before refusing", entries)
	}
}

// postinstall runs the package's postinstall as the Installer would (its
// three arguments), with the console user and launchctl replaced.
func postinstall(t *testing.T, fake *fakelaunchctl.Fake, user string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(pkgDir, "scripts", "postinstall"), "/tmp/line-agent.pkg", "/usr/local/bin", "/")
	cmd.Env = append(os.Environ(), "POSTINSTALL_LAUNCHCTL="+fake.Path, "POSTINSTALL_CONSOLE_USER="+user)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("postinstall failed (it must never fail the install): %v\n%s", err, out)
	}
	return string(out)
}

func TestPostinstallRestartsOnlyALoadedJob(t *testing.T) {
	uidOut, err := exec.Command("id", "-u", "nobody").Output()
	if err != nil {
		t.Skip("no user nobody to stand for the console user")
	}
	svc := "gui/" + strings.TrimSpace(string(uidOut)) + "/" + Label

	// First install: nothing loaded, nothing started, the next steps said.
	fake := fakelaunchctl.New(t)
	out := postinstall(t, fake, "nobody")
	if got := fake.Calls(t); !reflect.DeepEqual(got, [][]string{{"print", svc}}) {
		t.Fatalf("first install ran %q", got)
	}
	if !strings.Contains(out, "line-agent enroll") || !strings.Contains(out, "line-agent install") {
		t.Fatalf("first install output: %s", out)
	}

	// Upgrade: the loaded job is restarted on the new binary.
	fake = fakelaunchctl.New(t)
	fake.SetLoaded(t)
	out = postinstall(t, fake, "nobody")
	if got := fake.Calls(t); !reflect.DeepEqual(got, [][]string{{"print", svc}, {"kickstart", "-k", svc}}) {
		t.Fatalf("upgrade ran %q", got)
	}
	if !strings.Contains(out, "restarted") {
		t.Fatalf("upgrade output: %s", out)
	}

	// No one logged in: launchctl is not touched.
	fake = fakelaunchctl.New(t)
	fake.SetLoaded(t)
	postinstall(t, fake, "loginwindow")
	if got := fake.Calls(t); got != nil {
		t.Fatalf("with no one logged in it ran %q", got)
	}
}

func TestDistributionIsWellFormed(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(pkgDir, "distribution.xml"))
	if err != nil {
		t.Fatal(err)
	}
	var dist struct {
		XMLName xml.Name `xml:"installer-gui-script"`
		Options struct {
			Arch string `xml:"hostArchitectures,attr"`
		} `xml:"options"`
		Welcome struct {
			File string `xml:"file,attr"`
		} `xml:"welcome"`
		Conclusion struct {
			File string `xml:"file,attr"`
		} `xml:"conclusion"`
		PkgRefs []struct {
			ID      string `xml:"id,attr"`
			Version string `xml:"version,attr"`
			Path    string `xml:",chardata"`
		} `xml:"pkg-ref"`
	}
	d := xml.NewDecoder(bytes.NewReader(b))
	d.Strict = true
	if err := d.Decode(&dist); err != nil {
		t.Fatal(err)
	}
	if dist.Options.Arch != "arm64,x86_64" {
		t.Errorf("hostArchitectures %q: the binary is universal", dist.Options.Arch)
	}
	if len(dist.PkgRefs) != 1 || dist.PkgRefs[0].ID != Label || dist.PkgRefs[0].Version != "@VERSION@" || dist.PkgRefs[0].Path != "line-agent-component.pkg" {
		t.Errorf("pkg-ref %+v: want %s, version @VERSION@ (build-pkg.sh fills it), line-agent-component.pkg", dist.PkgRefs, Label)
	}
	for _, f := range []string{dist.Welcome.File, dist.Conclusion.File} {
		if _, err := os.Stat(filepath.Join(pkgDir, "resources", f)); f == "" || err != nil {
			t.Errorf("resource %q: %v", f, err)
		}
	}
	script, _ := os.ReadFile(filepath.Join(pkgDir, "build-pkg.sh"))
	for _, want := range []string{"line-agent-component.pkg", "--identifier dev.line-agent.agent", "--install-location /usr/local/bin"} {
		if !bytes.Contains(script, []byte(want)) {
			t.Errorf("build-pkg.sh lacks %q, which the distribution relies on", want)
		}
	}
}
