// Package localstack runs line-relay and one line-agent on the simulated
// Messages as real child processes on 127.0.0.1, in one directory. It is
// what `make demo` and the end-to-end tests stand on: the relay can be
// stopped and started again on the same addresses while a client keeps
// running, which is how a restart is tried from outside.
//
// Each child runs in its own process group and logs (appending, across
// restarts) to NAME.log in the directory, so a failure can point at the log
// and Close can take down a child and anything it spawned.
package localstack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/line-agent/line-agent/relay"
	"github.com/line-agent/line-agent/relay/opclient"
)

// Options say which binaries to run and how.
type Options struct {
	// Dir holds the relay's and the agent's data and the logs.
	Dir                string
	RelayBin, AgentBin string
	// API serves the platform API (photon.imessage.v1) on its own
	// address, APIAddr, besides the agents' gRPC address.
	API bool
	// RelayArgs and AgentArgs are extra flags for `line-relay serve` and
	// `line-agent run`.
	RelayArgs, AgentArgs []string
	// Driver is the agent's --driver (default sim). With macos on Linux,
	// AgentEnv must name chat.db, osascript and the lines.
	Driver string
	// Unhealthy counts the agent as up once it is connected, healthy or
	// not (the macos driver on Linux has no private-API helper, so its
	// health is DOWN).
	Unhealthy bool
	// Wait bounds each wait for a child to come up (default 30 s).
	Wait time.Duration
	// AgentEnv is added to the agent's environment (every start).
	AgentEnv []string
	// AgentRelay, when set, gives the address the agent is enrolled to
	// dial for the relay's gRPC address (a fault-injecting proxy in front
	// of it, say).
	AgentRelay func(grpcAddr string) string
}

// Stack is a running relay and agent.
type Stack struct {
	opts Options
	// The relay's addresses: agents' gRPC, the operator HTTP API and (with
	// Options.API) the platform API.
	GRPCAddr, HTTPAddr, APIAddr string
	RelayDir, AgentDir          string
	// Operator is the relay's operator API.
	Operator *opclient.Client
	// Agent is the agent as the relay last saw it healthy.
	Agent relay.AgentView

	relay, agent *Child
}

