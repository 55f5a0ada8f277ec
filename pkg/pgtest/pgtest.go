// Package pgtest runs a real, throwaway PostgreSQL for tests: a cluster made
// with initdb in a temporary directory, served by the postgres binary on a
// random port of 127.0.0.1 only, one database per test, everything removed
// when the test binary ends.
//
// Why not a fake or a shared server: the relay's PostgreSQL store is only
// as correct as what the real server does with its locks, its types and its
// errors, and a server that belongs to the test binary cannot be disturbed
// by, or disturb, anything else on the machine.
//
// When the binaries are absent (see FindBinaries) the tests that need a
// cluster skip and say which and why; when the environment variable CI is
// set they fail instead, so a CI machine that lost PostgreSQL is noticed.
//
// Tests run as root here and initdb refuses root: as root, initdb and
// postgres run as the user nobody, owning the cluster's directory, which is
// made in os.TempDir(): nobody must be able to reach it there (it can in
// /tmp; a TMPDIR private to root makes the start fail).
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrNoPostgres is returned by FindBinaries and Start when no PostgreSQL
// binaries are installed: callers skip rather than fail on it (unless CI).
var ErrNoPostgres = errors.New("pgtest: PostgreSQL not found (looked for initdb and postgres in $PGTEST_BIN, PATH and /usr/lib/postgresql/*/bin)")

// startWait bounds how long a new cluster may take to accept connections;
// stopWait how long it may take to stop before it is killed.
const (
	startWait = 60 * time.Second
	stopWait  = 30 * time.Second
)

// superuser is the cluster's one role, made by initdb.
const superuser = "postgres"

