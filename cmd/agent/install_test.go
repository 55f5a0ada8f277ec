package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/line-agent/line-agent/agent"
	"github.com/line-agent/line-agent/installer"
	"github.com/line-agent/line-agent/installer/fakelaunchctl"
)

// installBed is a user's home with an enrolled data directory, a
// line-agent binary reached through a symlink, and a fake launchctl.
type installBed struct {
	home, data, binary, link string
	fake                     *fakelaunchctl.Fake
	proc                     installProcess
}

const testSecret = "agent-secret-never-in-the-plist"

func newInstallBed(t *testing.T) *installBed {
	t.Helper()
	home := filepath.Join(t.TempDir(), "Ann's Mac & <co>")
	t.Setenv("HOME", home)
	t.Setenv("LINE_AGENT_DATA_DIR", "")
	b := &installBed{
		home:   home,
		data:   filepath.Join(home, "Library", "Application Support", "line-agent"),
		binary: filepath.Join(home, "opt", "line-agent"),
		link:   filepath.Join(home, "bin", "line-agent"),
		fake:   fakelaunchctl.New(t),
	}
	for _, d := range []string{b.data, filepath.Dir(b.binary), filepath.Dir(b.link)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(b.binary, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(b.binary, b.link); err != nil {
		t.Fatal(err)
	}
	c := &agent.Credentials{AgentID: "ag_1", AgentSecret: testSecret, AccessToken: "access-" + testSecret, Relay: "relay.example.com:443", ExpiresAt: time.Now().Add(time.Hour)}
	if err := c.Save(b.data); err != nil {
		t.Fatal(err)
	}
	b.proc = installProcess{
		euid: 501, uid: 501,
		executable: func() (string, error) { return b.link, nil },
		wait:       func(context.Context, time.Duration) error { return nil },
	}
	return b
}

func (b *installBed) plistPath() string {
	return filepath.Join(b.home, "Library", "LaunchAgents", "dev.line-agent.agent.plist")
}

func (b *installBed) run(t *testing.T, cmd string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	f := install
	if cmd == "uninstall" {
		f = uninstall
	}
	var o, e bytes.Buffer
	err := f(context.Background(), b.proc, append([]string{"--launchctl", b.fake.Path}, args...), &o, &e)
	if err != nil {
		code = 1
		e.WriteString(err.Error())
	}
	return code, o.String(), e.String()
}

func TestInstallWithDefaultsThenReinstallThenUninstall(t *testing.T) {
	b := newInstallBed(t)
	t.Setenv("LINE_AGENT_TOKEN", "lrp_shell_token")
	t.Setenv("LINE_AGENT_LINES", "+15550000001")
	code, out, errOut := b.run(t, "install")
	if code != 0 {
		t.Fatalf("install exit %d: %s", code, errOut)
	}
	plist, err := os.ReadFile(b.plistPath())
	if err != nil {
		t.Fatal(err)
	}
	want, _ := installer.LaunchAgent{
		Binary:  b.binary, // the symlink resolved
		DataDir: b.data,
		LogDir:  filepath.Join(b.home, "Library", "Logs", "line-agent"),
	}.Plist()
	if !bytes.Equal(plist, want) {
		t.Fatalf("plist with the defaults:\n%s\nwant\n%s", plist, want)
	}
	if strings.Contains(string(plist), testSecret) || strings.Contains(out, "lrp_shell_token") {
		t.Fatal("a secret reached the plist or the output")
	}
	for _, w := range []string{"wrote " + b.plistPath(), "loaded dev.line-agent.agent into gui/501", "launchctl print gui/501/dev.line-agent.agent", "Full Disk Access", "LINE_AGENT_LINES, LINE_AGENT_TOKEN set in this shell"} {
		if !strings.Contains(out, w) {
			t.Errorf("install output lacks %q:\n%s", w, out)
		}
	}
	svc := "gui/501/dev.line-agent.agent"
	once := [][]string{{"bootout", svc}, {"enable", svc}, {"bootstrap", "gui/501", b.plistPath()}}
	if got := b.fake.Calls(t); !reflect.DeepEqual(got, once) {
		t.Fatalf("launchctl calls %q, want %q", got, once)
	}

	// Again: the same file, the job reloaded.
	code, out, errOut = b.run(t, "install")
	if code != 0 || !strings.Contains(out, "stopped the job that was loaded") {
		t.Fatalf("reinstall exit %d: %s%s", code, out, errOut)
	}
	again, _ := os.ReadFile(b.plistPath())
	if !bytes.Equal(again, plist) {
		t.Fatal("reinstalling changed the plist")
	}
	if got := b.fake.Calls(t); !reflect.DeepEqual(got, append(once, once...)) {
		t.Fatalf("launchctl calls after reinstall %q", got)
	}

	// Uninstall keeps the data directory and says so.
	code, out, errOut = b.run(t, "uninstall")
	if code != 0 {
		t.Fatalf("uninstall exit %d: %s", code, errOut)
	}
	for _, w := range []string{"stopped dev.line-agent.agent", "removed " + b.plistPath(), "kept the data directory " + b.data, "--purge"} {
		if !strings.Contains(out, w) {
			t.Errorf("uninstall output lacks %q:\n%s", w, out)
		}
	}
	if _, err := os.Stat(b.plistPath()); !os.IsNotExist(err) {
		t.Fatalf("plist still there: %v", err)
	}
	if _, err := agent.LoadCredentials(b.data); err != nil {
		t.Fatalf("uninstall without --purge lost the credentials: %v", err)
	}
	if b.fake.Loaded(t) != nil {
		t.Fatal("the job is still loaded")
	}

	// Uninstall when nothing is installed: exit 0, and it says so.
	code, out, _ = b.run(t, "uninstall")
	if code != 0 || !strings.Contains(out, "nothing was installed") {
		t.Fatalf("second uninstall exit %d: %s", code, out)
	}
}

func TestUninstallPurgeDeletesTheDataDirectoryThePlistNames(t *testing.T) {
	b := newInstallBed(t)
	other := filepath.Join(b.home, "elsewhere data")
	if err := os.Rename(b.data, other); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := b.run(t, "install", "--data", other); code != 0 {
		t.Fatalf("install: %s", errOut)
	}
	// An unrelated folder where the default would be: it must survive.
	os.MkdirAll(b.data, 0o700)
	os.WriteFile(filepath.Join(b.data, "state.db"), []byte("keep"), 0o600)

	code, out, errOut := b.run(t, "uninstall", "--purge")
	if code != 0 {
		t.Fatalf("uninstall --purge exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, "deleted the data directory "+other) {
		t.Fatalf("output: %s", out)
	}
	if _, err := os.Stat(other); !os.IsNotExist(err) {
		t.Fatalf("the plist's data directory is still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(b.data, "state.db")); err != nil {
		t.Fatalf("purge deleted the default data directory, which the job did not use: %v", err)
	}
	// A folder that is not a data directory is refused.
	stranger := filepath.Join(b.home, "Documents")
	os.MkdirAll(stranger, 0o700)
	if code, _, errOut := b.run(t, "uninstall", "--purge", "--data", stranger); code == 0 || !strings.Contains(errOut, "not a line-agent data directory") {
		t.Fatalf("purge of a stranger: exit %d %s", code, errOut)
	}
}

func TestInstallAndUninstallPrintChangeNothing(t *testing.T) {
	b := newInstallBed(t)
	code, out, errOut := b.run(t, "install", "--print")
	if code != 0 {
		t.Fatalf("install --print exit %d: %s", code, errOut)
	}
	for _, w := range []string{"<key>ProgramArguments</key>", "bootout gui/501/dev.line-agent.agent", "bootstrap gui/501", "nothing was changed"} {
		if !strings.Contains(out, w) {
			t.Errorf("--print output lacks %q:\n%s", w, out)
		}
	}
	for _, d := range []string{filepath.Join(b.home, "Library", "LaunchAgents"), filepath.Join(b.home, "Library", "Logs")} {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("--print created %s", d)
		}
	}
	if calls := b.fake.Calls(t); calls != nil {
		t.Fatalf("--print ran launchctl: %q", calls)
	}

	if code, _, errOut := b.run(t, "install"); code != 0 {
		t.Fatal(errOut)
	}
	before := len(b.fake.Calls(t))
	code, out, _ = b.run(t, "uninstall", "--print", "--purge")
	if code != 0 || !strings.Contains(out, "would delete the data directory "+b.data) {
		t.Fatalf("uninstall --print exit %d: %s", code, out)
	}
	if _, err := os.Stat(b.plistPath()); err != nil {
		t.Fatal("uninstall --print removed the plist")
	}
	if _, err := os.Stat(b.data); err != nil {
		t.Fatal("uninstall --print --purge deleted the data directory")
	}
	if n := len(b.fake.Calls(t)); n != before {
		t.Fatalf("uninstall --print ran launchctl")
	}
}

func TestInstallRefusals(t *testing.T) {
	b := newInstallBed(t)
	notExec := filepath.Join(b.home, "opt", "plain")
	os.WriteFile(notExec, []byte("x"), 0o644)
	empty := t.TempDir()
	cases := []struct {
		name string
		proc func(*installProcess)
		args []string
		want string
	}{
		{"not enrolled", nil, []string{"--data", empty}, "run `line-agent enroll` first"},
		{"root", func(p *installProcess) { p.euid, p.uid = 0, 0 }, nil, "not root's"},
		{"for root's session", nil, []string{"--uid", "0"}, "not root's"},
		{"relative binary", nil, []string{"--binary", "bin/line-agent"}, "paths must be absolute"},
		{"missing binary", nil, []string{"--binary", filepath.Join(b.home, "nope")}, "not an executable file"},
		{"binary without x bit", nil, []string{"--binary", notExec}, "not an executable file"},
		{"relative data dir", nil, []string{"--data", "data"}, "paths must be absolute"},
	}
	for _, c := range cases {
		saved := b.proc
		if c.proc != nil {
			c.proc(&b.proc)
		}
		code, _, errOut := b.run(t, "install", c.args...)
		b.proc = saved
		if code == 0 || !strings.Contains(errOut, c.want) {
			t.Errorf("%s: exit %d, stderr %q; want a refusal saying %q", c.name, code, errOut, c.want)
		}
	}
	if _, err := os.Stat(filepath.Join(b.home, "Library", "LaunchAgents")); !os.IsNotExist(err) {
		t.Error("a refused install created the LaunchAgents folder")
	}
	if calls := b.fake.Calls(t); calls != nil {
		t.Fatalf("a refused install ran launchctl: %q", calls)
	}
	if code, _, errOut := b.run(t, "uninstall", "--uid", "0"); code == 0 || !strings.Contains(errOut, "not root's") {
		t.Errorf("uninstall for root: exit %d %q", code, errOut)
	}
}

func TestInstallFailingBootstrapExitsNonZeroAndKeepsThePlist(t *testing.T) {
	b := newInstallBed(t)
	b.fake.FailBootstrap(t, 100)
	code, _, errOut := b.run(t, "install")
	if code == 0 {
		t.Fatal("install succeeded with launchctl bootstrap failing")
	}
	for _, w := range []string{"Bootstrap failed: 5", "the plist stays", "line-agent uninstall"} {
		if !strings.Contains(errOut, w) {
			t.Errorf("error lacks %q: %s", w, errOut)
		}
	}
	if _, err := os.Stat(b.plistPath()); err != nil {
		t.Fatalf("plist gone: %v", err)
	}
	// And uninstall cleans up after it: nothing loaded, the plist removed.
	code, out, _ := b.run(t, "uninstall")
	if code != 0 || !strings.Contains(out, "removed "+b.plistPath()) || strings.Contains(out, "stopped") {
		t.Fatalf("uninstall after a failed install: exit %d %s", code, out)
	}
}

func TestInstallIsWiredIntoTheCommandLine(t *testing.T) {
	code, _, errOut := run(t, "help")
	if code != 0 || !strings.Contains(errOut, "  install ") || !strings.Contains(errOut, "  uninstall ") {
		t.Fatalf("usage lacks install/uninstall:\n%s", errOut)
	}
	for _, c := range []struct{ cmd, flag string }{{"install", "-launch-agents-dir"}, {"install", "-binary"}, {"uninstall", "-purge"}} {
		if code, _, errOut := run(t, c.cmd, "-h"); code != 0 || !strings.Contains(errOut, c.flag) {
			t.Errorf("%s -h: exit %d, lacks %s:\n%s", c.cmd, code, c.flag, errOut)
		}
	}
	if code, _, _ := run(t, "uninstall", "--no-such-flag"); code != 2 {
		t.Errorf("bad flag exit %d, want 2", code)
	}
}
