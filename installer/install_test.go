package installer

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/line-agent/line-agent/installer/fakelaunchctl"
)

// fixture is a home with a binary, a fake launchctl and the waits Install
// asked for.
type fixture struct {
	fake    *fakelaunchctl.Fake
	session Session
	agent   LaunchAgent
	waits   []time.Duration
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	home := filepath.Join(t.TempDir(), "home & <dir>")
	bin := filepath.Join(home, "bin dir", "line-agent")
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	f := &fixture{fake: fakelaunchctl.New(t)}
	f.session = Session{
		UID:             501,
		LaunchAgentsDir: filepath.Join(home, "Library", "LaunchAgents"),
		Launchctl:       Launchctl{Path: f.fake.Path},
		Wait: func(_ context.Context, d time.Duration) error {
			f.waits = append(f.waits, d)
			return nil
		},
	}
	f.agent = LaunchAgent{Binary: bin, DataDir: filepath.Join(home, "data"), LogDir: filepath.Join(home, "Library", "Logs", "line-agent")}
	return f
}

func (f *fixture) install(t *testing.T) (InstallResult, error) {
	t.Helper()
	p, err := PlanInstall(f.session, f.agent)
	if err != nil {
		t.Fatal(err)
	}
	return Install(context.Background(), p)
}

func installCalls(s Session) [][]string {
	return [][]string{
		{"bootout", "gui/501/dev.line-agent.agent"},
		{"enable", "gui/501/dev.line-agent.agent"},
		{"bootstrap", "gui/501", s.PlistPath()},
	}
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestInstallWritesPlistAndLoadsIt(t *testing.T) {
	f := newFixture(t)
	res, err := f.install(t)
	if err != nil {
		t.Fatal(err)
	}
	if res.Replaced {
		t.Error("a first install says it replaced a loaded job")
	}
	if got := f.fake.Calls(t); !reflect.DeepEqual(got, installCalls(f.session)) {
		t.Fatalf("launchctl calls\n%q\nwant\n%q", got, installCalls(f.session))
	}
	want, _ := f.agent.Plist()
	got, err := os.ReadFile(f.session.PlistPath())
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("plist file (%v):\n%s\nwant\n%s", err, got, want)
	}
	// The fake copies the file it bootstraps: the plist was complete
	// before bootstrap ran.
	if !bytes.Equal(f.fake.Loaded(t), want) {
		t.Fatalf("launchctl bootstrapped\n%s", f.fake.Loaded(t))
	}
	if m := mode(t, f.session.PlistPath()); m != 0o644 {
		t.Errorf("plist mode %v, want 0644", m)
	}
	if m := mode(t, f.agent.LogDir); m != 0o700 {
		t.Errorf("log dir mode %v, want 0700", m)
	}
	if len(f.waits) != 0 {
		t.Errorf("waited %v with nothing failing", f.waits)
	}
}

func TestInstallTwiceGivesTheSameFileAndReloads(t *testing.T) {
	f := newFixture(t)
	if _, err := f.install(t); err != nil {
		t.Fatal(err)
	}
	first, _ := os.ReadFile(f.session.PlistPath())
	res, err := f.install(t)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Replaced {
		t.Error("the second install did not boot out the loaded job")
	}
	second, _ := os.ReadFile(f.session.PlistPath())
	if !bytes.Equal(first, second) {
		t.Fatalf("reinstall changed the plist:\n%s\n---\n%s", first, second)
	}
	want := append(installCalls(f.session), installCalls(f.session)...)
	if got := f.fake.Calls(t); !reflect.DeepEqual(got, want) {
		t.Fatalf("launchctl calls\n%q\nwant\n%q", got, want)
	}
	if f.fake.Loaded(t) == nil {
		t.Fatal("the job is not loaded after the reinstall")
	}
	// The atomic write leaves no temporary file for launchd to find.
	entries, _ := os.ReadDir(f.session.LaunchAgentsDir)
	if len(entries) != 1 || entries[0].Name() != Label+".plist" {
		t.Fatalf("LaunchAgents holds %v", entries)
	}
}

