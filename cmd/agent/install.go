package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/line-agent/line-agent/agent"
	"github.com/line-agent/line-agent/installer"
)

// installProcess is what install and uninstall take from the process, not
// the command line: who runs them and which binary this is. Tests pass
// their own (they run as root on Linux, which install refuses), and a
// wait that does not sleep.
type installProcess struct {
	// euid refuses root; uid is --uid's default.
	euid, uid int
	// executable is this binary's path (os.Executable).
	executable func() (string, error)
	// wait pauses between bootstrap attempts; nil is a real timer.
	wait func(context.Context, time.Duration) error
}

func thisProcess() installProcess {
	return installProcess{euid: os.Geteuid(), uid: os.Getuid(), executable: os.Executable}
}

func runInstall(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return install(ctx, thisProcess(), args, stdout, stderr)
}

func runUninstall(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return uninstall(ctx, thisProcess(), args, stdout, stderr)
}

// sessionFlags are the flags install and uninstall share: which user's
// session, where its plists live, which launchctl.
type sessionFlags struct {
	data, agentsDir, launchctl *string
	uid                        *int
	print                      *bool
}

func addSessionFlags(fs *flag.FlagSet, p installProcess, dataDefault, home string) sessionFlags {
	return sessionFlags{
		data:      fs.String("data", dataDefault, "the agent's data directory, passed to line-agent run as --data (env LINE_AGENT_DATA_DIR)"),
		agentsDir: fs.String("launch-agents-dir", filepath.Join(home, "Library", "LaunchAgents"), "folder of the user's LaunchAgent plists"),
		launchctl: fs.String("launchctl", "/bin/launchctl", "path of launchctl"),
		uid:       fs.Int("uid", p.uid, "user whose GUI session (gui/UID) the job belongs to"),
		print:     fs.Bool("print", false, "print what would be written and run, and change nothing"),
	}
}

func (f sessionFlags) session(p installProcess) installer.Session {
	return installer.Session{
		UID:             *f.uid,
		LaunchAgentsDir: *f.agentsDir,
		Launchctl:       installer.Launchctl{Path: *f.launchctl},
		Wait:            p.wait,
	}
}

// dataDirDefault is the agent's own: LINE_AGENT_DATA_DIR, else the
// default of line-agent run.
func dataDirDefault() (string, error) {
	cfg, err := loadConfig()
	if err != nil {
		return "", err
	}
	if cfg.DataDir == "" {
		return defaultDataDir(), nil
	}
	return cfg.DataDir, nil
}

// install writes the LaunchAgent plist for the user's GUI session and
// loads it, so the agent runs now, at every login and again after a crash.
// The data directory must be enrolled first: a job without credentials
// would fail and be restarted every ThrottleInterval, forever.
func install(ctx context.Context, p installProcess, args []string, stdout, stderr io.Writer) error {
	dataDefault, err := dataDirDefault()
	if err != nil {
		return err
	}
	home, _ := os.UserHomeDir()
	fs := newFlagSet("install", stderr)
	sf := addSessionFlags(fs, p, dataDefault, home)
	binary := fs.String("binary", "", "the line-agent binary launchd runs (default: this one, symlinks resolved)")
	logDir := fs.String("log-dir", filepath.Join(home, "Library", "Logs", "line-agent"), "folder of the job's stdout.log and stderr.log")
	if err := parse(fs, args); err != nil {
		return err
	}
	if p.euid == 0 {
		return installer.ErrRoot
	}
	bin := *binary
	if bin == "" {
		if bin, err = thisBinary(p); err != nil {
			return err
		}
	}
	plan, err := installer.PlanInstall(sf.session(p), installer.LaunchAgent{Binary: bin, DataDir: *sf.data, LogDir: *logDir})
	if err != nil {
		return err
	}
	if _, err := agent.LoadCredentials(*sf.data); err != nil {
		if errors.Is(err, agent.ErrNotEnrolled) {
			return fmt.Errorf("data directory %s has no credentials.json: %w (with the same --data), then install", *sf.data, err)
		}
		return err
	}
	if *sf.print {
		plan.Describe(stdout)
		fmt.Fprintln(stdout, "nothing was changed (--print)")
		return nil
	}
	res, err := installer.Install(ctx, plan)
	if err != nil {
		return err
	}
	s := plan.Session
	fmt.Fprintf(stdout, "wrote %s\n", s.PlistPath())
	if res.Replaced {
		fmt.Fprintf(stdout, "stopped the job that was loaded and loaded the new one into %s\n", s.Domain())
	} else {
		fmt.Fprintf(stdout, "loaded %s into %s\n", installer.Label, s.Domain())
	}
	fmt.Fprintf(stdout, "it runs now, at every login, and again after a crash; logs: %s\n", plan.Agent.StderrPath())
	fmt.Fprintf(stdout, "check it: launchctl print %s; line-agent status --data %q\n", s.Service(), *sf.data)
	fmt.Fprintf(stdout, "first install: give %s Full Disk Access (System Settings > Privacy & Security) so it can read chat.db\n", bin)
	if names := unseenEnv(os.Environ()); len(names) > 0 {
		fmt.Fprintf(stdout, "note: %s set in this shell; the LaunchAgent does not see this shell's environment\n", strings.Join(names, ", "))
	}
	return nil
}