// Start enrolls and starts both children and returns once the agent is
// connected and healthy. On error, whatever was started is stopped.
func Start(ctx context.Context, opts Options) (_ *Stack, err error) {
	if opts.Wait <= 0 {
		opts.Wait = 30 * time.Second
	}
	s := &Stack{opts: opts, RelayDir: filepath.Join(opts.Dir, "relay"), AgentDir: filepath.Join(opts.Dir, "agent")}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	for _, a := range []*string{&s.GRPCAddr, &s.HTTPAddr, &s.APIAddr} {
		if a == &s.APIAddr && !opts.API {
			continue
		}
		if *a, err = FreeAddr(); err != nil {
			return nil, err
		}
	}
	s.Operator = opclient.New(s.HTTPAddr)
	tok, err := s.relayCommand(ctx, "token", "create", "--data", s.RelayDir)
	if err != nil {
		return nil, err
	}
	if err := s.StartRelay(ctx); err != nil {
		return nil, err
	}
	dial := s.GRPCAddr
	if opts.AgentRelay != nil {
		dial = opts.AgentRelay(s.GRPCAddr)
	}
	enroll := exec.CommandContext(ctx, opts.AgentBin, "enroll", "--relay", dial, "--ca", s.CA(), "--token-file", "-", "--data", s.AgentDir)
	enroll.Stdin = strings.NewReader(tok)
	if out, err := enroll.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("line-agent enroll: %w: %s", err, out)
	}
	if err := s.StartAgent(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// relayCommand runs a line-relay subcommand and returns its standard
// output, trimmed (a token it printed, say); standard error goes into the
// error only.
func (s *Stack) relayCommand(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, s.opts.RelayBin, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("line-relay %s: %w: %s", args[0], err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(out)), nil
}

// APIToken creates a platform API token (`line-relay api-token create`
// with args such as "--line", LINE) and returns it.
func (s *Stack) APIToken(ctx context.Context, args ...string) (string, error) {
	return s.relayCommand(ctx, append([]string{"api-token", "create", "--data", s.RelayDir}, args...)...)
}

// CA is the relay's development CA certificate, which clients trust.
func (s *Stack) CA() string { return filepath.Join(s.RelayDir, "ca.pem") }

// ChatDB is the simulated Messages' chat.db.
func (s *Stack) ChatDB() string { return filepath.Join(s.AgentDir, "sim", "chat.db") }

// Log is the path of a child's log ("relay" or "agent").
func (s *Stack) Log(name string) string { return filepath.Join(s.opts.Dir, name+".log") }

// StartRelay starts the relay (again) on the same addresses and data and
// waits for its operator API.
func (s *Stack) StartRelay(ctx context.Context) error {
	args := []string{"serve", "--data", s.RelayDir, "--grpc-addr", s.GRPCAddr, "--http-addr", s.HTTPAddr}
	if s.APIAddr != "" {
		args = append(args, "--api-addr", s.APIAddr)
	}
	c, err := startChild(s.Log("relay"), nil, s.opts.RelayBin, append(args, s.opts.RelayArgs...)...)
	if err != nil {
		return err
	}
	s.relay = c
	if err := WaitFor(ctx, s.opts.Wait, func() error { _, err := s.Operator.Agents(ctx); return err }); err != nil {
		return fmt.Errorf("relay did not come up (see %s): %w", s.Log("relay"), err)
	}
	return nil
}

// StopRelay stops the relay (SIGTERM, its staged shutdown).
func (s *Stack) StopRelay() { s.relay.Stop() }

// KillRelay kills the relay's process group (SIGKILL): no shutdown at all.
func (s *Stack) KillRelay() { s.relay.Kill() }

// StartAgent starts the agent (again) and waits until the relay sees it
// connected and healthy.
func (s *Stack) StartAgent(ctx context.Context) error {
	driver := s.opts.Driver
	if driver == "" {
		driver = "sim"
	}
	c, err := startChild(s.Log("agent"), s.opts.AgentEnv, s.opts.AgentBin, append([]string{"run", "--data", s.AgentDir, "--driver", driver}, s.opts.AgentArgs...)...)
	if err != nil {
		return err
	}
	s.agent = c
	if err := WaitFor(ctx, s.opts.Wait, func() error {
		as, err := s.Operator.Agents(ctx)
		if err != nil {
			return err
		}
		for _, a := range as {
			if a.Connected && (a.Healthy || s.opts.Unhealthy) {
				s.Agent = a
				return nil
			}
		}
		return errors.New("no healthy agent yet")
	}); err != nil {
		return fmt.Errorf("agent did not connect (see %s): %w", s.Log("agent"), err)
	}
	return nil
}

// KillAgent kills the agent's process group (SIGKILL) mid-whatever, as a
// crash or a power cut to the process would.
func (s *Stack) KillAgent() { s.agent.Kill() }

// AgentExited waits up to limit for the agent to exit by itself (a crash
// point fired, say) and reports whether it did.
func (s *Stack) AgentExited(limit time.Duration) bool {
	if s.agent == nil {
		return true
	}
	select {
	case <-s.agent.done:
		return true
	case <-time.After(limit):
		return false
	}
}

// AgentPID is the running agent's process id (0 if none), for reading
// its memory from /proc.
func (s *Stack) AgentPID() int {
	if s.agent == nil {
		return 0
	}
	return s.agent.cmd.Process.Pid
}

// Close stops the agent, then the relay.
func (s *Stack) Close() {
	s.agent.Stop()
	s.relay.Stop()
}

// Build builds line-relay and line-agent (CGO_ENABLED=0, as shipped) into
// dir, from the module this package is in, with the build tags given (the
// fault-injection suite builds with "chaos"), and returns their paths.
func Build(ctx context.Context, dir string, tags ...string) (relayBin, agentBin string, err error) {
	relayBin, agentBin = filepath.Join(dir, "line-relay"), filepath.Join(dir, "line-agent")
	for _, b := range []struct{ out, pkg string }{
		{relayBin, "github.com/line-agent/line-agent/cmd/relay"},
		{agentBin, "github.com/line-agent/line-agent/cmd/agent"},
	} {
		cmd := exec.CommandContext(ctx, "go", "build", "-tags", strings.Join(tags, ","), "-o", b.out, b.pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", "", fmt.Errorf("go build %s: %w\n%s", b.pkg, err, out)
		}
	}
	return relayBin, agentBin, nil
}

// Binaries builds line-relay and line-agent once, on first use, into a
// temporary directory Remove deletes: a test package's TestMain calls
// Remove after its tests, which share the build.
type Binaries struct {
	// Tags are the build tags (see Build).
	Tags []string

	once         sync.Once
	dir          string
	relay, agent string
	err          error
}

// Get returns the binaries' paths, building them the first time.
func (b *Binaries) Get(ctx context.Context) (relayBin, agentBin string, err error) {
	b.once.Do(func() {
		if b.dir, b.err = os.MkdirTemp("", "line-agent-bin-"); b.err == nil {
			b.relay, b.agent, b.err = Build(ctx, b.dir, b.Tags...)
		}
	})
	return b.relay, b.agent, b.err
}

// Remove deletes what Get built.
func (b *Binaries) Remove() {
	if b.dir != "" {
		os.RemoveAll(b.dir)
	}
}

// Child is one started process and its process group.
type Child struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// StartChild runs bin as Stack runs its children (its own process group,
// env added to its environment, output appended to logPath), for a
// harness with more processes than one relay and one agent (e2e/replicas
// runs several relays). Stop or Kill it.
func StartChild(logPath string, env []string, bin string, args ...string) (*Child, error) {
	return startChild(logPath, env, bin, args...)
}

// startChild runs bin in its own process group, env added to its
// environment, with its output appended to logPath.
func startChild(logPath string, env []string, bin string, args ...string) (*Child, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.Command(bin, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", filepath.Base(bin), err)
	}
	c := &Child{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(c.done) }()
	return c, nil
}

// Stop asks the child's group to stop (SIGTERM), kills it after 10 s, and
// returns once the child has exited. A nil or stopped child is a no-op.
func (c *Child) Stop() { c.signal(syscall.SIGTERM, 10*time.Second) }

// Kill kills the child's group (SIGKILL) and returns once the child has
// exited. A nil or exited child is a no-op.
func (c *Child) Kill() { c.signal(syscall.SIGKILL, 0) }

// signal sends sig to the child's group and waits for the child to exit;
// after grace (when > 0) it kills the group.
func (c *Child) signal(sig syscall.Signal, grace time.Duration) {
	if c == nil {
		return
	}
	select {
	case <-c.done:
		return
	default:
	}
	_ = syscall.Kill(-c.cmd.Process.Pid, sig)
	if grace <= 0 {
		<-c.done
		return
	}
	select {
	case <-c.done:
	case <-time.After(grace):
		_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
		<-c.done
	}
}

// FreeAddr is a 127.0.0.1 address with a port free a moment ago.
func FreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// WaitFor calls f every 100 ms until it returns nil, ctx ends or limit
// passes; it returns f's last error then.
func WaitFor(ctx context.Context, limit time.Duration, f func() error) error {
	deadline := time.Now().Add(limit)
	for {
		err := f()
		if err == nil {
			return nil
		}
		if !time.Now().Before(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
