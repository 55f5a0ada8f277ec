package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/line-agent/line-agent/pkg/fleetload"
	"github.com/line-agent/line-agent/pkg/pgtest"
	"github.com/line-agent/line-agent/relay"
)

// Rows 7a to 7i: a fleet of simulated agents (pkg/fleetload: each its
// own enrollment, TLS connection, stream and line, speaking the real
// protocol; in a child process for the command and memory rows,
// fleetproc.go) against in-process relays on loopback TLS: commands per second
// across the fleet and submit-to-result latency through the operator API,
// on one relay on SQLite, one on PostgreSQL and two on one PostgreSQL;
// the relay's memory per idle connected agent; event fan-out to long-poll
// subscribers of GET /v1/events. docs/benchmarks.md, "The fleet rows".

// The fleet's sizes; the defaults are the figures (500 agents, 100
// subscribers), -quick shrinks them.
var (
	fleetAgents      = flag.Int("fleet-agents", 500, "simulated agents in the fleet rows (7)")
	fleetSubscribers = flag.Int("fleet-subscribers", 100, "GET /v1/events long-poll subscribers in the fan-out rows")
	fleetClients     = flag.Int("fleet-clients", 64, "operator API clients (commands in flight) per relay in the fleet's closed loop")
	fleetDuration    = flag.Duration("fleet-duration", 10*time.Second, "measured time of each fleet command run (after a warm-up)")
	fleetEventRate   = flag.Float64("fleet-event-rate", 20, "events per second across the fleet in the paced fan-out run")
)

// fleetSizes are one run's sizes, -quick applied.
type fleetSizes struct {
	agents, subscribers, clients int
	duration, warmup             time.Duration
	eventRate                    float64
	events                       int // per fan-out run
}

func (b *bench) fleetSizes() fleetSizes {
	s := fleetSizes{agents: *fleetAgents, subscribers: *fleetSubscribers, clients: *fleetClients,
		duration: *fleetDuration, warmup: 2 * time.Second, eventRate: *fleetEventRate}
	if b.quick {
		s.agents, s.subscribers, s.duration, s.warmup = min(s.agents, 100), min(s.subscribers, 20), min(s.duration, 3*time.Second), time.Second
	}
	s.events = max(20, int(s.eventRate*s.duration.Seconds()))
	return s
}

// fleetCommands is one configuration's two command runs.
type fleetCommands struct {
	label    string // "one relay on SQLite"
	skip     string // why it was not measured, when it was not
	peak     *fleetload.Report
	half     *fleetload.Report
	halfRate float64
	// cpuPerCmd is the CPU of this process (relays and API clients), of
	// the fleet's process and of PostgreSQL's processes per command
	// answered in the closed loop: unlike the rate, it hardly moves with
	// what else the machine runs.
	cpuPerCmd time.Duration
	pgPerCmd  time.Duration // PostgreSQL's part of it
	// clients is the closed loop's, sz.clients per relay: a fleet of two
	// replicas is offered the load that saturates one, twice, or its peak
	// would be the clients' latency rather than what the relays carry.
	clients int
	// pg reads the PostgreSQL cluster's CPU seconds so far; nil on SQLite.
	pg func() float64
}