// thisBinary is this executable with symlinks resolved: a plist naming a
// symlink (Homebrew's, say) would silently follow it to whatever it points
// at next, and Full Disk Access is granted to the real file.
func thisBinary(p installProcess) (string, error) {
	exe, err := p.executable()
	if err != nil {
		return "", fmt.Errorf("find this binary (give --binary): %w", err)
	}
	resolved, err := filepath.EvalSymlinks(exe)
	if err != nil {
		return "", fmt.Errorf("find this binary (give --binary): %w", err)
	}
	return resolved, nil
}

// unseenEnv names the LINE_AGENT_* variables set here that the job will
// not have (only its --data, and its log format, reach it). Names only:
// a value may be a secret.
func unseenEnv(environ []string) []string {
	var names []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, agent.EnvPrefix+"_") || name == agent.EnvPrefix+"_DATA_DIR" || name == installer.LogFormatEnv {
			continue
		}
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// uninstall stops the job and removes its plist. The data directory
// (credentials, state.db) stays unless --purge: uninstalling to reinstall
// must not cost the enrollment or the journal.
func uninstall(ctx context.Context, p installProcess, args []string, stdout, stderr io.Writer) error {
	dataDefault, err := dataDirDefault()
	if err != nil {
		return err
	}
	home, _ := os.UserHomeDir()
	fs := newFlagSet("uninstall", stderr)
	sf := addSessionFlags(fs, p, dataDefault, home)
	purge := fs.Bool("purge", false, "also delete the data directory (credentials, state.db): the Mac must be enrolled again")
	if err := parse(fs, args); err != nil {
		return err
	}
	if p.euid == 0 {
		return installer.ErrRoot
	}
	plan, err := installer.PlanUninstall(sf.session(p))
	if err != nil {
		return err
	}
	dataDir := *sf.data
	if !flagSet(fs, "data") {
		// The job's own --data, so --purge deletes what the agent used.
		fromPlist, err := installer.DataDirFromPlist(plan.Session.PlistPath())
		switch {
		case err != nil && *purge:
			return fmt.Errorf("%w (give --data to purge)", err)
		case fromPlist != "":
			dataDir = fromPlist
		}
	}
	if *sf.print {
		plan.Describe(stdout)
		if *purge {
			fmt.Fprintf(stdout, "would delete the data directory %s\n", dataDir)
		} else {
			fmt.Fprintf(stdout, "would keep the data directory %s\n", dataDir)
		}
		fmt.Fprintln(stdout, "nothing was changed (--print)")
		return nil
	}
	res, err := installer.Uninstall(ctx, plan)
	if err != nil {
		return err
	}
	s := plan.Session
	switch {
	case !res.WasLoaded && !res.HadPlist:
		fmt.Fprintf(stdout, "nothing was installed: no %s job in %s and no %s\n", installer.Label, s.Domain(), s.PlistPath())
	default:
		if res.WasLoaded {
			fmt.Fprintf(stdout, "stopped %s and removed it from %s\n", installer.Label, s.Domain())
		}
		if res.HadPlist {
			fmt.Fprintf(stdout, "removed %s\n", s.PlistPath())
		}
	}
	if !*purge {
		if _, err := os.Stat(dataDir); err == nil {
			fmt.Fprintf(stdout, "kept the data directory %s (credentials, state.db); line-agent uninstall --purge deletes it\n", dataDir)
		}
		return nil
	}
	gone, err := installer.Purge(dataDir)
	if err != nil {
		return err
	}
	if gone {
		fmt.Fprintf(stdout, "deleted the data directory %s; enroll again before the next install\n", dataDir)
	} else {
		fmt.Fprintf(stdout, "no data directory at %s: nothing to delete\n", dataDir)
	}
	return nil
}

func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
