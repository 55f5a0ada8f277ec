package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/line-agent/line-agent/pkg/fleetload"
)

// The fleet rows run the simulated agents in a child process, this binary
// again with these variables set, for two reasons. The memory row (7g)
// must count only the relay's heap and stacks. The command rows (7a to 7f)
// measure the relay: with 500 agents in its process, every GC cycle scanned
// their 4,500 goroutines too (9 per agent: the stream and gRPC's reader,
// writer and keepalive), and every command waited behind the collector's
// backlog (docs/benchmarks.md, "The fleet in its own process"). On a real
// fleet the agents are other machines.
const (
	fleetChildEnv     = "LINE_BENCH_FLEET_CHILD" // the agents' count
	fleetChildTargets = "LINE_BENCH_FLEET_TARGETS"
	fleetChildTok     = "LINE_BENCH_FLEET_TOKEN" // in the environment, never argv
)

// childReport is one line the fleet child writes on stdout, as JSON:
// first Lines (the fleet is connected and healthy), then one Answered per
// "answered <n>" asked on stdin (with that n as Question), and Lost as the
// last line, once stdin closed.
type childReport struct {
	Lines     []fleetload.Line `json:"lines,omitempty"`
	Answered  *int64           `json:"answered,omitempty"`
	Question  int64            `json:"question,omitempty"`
	Lost      *int             `json:"lost,omitempty"`
	FirstLost string           `json:"first_lost,omitempty"`
}

// fleetProc is a fleet of simulated agents running in a child process.
type fleetProc struct {
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	reports chan childReport
	exited  chan error
	lines   []fleetload.Line

	mu        sync.Mutex // one question on stdin at a time
	asked     int64      // questions asked so far; guarded by mu
	closeOnce sync.Once
	lost      int
	lostErr   error
}

// startFleetProc starts n agents spread over targets in a child process
// and waits until every one is connected and has answered its first health
// check.
func startFleetProc(ctx context.Context, targets []fleetload.Target, n int, projectToken string) (*fleetProc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	tj, err := json.Marshal(targets)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), fleetChildEnv+"="+strconv.Itoa(n), fleetChildTargets+"="+string(tj), fleetChildTok+"="+projectToken)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the fleet child: %w", err)
	}
	p := &fleetProc{cmd: cmd, stdin: stdin, reports: make(chan childReport, 1), exited: make(chan error, 1)}
	go func() {
		dec := json.NewDecoder(bufio.NewReader(stdout))
		for {
			var r childReport
			if err := dec.Decode(&r); err != nil {
				close(p.reports)
				io.Copy(io.Discard, stdout)
				return
			}
			p.reports <- r
		}
	}()
	go func() { p.exited <- cmd.Wait() }()
	select {
	case r, ok := <-p.reports:
		if !ok || len(r.Lines) != n {
			p.Close()
			return nil, fmt.Errorf("the fleet child did not get ready (%d of %d lines; its stderr says why)", len(r.Lines), n)
		}
		p.lines = r.Lines
	case <-ctx.Done():
		p.Close()
		return nil, fmt.Errorf("the fleet child did not get ready: %w", ctx.Err())
	}
	return p, nil
}

// Lines are the agents' lines, each with the relay its agent is on.
func (p *fleetProc) Lines() []fleetload.Line { return p.lines }

// PID is the child's, for its CPU time.
func (p *fleetProc) PID() int { return p.cmd.Process.Pid }

// Answered asks the child how many commands its agents have answered.
// Each question is numbered, so an answer that comes after its question
// gave up is dropped rather than taken for the next one's.
func (p *fleetProc) Answered() (int64, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.asked++
	if _, err := fmt.Fprintf(p.stdin, "answered %d\n", p.asked); err != nil {
		return 0, fmt.Errorf("ask the fleet child: %w", err)
	}
	limit := time.After(10 * time.Second)
	for {
		select {
		case r, ok := <-p.reports:
			if !ok || r.Answered == nil {
				return 0, errors.New("the fleet child did not say how many commands it answered")
			}
			if r.Question == p.asked {
				return *r.Answered, nil
			}
		case <-limit:
			return 0, errors.New("the fleet child did not say how many commands it answered in 10 s")
		}
	}
}

// Close closes the child's stdin (its agents say Goodbye and it exits) and
// reports how many agents had lost their stream before, with the first
// reason: under load that is a finding. Later calls report the same.
func (p *fleetProc) Close() (int, error) {
	p.closeOnce.Do(func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.stdin.Close()
		limit := time.After(20 * time.Second)
		for got := false; !got; {
			select {
			case r, ok := <-p.reports:
				switch {
				case !ok:
					p.lostErr, got = errors.New("the fleet child ended without its report"), true
				case r.Lost != nil:
					p.lost, got = *r.Lost, true
					if r.FirstLost != "" {
						p.lostErr = errors.New(r.FirstLost)
					}
				}
			case <-limit:
				p.lostErr, got = errors.New("the fleet child did not end in 20 s"), true
			}
		}
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			p.cmd.Process.Kill()
			<-p.exited
		}
	})
	return p.lost, p.lostErr
}

// fleetChild runs when this binary is a fleet child: it connects the
// agents, reports their lines, answers "answered" on stdin, and when stdin
// closes reports the streams lost and ends the fleet. It reports whether
// it was the child.
func fleetChild() bool {
	nStr := os.Getenv(fleetChildEnv)
	if nStr == "" {
		return false
	}
	n, err := strconv.Atoi(nStr)
	if err != nil {
		fail(fmt.Errorf("%s=%q: %w", fleetChildEnv, nStr, err))
	}
	var targets []fleetload.Target
	if err := json.Unmarshal([]byte(os.Getenv(fleetChildTargets)), &targets); err != nil {
		fail(fmt.Errorf("%s: %w", fleetChildTargets, err))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	f, err := fleetload.Start(ctx, fleetload.Options{Targets: targets, Agents: n, ProjectToken: os.Getenv(fleetChildTok)})
	cancel()
	if err != nil {
		fail(fmt.Errorf("fleet child: %w", err))
	}
	out := json.NewEncoder(os.Stdout)
	out.Encode(childReport{Lines: f.Lines()})
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if q, ok := strings.CutPrefix(in.Text(), "answered "); ok {
			seq, _ := strconv.ParseInt(q, 10, 64)
			n := f.Answered()
			out.Encode(childReport{Answered: &n, Question: seq})
		}
	}
	lost, err := f.Lost()
	r := childReport{Lost: &lost}
	if err != nil {
		r.FirstLost = err.Error()
	}
	f.Close()
	out.Encode(r)
	return true
}
