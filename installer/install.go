package installer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Errors a caller reports as a refusal, before anything is changed.
var (
	// ErrRoot: a LaunchAgent belongs to a user's login session. Installed
	// for root (or by root into a user's home) it would never see the
	// user's Messages, and its files would be root's.
	ErrRoot = errors.New("installer: a LaunchAgent runs in a user's login session, not root's: run this as that user, in their session, without sudo")
	// ErrNotExecutable: the binary (or launchctl) is missing, not a regular
	// file, or has no execute bit; launchd would fail to start it at every
	// throttle interval.
	ErrNotExecutable = errors.New("installer: not an executable file")
)

// bootstrapAttempts and bootstrapPause: bootout returns before launchd has
// finished removing the old job, and a bootstrap right after it can fail
// ("Bootstrap failed: 5: Input/output error"), so bootstrap is tried three
// times, a second apart.
const (
	bootstrapAttempts = 3
	bootstrapPause    = time.Second
)

// Session is one user's GUI login session as launchd sees it: the domain
// gui/<uid> the job is loaded into and the folder its plist lives in.
type Session struct {
	// UID is the user's id; the domain is gui/<UID>.
	UID int
	// LaunchAgentsDir is ~/Library/LaunchAgents, where launchd looks for
	// the user's agents at login.
	LaunchAgentsDir string
	// Launchctl runs launchctl.
	Launchctl Launchctl
	// Wait pauses between bootstrap attempts; nil waits on a real timer.
	Wait func(ctx context.Context, d time.Duration) error
}

// PlistPath is where the job's plist is written.
func (s Session) PlistPath() string { return filepath.Join(s.LaunchAgentsDir, Label+".plist") }

// Domain is launchd's name for the user's GUI session.
func (s Session) Domain() string { return "gui/" + strconv.Itoa(s.UID) }

// Service is launchd's name for the job in that session.
func (s Session) Service() string { return s.Domain() + "/" + Label }

// check refuses a session that cannot be right before anything is touched.
func (s Session) check() error {
	if s.UID == 0 {
		return ErrRoot
	}
	if !filepath.IsAbs(s.LaunchAgentsDir) {
		return fmt.Errorf("%w: launch agents directory %q", ErrRelativePath, s.LaunchAgentsDir)
	}
	if err := checkExecutable("launchctl", s.Launchctl.Path); err != nil {
		return err
	}
	return nil
}