func TestInstallRetriesABootstrapRightAfterBootout(t *testing.T) {
	f := newFixture(t)
	f.fake.FailBootstrap(t, 2)
	if _, err := f.install(t); err != nil {
		t.Fatal(err)
	}
	calls := f.fake.Calls(t)
	if len(calls) != 5 || calls[2][0] != "bootstrap" || calls[4][0] != "bootstrap" {
		t.Fatalf("launchctl calls %q, want bootout, enable and three bootstraps", calls)
	}
	if !reflect.DeepEqual(f.waits, []time.Duration{time.Second, time.Second}) {
		t.Fatalf("waits %v, want 1s twice", f.waits)
	}
}

func TestInstallFailingBootstrapKeepsThePlistAndSaysSo(t *testing.T) {
	f := newFixture(t)
	f.fake.FailBootstrap(t, 100)
	_, err := f.install(t)
	var le *LoadError
	var lc *LaunchctlError
	if !errors.As(err, &le) || !errors.As(err, &lc) || lc.ExitCode != 5 {
		t.Fatalf("err = %v, want a LoadError around launchctl's exit 5", err)
	}
	for _, want := range []string{"bootstrap", "Input/output error", "tried 3 times", "the plist stays", "next login", "line-agent uninstall"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	if _, serr := os.Stat(f.session.PlistPath()); serr != nil {
		t.Fatalf("the plist is gone after a failed bootstrap: %v", serr)
	}
	if n := len(f.fake.Calls(t)); n != 5 {
		t.Fatalf("%d launchctl calls, want 5 (bootout, enable, 3 bootstraps)", n)
	}
}

func TestInstallStopsWhenBootoutReallyFails(t *testing.T) {
	f := newFixture(t)
	f.fake.FailBootout(t)
	_, err := f.install(t)
	var lc *LaunchctlError
	if !errors.As(err, &lc) || lc.NotLoaded() || lc.Args[0] != "bootout" {
		t.Fatalf("err = %v, want bootout's failure", err)
	}
	if calls := f.fake.Calls(t); len(calls) != 1 {
		t.Fatalf("ran on after a failed bootout: %q", calls)
	}
}

func TestPlanInstallRefusesBadInput(t *testing.T) {
	f := newFixture(t)
	dir := t.TempDir()
	notExec := filepath.Join(dir, "line-agent")
	os.WriteFile(notExec, []byte("x"), 0o644)
	cases := []struct {
		name string
		edit func(*Session, *LaunchAgent)
		want error
	}{
		{"root", func(s *Session, _ *LaunchAgent) { s.UID = 0 }, ErrRoot},
		{"relative binary", func(_ *Session, a *LaunchAgent) { a.Binary = "bin/line-agent" }, ErrRelativePath},
		{"missing binary", func(_ *Session, a *LaunchAgent) { a.Binary = filepath.Join(dir, "nope") }, ErrNotExecutable},
		{"binary without x bit", func(_ *Session, a *LaunchAgent) { a.Binary = notExec }, ErrNotExecutable},
		{"binary is a folder", func(_ *Session, a *LaunchAgent) { a.Binary = dir }, ErrNotExecutable},
		{"relative data dir", func(_ *Session, a *LaunchAgent) { a.DataDir = "data" }, ErrRelativePath},
		{"missing launchctl", func(s *Session, _ *LaunchAgent) { s.Launchctl.Path = filepath.Join(dir, "launchctl") }, ErrNotExecutable},
		{"relative launch agents dir", func(s *Session, _ *LaunchAgent) { s.LaunchAgentsDir = "LaunchAgents" }, ErrRelativePath},
	}
	for _, c := range cases {
		s, a := f.session, f.agent
		c.edit(&s, &a)
		if _, err := PlanInstall(s, a); !errors.Is(err, c.want) {
			t.Errorf("%s: err = %v, want %v", c.name, err, c.want)
		}
	}
	if calls := f.fake.Calls(t); calls != nil {
		t.Fatalf("planning ran launchctl: %q", calls)
	}
}

func TestDescribeShowsExactlyWhatInstallRuns(t *testing.T) {
	f := newFixture(t)
	p, err := PlanInstall(f.session, f.agent)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	p.Describe(&out)
	if _, err := Install(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	for _, call := range f.fake.Calls(t) {
		line := displayQuote(append([]string{f.fake.Path}, call...))
		if !strings.Contains(out.String(), "  "+line) {
			t.Errorf("--print does not show %s:\n%s", line, out.String())
		}
	}
	if !strings.Contains(out.String(), string(p.Plist)) || !strings.Contains(out.String(), "'"+f.session.PlistPath()+"'") {
		t.Errorf("--print lacks the plist or its quoted path:\n%s", out.String())
	}
}

func TestUninstall(t *testing.T) {
	f := newFixture(t)
	if _, err := f.install(t); err != nil {
		t.Fatal(err)
	}
	up, err := PlanUninstall(f.session)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Uninstall(context.Background(), up)
	if err != nil || !res.WasLoaded || !res.HadPlist {
		t.Fatalf("uninstall = %+v, %v; want the job stopped and the plist removed", res, err)
	}
	if _, err := os.Stat(f.session.PlistPath()); !os.IsNotExist(err) {
		t.Fatalf("plist still there: %v", err)
	}
	if f.fake.Loaded(t) != nil {
		t.Fatal("the job is still loaded")
	}
	// Again: nothing is there, which is not an error.
	res, err = Uninstall(context.Background(), up)
	if err != nil || res.WasLoaded || res.HadPlist {
		t.Fatalf("second uninstall = %+v, %v; want nothing found and no error", res, err)
	}
	calls := f.fake.Calls(t)
	want := [][]string{{"bootout", "gui/501/dev.line-agent.agent"}, {"bootout", "gui/501/dev.line-agent.agent"}}
	if !reflect.DeepEqual(calls[3:], want) {
		t.Fatalf("uninstall calls %q, want %q", calls[3:], want)
	}
}

func TestDataDirFromPlist(t *testing.T) {
	f := newFixture(t)
	f.agent.DataDir = "/Users/a b/&<data>"
	if got, err := DataDirFromPlist(f.session.PlistPath()); got != "" || err != nil {
		t.Fatalf("no plist: %q, %v", got, err)
	}
	if _, err := f.install(t); err != nil {
		t.Fatal(err)
	}
	if got, err := DataDirFromPlist(f.session.PlistPath()); got != f.agent.DataDir || err != nil {
		t.Fatalf("DataDirFromPlist = %q, %v; want %q", got, err, f.agent.DataDir)
	}
	os.WriteFile(f.session.PlistPath(), []byte("not a plist <"), 0o644)
	if _, err := DataDirFromPlist(f.session.PlistPath()); err == nil {
		t.Fatal("a damaged plist gave no error")
	}
}

func TestPurgeDeletesOnlyADataDirectory(t *testing.T) {
	t.Setenv("HOME", t.TempDir())
	home, _ := os.UserHomeDir()
	os.WriteFile(filepath.Join(home, "state.db"), nil, 0o600)
	stranger := t.TempDir()
	os.WriteFile(filepath.Join(stranger, "notes.txt"), []byte("keep me"), 0o600)
	for _, dir := range []string{home, stranger} {
		if _, err := Purge(dir); !errors.Is(err, ErrNotDataDir) {
			t.Errorf("Purge(%s) = %v, want ErrNotDataDir", dir, err)
		}
	}
	if _, err := os.Stat(filepath.Join(stranger, "notes.txt")); err != nil {
		t.Fatal("a refused purge deleted a file")
	}
	if _, err := Purge("relative"); !errors.Is(err, ErrRelativePath) {
		t.Errorf("relative: %v", err)
	}
	data := filepath.Join(t.TempDir(), "data")
	os.MkdirAll(filepath.Join(data, "spool"), 0o700)
	os.WriteFile(filepath.Join(data, "credentials.json"), []byte("{}"), 0o600)
	if gone, err := Purge(data); !gone || err != nil {
		t.Fatalf("Purge = %v, %v", gone, err)
	}
	if _, err := os.Stat(data); !os.IsNotExist(err) {
		t.Fatalf("data directory still there: %v", err)
	}
	if gone, err := Purge(data); gone || err != nil {
		t.Fatalf("Purge of nothing = %v, %v; want false, nil", gone, err)
	}
}