// fleetRows measures and adds rows 7a to 7i.
func (b *bench) fleetRows() error {
	ctx, cancel := context.WithTimeout(b.ctx, 8*time.Minute)
	defer cancel()
	sz := b.fleetSizes()
	fl := fleetload.NewFinishLog()

	// One relay on SQLite: commands, then fan-out on the same fleet.
	logf("fleet: %d agents on one relay on SQLite", sz.agents)
	sqlite := &fleetCommands{label: "one relay on SQLite"}
	var fan, fan1, burst, burst1 *fleetload.FanOutReport
	err := b.withFleet(ctx, "fleet-sqlite", []string{""}, fl, sz, func(fp *fleetProc, targets []fleetload.Target, tok string) error {
		if err := b.fleetCommandRuns(ctx, sqlite, fp, targets, fl, sz, "sqlite"); err != nil {
			return err
		}
		if lost, err := fp.Close(); lost > 0 || err != nil {
			return fmt.Errorf("%d of %d agents lost their stream during the command runs, the first: %w", lost, sz.agents, err)
		}
		// The fan-out's agents run in this process: they time each
		// event from its send, in the subscribers' clock. Lines of
		// their own: the child's agents were enrolled on this store.
		t0 := time.Now()
		f, err := fleetload.Start(ctx, fleetload.Options{Targets: targets, Agents: sz.agents, ProjectToken: tok, LineBase: 5552000000})
		if err != nil {
			return err
		}
		defer f.Close()
		logf("fleet: %d agents for the fan-out enrolled and connected in %s", sz.agents, time.Since(t0).Round(100*time.Millisecond))
		for _, r := range []struct {
			out  **fleetload.FanOutReport
			subs int
			rate float64
		}{{&fan, sz.subscribers, sz.eventRate}, {&fan1, 1, sz.eventRate}, {&burst, sz.subscribers, 0}, {&burst1, 1, 0}} {
			how := fmt.Sprintf("%.0f/s", r.rate)
			if r.rate == 0 {
				how = "at once"
			}
			logf("fleet: fan-out of %d events (%s) to %d subscribers", sz.events, how, r.subs)
			if *r.out, err = fleetload.RunFanOut(ctx, fleetload.FanOut{Agents: f.Agents(), Target: targets[0], Subscribers: r.subs, Events: sz.events, Rate: r.rate}); err != nil {
				return fmt.Errorf("fan-out to %d: %w", r.subs, err)
			}
		}
		if lost, err := f.Lost(); lost > 0 {
			return fmt.Errorf("%d of %d agents lost their stream during the fan-out, the first: %w", lost, sz.agents, err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("fleet on SQLite: %w", err)
	}

	logf("fleet: relay memory with %d idle agents (agents in a child process)", sz.agents)
	mem, err := fleetMemory(ctx, b.dir("fleet-memory"), sz.agents)
	if err != nil {
		return fmt.Errorf("fleet memory: %w", err)
	}

	pg := &fleetCommands{label: "one relay on PostgreSQL"}
	two := &fleetCommands{label: "two relays on one PostgreSQL"}
	var localOnly *fleetload.Report
	cluster, err := pgtest.Start(ctx)
	switch {
	case errors.Is(err, pgtest.ErrNoPostgres):
		pg.skip = "skipped: " + err.Error()
		two.skip = pg.skip
	case err != nil:
		return fmt.Errorf("fleet: start PostgreSQL: %w", err)
	default:
		defer cluster.Stop()
		pg.pg = clusterCPU(cluster)
		two.pg = pg.pg
		url := func() (string, error) {
			name, err := cluster.CreateDatabase(ctx)
			return cluster.URL(name), err
		}
		logf("fleet: %d agents on one relay on PostgreSQL", sz.agents)
		u, err := url()
		if err != nil {
			return err
		}
		if err := b.withFleet(ctx, "fleet-pg", []string{u}, fl, sz, func(fp *fleetProc, targets []fleetload.Target, _ string) error {
			return b.fleetCommandRuns(ctx, pg, fp, targets, fl, sz, "pg")
		}); err != nil {
			return fmt.Errorf("fleet on PostgreSQL: %w", err)
		}
		logf("fleet: %d agents split between two relays on one PostgreSQL", sz.agents)
		if u, err = url(); err != nil {
			return err
		}
		if err := b.withFleet(ctx, "fleet-pg2", []string{u, u}, fl, sz, func(fp *fleetProc, targets []fleetload.Target, _ string) error {
			if why, err := crossReplica(ctx, fp.Lines(), targets, fl); err != nil {
				return err
			} else if why != "" {
				two.skip = "not measured: replicas not yet supported (docs/scaling.md): " + why
				logf("fleet: %s; each replica given only its own agents' commands instead, for a note", why)
				localOnly, err = fleetload.Run(ctx, fleetload.Load{Lines: fp.Lines(), LocalOnly: true, Results: fl, Clients: 2 * sz.clients,
					Warmup: sz.warmup, Duration: sz.duration, IDPrefix: "pg2-local-"})
				return err
			}
			return b.fleetCommandRuns(ctx, two, fp, targets, fl, sz, "pg2")
		}); err != nil {
			return fmt.Errorf("fleet on two PostgreSQL replicas: %w", err)
		}
	}

	b.addFleetRows(sz, sqlite, pg, two, localOnly, mem, fan, fan1, burst, burst1)
	return nil
}

// withFleet starts one in-process relay per store (the second and later
// ones with the first one's dev CA, as docs/scaling.md has replicas
// started, so every agent trusts one CA), a fleet of sz.agents spread
// over them in a child process, runs fn (with the project token), and
// stops it all.
func (b *bench) withFleet(ctx context.Context, name string, stores []string, fl *fleetload.FinishLog, sz fleetSizes, fn func(*fleetProc, []fleetload.Target, string) error) error {
	var targets []fleetload.Target
	var relays []*relay.Server
	defer func() {
		for _, r := range relays {
			r.Close()
		}
	}()
	for i, store := range stores {
		dir := b.dir(fmt.Sprintf("%s/relay%d", name, i))
		if i > 0 {
			if err := copyCA(filepath.Dir(relays[0].CAFile()), dir); err != nil {
				return err
			}
		}
		srv, err := relay.New(relay.Options{DataDir: dir, Store: store, GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0",
			ReplicaID: fmt.Sprintf("%s-%d", name, i), Logger: slog.New(fl)})
		if err != nil {
			return err
		}
		if err := srv.Start(ctx); err != nil {
			srv.Close()
			return err
		}
		relays = append(relays, srv)
		targets = append(targets, fleetload.Target{GRPCAddr: srv.GRPCAddr(), CAFile: srv.CAFile(), HTTPAddr: srv.HTTPAddr()})
	}
	tok, err := relays[0].CreateProjectToken(ctx)
	if err != nil {
		return err
	}
	t0 := time.Now()
	fp, err := startFleetProc(ctx, targets, sz.agents, tok)
	if err != nil {
		return err
	}
	defer fp.Close()
	logf("fleet: %d agents (in a child process) enrolled and connected in %s", sz.agents, time.Since(t0).Round(100*time.Millisecond))
	if err := fn(fp, targets, tok); err != nil {
		return err
	}
	if lost, err := fp.Close(); lost > 0 || err != nil {
		return fmt.Errorf("%d of %d agents lost their stream during the run, the first: %w", lost, sz.agents, err)
	}
	return nil
}

// fleetCommandRuns finds the peak (a closed loop of sz.clients per relay) and then
// measures latency paced at half of it.
func (b *bench) fleetCommandRuns(ctx context.Context, fc *fleetCommands, fp *fleetProc, targets []fleetload.Target, fl *fleetload.FinishLog, sz fleetSizes, prefix string) error {
	fc.clients = sz.clients * len(targets)
	logf("fleet %s: closed loop, %d clients, %s", fc.label, fc.clients, sz.duration)
	cpu := func() (own, pg float64) {
		own, _ = procCPU(os.Getpid())
		agents, _ := procCPU(fp.PID())
		own += agents
		if fc.pg != nil {
			pg = fc.pg()
		}
		return own, pg
	}
	own0, pg0 := cpu()
	n0, err := fp.Answered()
	if err != nil {
		return err
	}
	fc.peak, err = fleetload.Run(ctx, fleetload.Load{Lines: fp.Lines(), Submit: targets, Results: fl, Clients: fc.clients,
		Warmup: sz.warmup, Duration: sz.duration, IDPrefix: prefix + "-peak-"})
	if err != nil {
		return err
	}
	n1, err := fp.Answered()
	if err != nil {
		return err
	}
	if n := n1 - n0; n > 0 && own0 > 0 {
		own1, pg1 := cpu()
		per := func(secs float64) time.Duration { return time.Duration(secs * float64(time.Second) / float64(n)) }
		fc.cpuPerCmd, fc.pgPerCmd = per(own1-own0+pg1-pg0), per(pg1-pg0)
	}
	if fc.peak.Done == 0 {
		return fmt.Errorf("no command finished in the closed loop: %+v (first refusal %q)", fc.peak, fc.peak.FirstRefusal)
	}
	fc.halfRate = fc.peak.PerSec / 2
	logf("fleet %s: peak %.0f/s; paced at %.0f/s", fc.label, fc.peak.PerSec, fc.halfRate)
	fc.half, err = fleetload.Run(ctx, fleetload.Load{Lines: fp.Lines(), Submit: targets, Results: fl, Clients: max(fc.clients, 256),
		Rate: fc.halfRate, Warmup: sz.warmup / 2, Duration: sz.duration, IDPrefix: prefix + "-half-"})
	return err
}

// crossReplica says why a command submitted to one replica does not reach
// an idle agent connected to the other ("" when it does): cross-replica
// delivery is what two replicas need, and what this relay may not have
// yet.
func crossReplica(ctx context.Context, lines []fleetload.Line, targets []fleetload.Target, fl *fleetload.FinishLog) (string, error) {
	const wait = 3 * time.Second
	for _, a := range lines {
		if a.Target != targets[1] {
			continue
		}
		fin, err := fleetload.Submit(ctx, fl, targets[0], a, "pg2-probe", wait+time.Second, wait)
		switch {
		case errors.Is(err, fleetload.ErrNoResult):
			return fmt.Sprintf("a command submitted to one replica for an idle agent of the other got no result in %s", wait), nil
		case err != nil:
			return "", err
		case fin.State != "succeeded":
			return "", fmt.Errorf("the cross-replica probe ended %s", fin.State)
		}
		return "", nil
	}
	return "", errors.New("no agent on the second replica")
}

// copyCA gives a replica's data dir the first replica's CA; the replica
// issues its own server certificate from it.
func copyCA(from, to string) error {
	if err := os.MkdirAll(to, 0o700); err != nil {
		return err
	}
	for _, name := range []string{"ca.pem", "ca-key.pem"} {
		b, err := os.ReadFile(filepath.Join(from, name))
		if err != nil {
			return fmt.Errorf("share the dev CA: %w", err)
		}
		if err := os.WriteFile(filepath.Join(to, name), b, 0o600); err != nil {
			return fmt.Errorf("share the dev CA: %w", err)
		}
	}
	return nil
}

// memUse is the relay process's memory at one moment, after a GC.
type memUse struct {
	heapStack  uint64 // HeapInuse + StackInuse
	rssKB      int64
	goroutines int
}

// fleetMemoryResult is row 7g: the relay with no agent, and with n idle.
type fleetMemoryResult struct {
	n             int
	before, after memUse
}

func (m *fleetMemoryResult) perAgent() float64 {
	return float64(int64(m.after.heapStack)-int64(m.before.heapStack)) / float64(m.n)
}

func memNow() memUse {
	runtime.GC()
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	rss, _, _ := procRSS(os.Getpid())
	return memUse{heapStack: ms.HeapInuse + ms.StackInuse, rssKB: rss, goroutines: runtime.NumGoroutine()}
}

// fleetMemory measures the in-process relay's heap and stacks with no
// agent and with n idle agents connected, the agents running in a child
// process (this binary again) so that only the relay's memory is in this
// one. Production heartbeat and health-check intervals.
func fleetMemory(ctx context.Context, dir string, n int) (*fleetMemoryResult, error) {
	srv, err := relay.New(relay.Options{DataDir: dir, GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", Logger: discard})
	if err != nil {
		return nil, err
	}
	if err := srv.Start(ctx); err != nil {
		srv.Close()
		return nil, err
	}
	defer srv.Close()
	tok, err := srv.CreateProjectToken(ctx)
	if err != nil {
		return nil, err
	}
	res := &fleetMemoryResult{n: n}
	time.Sleep(500 * time.Millisecond)
	res.before = memNow()

	cctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	fp, err := startFleetProc(cctx, []fleetload.Target{{GRPCAddr: srv.GRPCAddr(), CAFile: srv.CAFile(), HTTPAddr: srv.HTTPAddr()}}, n, tok)
	if err != nil {
		return nil, err
	}
	defer fp.Close()
	// Each agent has sent its first health report; the relay takes it a
	// moment later.
	healthy := 0
	for end := time.Now().Add(10 * time.Second); healthy != n && time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		agents, err := srv.Agents(ctx)
		if err != nil {
			return nil, err
		}
		healthy = 0
		for _, a := range agents {
			if a.Connected && a.Healthy {
				healthy++
			}
		}
	}
	if healthy != n {
		return nil, fmt.Errorf("%d of %d agents connected and healthy", healthy, n)
	}
	time.Sleep(2 * time.Second) // idle: nothing but what a connected agent costs
	res.after = memNow()
	return res, nil
}

func (b *bench) addFleetRows(sz fleetSizes, sqlite, pg, two *fleetCommands, localOnly *fleetload.Report, mem *fleetMemoryResult,
	fan, fan1, burst, burst1 *fleetload.FanOutReport) {
	lat := func(r *fleetload.Report, p int) string { return ms(pct(r.Latencies, p)) }
	problems := func(r *fleetload.Report) string {
		if r.Failed+r.TimedOut+r.Refused == 0 {
			return ""
		}
		return fmt.Sprintf(", %d failed, %d without a result in 10 s, %d refused", r.Failed, r.TimedOut, r.Refused)
	}
	clean := func(r *fleetload.Report) bool { return r.Failed+r.TimedOut+r.Refused == 0 }
	peakRow := func(id string, fc, base *fleetCommands, target string, minRatio float64) {
		what := fmt.Sprintf("%s commands/s across the fleet, %d agents, %s; closed loop of %d operator API clients (%d per relay), submit → result stored (n=%d%s; %s)",
			id, sz.agents, fc.label, fc.clients, sz.clients, orZero(fc.peak), problemsOf(fc.peak, problems), cpuText(fc))
		if fc.peak == nil {
			b.add(row{what: fmt.Sprintf("%s commands/s across the fleet, %d agents, %s", id, sz.agents, fc.label), p99: fc.skip, target: target})
			return
		}
		r := row{what: what, p50: lat(fc.peak, 50), p99: fmt.Sprintf("%.0f/s (p99 %s)", fc.peak.PerSec, lat(fc.peak, 99)), target: target}
		if base != nil && base.peak != nil {
			r.baseline = fmt.Sprintf("%s, same run: %.0f/s", base.label, base.peak.PerSec)
			r.ratio = fmt.Sprintf("%.2f", fc.peak.PerSec/base.peak.PerSec)
			if minRatio > 0 {
				r.pass = pass(clean(fc.peak) && fc.peak.PerSec >= minRatio*base.peak.PerSec)
			}
		} else if base != nil {
			r.baseline = base.label + ": " + base.skip
		}
		b.add(r)
	}
	halfRow := func(id string, fc *fleetCommands) {
		if fc.half == nil {
			b.add(row{what: fmt.Sprintf("%s submit → result at half the peak, %s", id, fc.label), p99: fc.skip, target: "p99 < 10 ms"})
			return
		}
		what := fmt.Sprintf("%s submit → result stored at half the peak, %s, paced at %.0f/s, from when each command was due (n=%d%s", id, fc.label, fc.halfRate, len(fc.half.Latencies), problems(fc.half))
		if fc.half.Late > 0 {
			what += fmt.Sprintf(", %d sent late: every client busy", fc.half.Late)
		}
		what += fmt.Sprintf("; from the POST going out: p50 %s, p99 %s", ms(pct(fc.half.Posted, 50)), ms(pct(fc.half.Posted, 99)))
		b.add(row{what: what + ")", p50: lat(fc.half, 50), p99: lat(fc.half, 99),
			baseline: fmt.Sprintf("at the peak: p50 %s, p99 %s", lat(fc.peak, 50), lat(fc.peak, 99)),
			ratio:    ratio(pct(fc.half.Latencies, 99), pct(fc.peak.Latencies, 99)), target: "p99 < 10 ms",
			pass: pass(clean(fc.half) && pct(fc.half.Latencies, 99) < 10*time.Millisecond)})
	}
	peakRow("7a", sqlite, pg, "", 0)
	peakRow("7b", pg, sqlite, "", 0)
	peakRow("7c", two, pg, "≥ 1.6× one relay on PostgreSQL", 1.6)
	halfRow("7d", sqlite)
	halfRow("7e", pg)
	halfRow("7f", two)
	if localOnly != nil {
		b.note("7c not measured: two relays on one PostgreSQL, each given only the commands of the agents connected to it (not cross-replica delivery, which two replicas need and this relay does not have yet): %.0f/s, p50 %s, p99 %s (n=%d%s), against one relay's %s",
			localOnly.PerSec, lat(localOnly, 50), lat(localOnly, 99), len(localOnly.Latencies), problems(localOnly), perSecOf(pg.peak))
	}

	b.add(row{what: fmt.Sprintf("7g relay memory per idle connected agent, %d agents (heap in use + stacks after GC, in-process relay on SQLite, the agents in a child process; %d goroutines more, RSS %+.1f MB)",
		mem.n, mem.after.goroutines-mem.before.goroutines, float64(mem.after.rssKB-mem.before.rssKB)/1024),
		p99:      fmt.Sprintf("%.1f KB", mem.perAgent()/1024),
		baseline: fmt.Sprintf("the relay with no agent: %.1f MB", float64(mem.before.heapStack)/(1<<20)),
		ratio:    fmt.Sprintf("%.2f", float64(mem.after.heapStack)/float64(mem.before.heapStack)),
		target:   "< 100 KB", pass: pass(mem.perAgent() < 100*1024)})

	fanRow := func(id string, r, base *fleetload.FanOutReport, how string) {
		what := fmt.Sprintf("%s event fan-out, %d events from %d agents %s to %d subscribers of GET /v1/events (long poll), agent sends → subscriber has it (%d deliveries, %.0f/s%s)",
			id, sz.events, min(sz.events, sz.agents), how, sz.subscribers, r.Delivered, r.PerSec, missing(r))
		b.add(row{what: what, p50: ms(pct(r.Latencies, 50)), p99: ms(pct(r.Latencies, 99)),
			baseline: fmt.Sprintf("same events, 1 subscriber: p50 %s, p99 %s%s", ms(pct(base.Latencies, 50)), ms(pct(base.Latencies, 99)), missing(base)),
			ratio:    ratio(pct(r.Latencies, 99), pct(base.Latencies, 99)), target: "—"})
	}
	fanRow("7h", fan, fan1, fmt.Sprintf("at %.0f/s", sz.eventRate))
	b.add(row{what: fmt.Sprintf("7i event fan-out delivered, %d events handed to the agents at once, %d subscribers (in %s%s)", sz.events, sz.subscribers, burst.Span.Round(time.Millisecond), missing(burst)),
		p99:      fmt.Sprintf("%.0f deliveries/s (%.0f events/s)", burst.PerSec, burst.EventsPerSec),
		baseline: fmt.Sprintf("same events, 1 subscriber: %.0f events/s", burst1.EventsPerSec),
		ratio:    fmt.Sprintf("%.2f (events/s)", burst.EventsPerSec/burst1.EventsPerSec), target: "—"})
}

func orZero(r *fleetload.Report) int {
	if r == nil {
		return 0
	}
	return len(r.Latencies)
}

func problemsOf(r *fleetload.Report, f func(*fleetload.Report) string) string {
	if r == nil {
		return ""
	}
	return f(r)
}

func perSecOf(r *fleetload.Report) string {
	if r == nil {
		return "not measured"
	}
	return fmt.Sprintf("%.0f/s", r.PerSec)
}

func missing(r *fleetload.FanOutReport) string {
	if r.Missing+r.Duplicates == 0 {
		return ""
	}
	return fmt.Sprintf(", %d missing, %d twice", r.Missing, r.Duplicates)
}

// clusterCPU reads the CPU seconds of the cluster's postmaster, of the
// children it has reaped, and of its running children (the backends
// serving the relay), found through /proc by the port in its command
// line; 0 when they cannot be found.
func clusterCPU(c *pgtest.Cluster) func() float64 {
	u, err := url.Parse(c.URL("postgres"))
	if err != nil {
		return nil
	}
	port := "port=" + u.Port()
	return func() float64 {
		pids, _ := filepath.Glob("/proc/[0-9]*")
		master := 0
		for _, p := range pids {
			b, err := os.ReadFile(p + "/cmdline")
			if err != nil {
				continue
			}
			args := strings.Split(string(b), "\x00")
			if filepath.Base(args[0]) == "postgres" && slices.Contains(args, port) {
				master, _ = strconv.Atoi(filepath.Base(p))
				break
			}
		}
		if master == 0 {
			return 0
		}
		total := 0.0
		for _, p := range pids {
			pid, _ := strconv.Atoi(filepath.Base(p))
			f, ok := procStat(pid)
			if !ok || (pid != master && f.ppid != master) {
				continue
			}
			total += f.cpu
			if pid == master {
				total += f.childCPU
			}
		}
		return total
	}
}

// statFields are the parts of /proc/PID/stat clusterCPU reads.
type statFields struct {
	ppid          int
	cpu, childCPU float64 // seconds: utime+stime, cutime+cstime
}

func procStat(pid int) (statFields, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return statFields{}, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return statFields{}, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 15 {
		return statFields{}, false
	}
	num := func(k int) float64 { v, _ := strconv.ParseFloat(f[k], 64); return v / 100 } // USER_HZ 100
	ppid, _ := strconv.Atoi(f[1])
	return statFields{ppid: ppid, cpu: num(11) + num(12), childCPU: num(13) + num(14)}, true
}

// cpuText says what a command cost in CPU, the figure that hardly moves
// with the machine's other load.
func cpuText(fc *fleetCommands) string {
	if fc.pg == nil {
		return fmt.Sprintf("%s CPU per command, relay and load generator", ms(fc.cpuPerCmd))
	}
	return fmt.Sprintf("%s CPU per command, relay, load generator and PostgreSQL (%s of it)", ms(fc.cpuPerCmd), ms(fc.pgPerCmd))
}