func (s Session) wait(ctx context.Context, d time.Duration) error {
	if s.Wait != nil {
		return s.Wait(ctx, d)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// checkExecutable says why path is not something launchd (or we) can run.
func checkExecutable(what, path string) error {
	if !filepath.IsAbs(path) {
		return fmt.Errorf("%w: %s %q", ErrRelativePath, what, path)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("%w: %s %s: %w", ErrNotExecutable, what, path, err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%w: %s %s (mode %v)", ErrNotExecutable, what, path, fi.Mode())
	}
	return nil
}

// Step is one launchctl run of a plan.
type Step struct {
	// Args are launchctl's arguments.
	Args []string
	// NotLoadedOK: a bootout of a job that is not loaded has nothing to
	// undo, so "not loaded" is not a failure.
	NotLoadedOK bool
	// Attempts is how often the step is tried before its failure counts
	// (0 is once).
	Attempts int
}

// InstallPlan is everything Install does, worked out first so that
// --print shows exactly what a real install would do.
type InstallPlan struct {
	// Session is where the job goes.
	Session Session
	// Agent is the job.
	Agent LaunchAgent
	// Plist is the file's content.
	Plist []byte
	// Steps run in order after the plist is written.
	Steps []Step
}

// PlanInstall checks the session and the job and renders the plist.
// Nothing is changed.
func PlanInstall(s Session, a LaunchAgent) (*InstallPlan, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	if err := checkExecutable("binary", a.Binary); err != nil {
		return nil, err
	}
	plist, err := a.Plist()
	if err != nil {
		return nil, err
	}
	return &InstallPlan{
		Session: s,
		Agent:   a,
		Plist:   plist,
		Steps: []Step{
			// A job already loaded (an earlier install) is stopped first:
			// SIGTERM, so it drains, then SIGKILL after ExitTimeOut.
			{Args: []string{"bootout", s.Service()}, NotLoadedOK: true},
			// enable before bootstrap: a job someone disabled
			// (launchctl disable) would refuse to bootstrap.
			{Args: []string{"enable", s.Service()}},
			// bootstrap loads the plist; RunAtLoad starts the agent, so no
			// kickstart follows (kickstart -k would kill the agent it just
			// started, half way through opening its journal).
			{Args: []string{"bootstrap", s.Domain(), s.PlistPath()}, Attempts: bootstrapAttempts},
		},
	}, nil
}

// Describe writes what the plan would do, for --print.
func (p *InstallPlan) Describe(w io.Writer) {
	fmt.Fprintf(w, "would create %s (mode 0755) and %s (mode 0700) if missing\n", p.Session.LaunchAgentsDir, p.Agent.LogDir)
	fmt.Fprintf(w, "would write %s (mode 0644):\n\n%s\n", p.Session.PlistPath(), p.Plist)
	fmt.Fprintln(w, "would run:")
	describeSteps(w, p.Session, p.Steps)
}

func describeSteps(w io.Writer, s Session, steps []Step) {
	for _, st := range steps {
		line := displayQuote(append([]string{s.Launchctl.Path}, st.Args...))
		switch {
		case st.NotLoadedOK:
			line += "    # \"not loaded\" is fine"
		case st.Attempts > 1:
			line += fmt.Sprintf("    # tried up to %d times", st.Attempts)
		}
		fmt.Fprintf(w, "  %s\n", line)
	}
}

// LoadError is an install whose plist was written but which launchctl
// could not load. The plist is left in place on purpose: launchd loads
// every plist in ~/Library/LaunchAgents at login, so an install run where
// the user has no GUI session (over ssh, before the first login) still
// starts the agent at the next login. The message says so, and how to
// undo it.
type LoadError struct {
	// PlistPath is the plist that was written and stays.
	PlistPath string
	// Err is launchctl's failure (a *LaunchctlError inside).
	Err error
}

func (e *LoadError) Error() string {
	return fmt.Sprintf("wrote %s but could not load it: %v; the plist stays, so launchd loads it at the next login (fix the cause and run line-agent install again, or line-agent uninstall to remove it)", e.PlistPath, e.Err)
}

func (e *LoadError) Unwrap() error { return e.Err }

// InstallResult says what Install found.
type InstallResult struct {
	// Replaced: a job was loaded before and was booted out.
	Replaced bool
}

// Install makes the plan so: it creates the folders, writes the plist
// (mode 0644, through a temporary file and a rename, so launchd never
// reads half a plist) and runs the steps. Running it twice gives the same
// file and reloads the job.
func Install(ctx context.Context, p *InstallPlan) (InstallResult, error) {
	var res InstallResult
	if err := os.MkdirAll(p.Session.LaunchAgentsDir, 0o755); err != nil {
		return res, fmt.Errorf("installer: %w", err)
	}
	// launchd opens the log files as the user but does not create their
	// folder. The log carries phone numbers: the user's only.
	if err := os.MkdirAll(p.Agent.LogDir, 0o700); err != nil {
		return res, fmt.Errorf("installer: %w", err)
	}
	if err := writeFileAtomic(p.Session.PlistPath(), p.Plist, 0o644); err != nil {
		return res, fmt.Errorf("installer: write plist: %w", err)
	}
	for _, st := range p.Steps {
		loaded, err := p.Session.run(ctx, st)
		if err != nil {
			return res, &LoadError{PlistPath: p.Session.PlistPath(), Err: err}
		}
		if st.NotLoadedOK {
			res.Replaced = loaded
		}
	}
	return res, nil
}

// run runs one step; loaded is false when a NotLoadedOK step found no job.
func (s Session) run(ctx context.Context, st Step) (loaded bool, err error) {
	attempts := max(st.Attempts, 1)
	for i := range attempts {
		if i > 0 {
			if werr := s.wait(ctx, bootstrapPause); werr != nil {
				return false, fmt.Errorf("%w (gave up waiting: %w)", err, werr)
			}
		}
		err = s.Launchctl.Run(ctx, st.Args...)
		if err == nil {
			return true, nil
		}
		var le *LaunchctlError
		if st.NotLoadedOK && errors.As(err, &le) && le.NotLoaded() {
			return false, nil
		}
	}
	if attempts > 1 {
		return false, fmt.Errorf("%w (tried %d times)", err, attempts)
	}
	return false, err
}

// writeFileAtomic writes through a temporary file in the same folder, then
// renames it over path.
func writeFileAtomic(path string, b []byte, mode fs.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after a successful rename there is nothing to remove
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// UninstallPlan is everything Uninstall does.
type UninstallPlan struct {
	// Session is where the job is.
	Session Session
	// Steps run before the plist is removed.
	Steps []Step
}

// PlanUninstall checks the session. Nothing is changed.
func PlanUninstall(s Session) (*UninstallPlan, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	return &UninstallPlan{Session: s, Steps: []Step{{Args: []string{"bootout", s.Service()}, NotLoadedOK: true}}}, nil
}

// Describe writes what the plan would do, for --print.
func (p *UninstallPlan) Describe(w io.Writer) {
	fmt.Fprintln(w, "would run:")
	describeSteps(w, p.Session, p.Steps)
	fmt.Fprintf(w, "would remove %s if it is there\n", p.Session.PlistPath())
}

// UninstallResult says what Uninstall found; both false means nothing was
// installed.
type UninstallResult struct {
	// WasLoaded: launchd had the job and stopped it.
	WasLoaded bool
	// HadPlist: the plist was there and is removed.
	HadPlist bool
}

// Uninstall boots the job out (SIGTERM, so it drains) and removes its
// plist. It is not an error when neither is there.
func Uninstall(ctx context.Context, p *UninstallPlan) (UninstallResult, error) {
	var res UninstallResult
	for _, st := range p.Steps {
		loaded, err := p.Session.run(ctx, st)
		if err != nil {
			return res, fmt.Errorf("installer: %w", err)
		}
		res.WasLoaded = res.WasLoaded || loaded
	}
	switch err := os.Remove(p.Session.PlistPath()); {
	case err == nil:
		res.HadPlist = true
	case !errors.Is(err, fs.ErrNotExist):
		return res, fmt.Errorf("installer: %w", err)
	}
	return res, nil
}

// DataDirFromPlist is the --data an installed plist passes, "" when there
// is no plist or it names none: uninstall --purge then deletes the folder
// the job used, not the default one.
func DataDirFromPlist(path string) (string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("installer: %w", err)
	}
	args, err := programArguments(b)
	if err != nil {
		return "", fmt.Errorf("installer: %s: %w", path, err)
	}
	for i, a := range args {
		if a == "--data" && i+1 < len(args) {
			return args[i+1], nil
		}
	}
	return "", nil
}

// ErrNotDataDir refuses to purge a folder that does not look like the
// agent's: a --data typo must not delete someone's home.
var ErrNotDataDir = errors.New("installer: not a line-agent data directory (no credentials.json or state.db in it): not deleting it")

// Purge deletes the agent's data directory (credentials, state.db, spool).
// It reports false when there was nothing to delete.
func Purge(dir string) (bool, error) {
	if !filepath.IsAbs(dir) {
		return false, fmt.Errorf("%w: data directory %q", ErrRelativePath, dir)
	}
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if home, err := os.UserHomeDir(); err == nil && filepath.Clean(home) == filepath.Clean(dir) {
		return false, fmt.Errorf("%w: %s is the home directory", ErrNotDataDir, dir)
	}
	marked := false
	for _, m := range []string{"credentials.json", "state.db"} {
		if _, err := os.Lstat(filepath.Join(dir, m)); err == nil {
			marked = true
		}
	}
	if !marked {
		return false, fmt.Errorf("%w: %s", ErrNotDataDir, dir)
	}
	if err := os.RemoveAll(dir); err != nil {
		return false, fmt.Errorf("installer: purge: %w", err)
	}
	return true, nil
}

var plainWord = regexp.MustCompile(`^[A-Za-z0-9_./:=@%+,-]+$`)

// displayQuote shows argv the way a shell would need it typed, for people
// reading --print. It is never run.
func displayQuote(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		if plainWord.MatchString(a) {
			out[i] = a
		} else {
			out[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
	}
	return strings.Join(out, " ")
}