// FindBinaries returns the directory holding initdb and postgres: the
// directory named by $PGTEST_BIN, else the one of initdb on PATH, else the
// newest /usr/lib/postgresql/<version>/bin (where Debian's packages put them
// without linking them into PATH).
func FindBinaries() (string, error) {
	ok := func(dir string) bool {
		for _, b := range []string{"initdb", "postgres"} {
			if st, err := os.Stat(filepath.Join(dir, b)); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
				return false
			}
		}
		return true
	}
	if dir := os.Getenv("PGTEST_BIN"); dir != "" {
		if ok(dir) {
			return dir, nil
		}
		return "", fmt.Errorf("PGTEST_BIN=%s holds no initdb and postgres: %w", dir, ErrNoPostgres)
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil && ok(filepath.Dir(real)) {
			return filepath.Dir(real), nil
		}
		if ok(filepath.Dir(p)) {
			return filepath.Dir(p), nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	// Newest version first: 16 before 15, 10 after 9.
	slices.SortFunc(dirs, func(a, b string) int { return version(b) - version(a) })
	for _, d := range dirs {
		if ok(d) {
			return d, nil
		}
	}
	return "", ErrNoPostgres
}

// version is the major version in /usr/lib/postgresql/<version>/bin.
func version(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

// Cluster is one running PostgreSQL. Make it with Start, stop it with Stop.
type Cluster struct {
	bin      string // where initdb and postgres are
	dir      string // the cluster's temporary directory: data/, the socket, the log
	port     int
	password string              // the superuser's, random, only in URLs handed to tests
	cred     *syscall.Credential // who runs postgres (nil: this process's user)
	// cmd is the running postgres. No goroutine waits for it while it
	// runs (tests check that they leave no goroutine behind); Stop reaps
	// it.
	cmd *exec.Cmd

	mu      sync.Mutex
	created int  // databases made so far, for unique names; guarded by mu
	stopped bool // guarded by mu
}

// Start makes a new cluster and starts it, waiting (bounded) until it
// accepts connections. It fails with ErrNoPostgres when the binaries are
// absent.
func Start(ctx context.Context) (*Cluster, error) {
	bin, err := FindBinaries()
	if err != nil {
		return nil, err
	}
	cred, err := credential()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	c := &Cluster{bin: bin, dir: dir, password: randomHex(16), cred: cred}
	if err := c.initdb(ctx, cred); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	// The port is free when asked; another process may take it before
	// postgres binds it, so a failed start tries a new port a few times.
	for attempt := 1; ; attempt++ {
		c.port, err = freePort()
		if err == nil {
			err = c.start(ctx, cred)
		}
		if err == nil {
			return c, nil
		}
		if attempt == 3 || ctx.Err() != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
}

// credential is who runs initdb and postgres: nil (this process's user)
// unless this process is root, which initdb refuses; then nobody.
func credential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		return nil, fmt.Errorf("pgtest: running as root, and PostgreSQL refuses root: %w", err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("pgtest: user nobody: %w", err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
}

func (c *Cluster) initdb(ctx context.Context, cred *syscall.Credential) error {
	pwfile := filepath.Join(c.dir, "pwfile")
	if err := os.WriteFile(pwfile, []byte(c.password+"\n"), 0o600); err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	if cred != nil {
		if err := chownAll(c.dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return fmt.Errorf("pgtest: give the cluster directory to nobody: %w", err)
		}
	}
	// Connections over TCP need the password (so a test can check what a
	// wrong one does), the socket in the cluster's own directory does not.
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, "initdb"),
		"--pgdata", filepath.Join(c.dir, "data"), "--username", superuser, "--pwfile", pwfile,
		"--auth-host", "scram-sha-256", "--auth-local", "trust",
		"--encoding", "UTF8", "--locale", "C", "--no-sync")
	cmd.Dir = c.dir
	cmd.SysProcAttr = procAttr(cred)
	out, err := cmd.CombinedOutput()
	os.Remove(pwfile)
	if err != nil {
		return fmt.Errorf("pgtest: initdb: %w\n%s", err, out)
	}
	return nil
}

func (c *Cluster) start(ctx context.Context, cred *syscall.Credential) error {
	logPath := filepath.Join(c.dir, "postgres.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	defer logFile.Close() // the child has its own descriptor
	// Durability is not what these tests check: fsync off makes each commit
	// cheap. Only 127.0.0.1, and the socket only in the cluster's directory.
	cmd := exec.Command(filepath.Join(c.bin, "postgres"),
		"-D", filepath.Join(c.dir, "data"),
		"-c", "listen_addresses=127.0.0.1",
		"-c", "port="+strconv.Itoa(c.port),
		"-c", "unix_socket_directories="+c.dir,
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
		"-c", "max_connections=200",
		"-c", "log_min_messages=warning")
	cmd.Dir = c.dir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = procAttr(cred)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("pgtest: start postgres: %w", err)
	}
	c.cmd = cmd
	if err := c.waitReady(ctx); err != nil {
		c.kill()
		log, _ := os.ReadFile(logPath)
		return fmt.Errorf("%w\npostgres log:\n%s", err, tail(log, 4000))
	}
	return nil
}

// waitReady connects until the server answers, postgres exits, or
// startWait passes.
func (c *Cluster) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, startWait)
	defer cancel()
	for {
		conn, err := c.connect(ctx, "postgres")
		if err == nil {
			return conn.Close(ctx)
		}
		if exited(c.cmd.Process.Pid) {
			return fmt.Errorf("pgtest: postgres exited at start: %w", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pgtest: postgres not ready within %s: %w", startWait, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (c *Cluster) connect(ctx context.Context, database string) (*pgx.Conn, error) {
	return pgx.Connect(ctx, c.URL(database))
}

// URL is the connection URL of database on the cluster, as the superuser,
// password included: for tests only, which is what this cluster is for.
func (c *Cluster) URL(database string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword(superuser, c.password),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(c.port)),
		Path:     "/" + database,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// CreateDatabase makes a new, empty database with a unique name and returns
// that name.
func (c *Cluster) CreateDatabase(ctx context.Context) (string, error) {
	c.mu.Lock()
	c.created++
	name := fmt.Sprintf("test_%d_%s", c.created, randomHex(4))
	c.mu.Unlock()
	if err := c.admin(ctx, `CREATE DATABASE `+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", fmt.Errorf("pgtest: create database: %w", err)
	}
	return name, nil
}

// DropDatabase drops name, ending the sessions still connected to it.
func (c *Cluster) DropDatabase(ctx context.Context, name string) error {
	if err := c.admin(ctx, `DROP DATABASE IF EXISTS `+pgx.Identifier{name}.Sanitize()+` WITH (FORCE)`); err != nil {
		return fmt.Errorf("pgtest: drop database: %w", err)
	}
	return nil
}

func (c *Cluster) admin(ctx context.Context, stmt string) error {
	conn, err := c.connect(ctx, "postgres")
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, stmt)
	return err
}

// Stop shuts the cluster down (fast shutdown, killed after stopWait) and
// removes its directory. Calling it again does nothing.
func (c *Cluster) Stop() error {
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return nil
	}
	c.stopped = true
	c.mu.Unlock()
	_ = c.shutdown() // killed if it would not stop: the directory goes either way
	return os.RemoveAll(c.dir)
}

// Restart stops the server (fast shutdown: every session is ended, as
// when a database server is restarted under its clients), runs whileDown
// (nil: nothing) while it is down, and starts it again on the same port
// with the same data, waiting (bounded) until it accepts connections.
// What was committed before is there again; clients must reconnect. It
// must not run concurrently with itself or Stop.
func (c *Cluster) Restart(ctx context.Context, whileDown func()) error {
	c.mu.Lock()
	stopped := c.stopped
	c.mu.Unlock()
	if stopped {
		return errors.New("pgtest: Restart of a stopped cluster")
	}
	if err := c.shutdown(); err != nil {
		return err
	}
	if whileDown != nil {
		whileDown()
	}
	return c.start(ctx, c.cred)
}

// shutdown stops the running postgres (fast shutdown, killed after
// stopWait) and reaps it.
func (c *Cluster) shutdown() error {
	// SIGINT is PostgreSQL's fast shutdown: sessions are ended, nothing is
	// waited for.
	_ = c.cmd.Process.Signal(os.Interrupt)
	done := make(chan error, 1)
	go func() { done <- c.cmd.Wait() }()
	select {
	case <-done:
		return nil
	case <-time.After(stopWait):
		_ = c.cmd.Process.Kill()
		<-done
		return fmt.Errorf("pgtest: postgres did not stop within %s and was killed", stopWait)
	}
}

// kill ends a postgres that failed to start, and reaps it.
func (c *Cluster) kill() {
	_ = c.cmd.Process.Kill()
	_ = c.cmd.Wait()
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgtest: find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func chownAll(dir string, uid, gid int) error {
	return filepath.WalkDir(dir, func(p string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func tail(b []byte, n int) string {
	s := strings.TrimSpace(string(b))
	if len(s) > n {
		s = "..." + s[len(s)-n:]
	}
	return s
}
