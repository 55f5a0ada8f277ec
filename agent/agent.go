// Package agent is line-agent's core: the session with the relay, the
// journal that makes commands run at most once and events survive outages,
// the dispatcher that runs commands against Messages, and the health that
// explains the agent to the relay. It depends on Messages only through a
// Backend, so the same code runs against the real Messages on a Mac and the
// simulated one anywhere.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/line-agent/line-agent/component"
	"github.com/line-agent/line-agent/messages"
	"github.com/line-agent/line-agent/messages/chatdb"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// Version is the agent's version, set at build time with -ldflags.
var Version = "dev"

// Backend is Messages as the agent sees it: a Driver for commands, the chat.db
// it writes (read by the agent's own tailer) and the lines its account serves.
type Backend struct {
	// Name is "macos" or "sim", reported in Hello.
	Name   string
	Driver messages.Driver
	// Tailer turns chat.db changes into events.
	Tailer Tailer
	// Lines are the account's addresses, used when the configuration names none.
	Lines []string
	// Components adds backend health (helper, iCloud...); may be nil.
	Components func() []*linev1.HealthComponent
	// ChatDB answers the read commands (get_message, get_chat) from the
	// chat.db Messages writes; nil refuses them as UNSUPPORTED.
	ChatDB ChatReader
	// Attachments, when set, lets the relay fetch inbound attachment
	// files (fetch_attachment); nil leaves that capability out.
	Attachments *AttachmentSource
	// Reconcile looks in chat.db for what a command interrupted by a crash
	// did, so it is settled by what happened (docs/reliability.md); nil
	// settles every interrupted command IN_DOUBT.
	Reconcile Reconciler
	// Events are the backend's own events, not chat.db's (a Messages
	// restart): each is stored in the outbox and sent to the relay like
	// chat.db's. nil sends none.
	Events <-chan *linev1.Event
	// Close releases the backend; may be nil.
	Close func() error
}

// Sink receives events from a Tailer with the cursor after them; the
// Journal is one.
type Sink = chatdb.Sink

var (
	_ Tailer = (*chatdb.Tailer)(nil)
	_ Sink   = (*Journal)(nil)
	_ Marker = (*chatdb.Reader)(nil)
)

// Tailer follows chat.db from a cursor and commits events to a Sink; the
// journal is the Sink, so events and cursor are stored together.
type Tailer interface {
	Run(ctx context.Context, start []byte, sink Sink) error
	Health() *linev1.HealthComponent
}

// Options configures an Agent.
type Options struct {
	Config  Config
	Backend Backend
	Logger  *slog.Logger
	// Backoff overrides the reconnect schedule (tests); zero uses Config's.
	Backoff *Backoff
	// Metrics, when set, counts what the agent does and is served at
	// Config.MetricsAddr (metrics.go); nil keeps no metrics.
	Metrics *Metrics
}

// Agent is one running line-agent.
type Agent struct {
	o       Options
	log     *slog.Logger
	journal *Journal
	quotas  *Quotas
	creds   *Credentials
	lines   []string
	// own are the disk and outbox components.
	own *ownComponents
}

// New loads the credentials and opens the journal; Run does the rest.
func New(o Options) (*Agent, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Config.DataDir == "" {
		return nil, errors.New("agent: no data directory configured")
	}
	if _, err := o.Config.MetricsListenAddr(); err != nil {
		return nil, err
	}
	if r := o.Config.JournalRetention; r != 0 && r < MinJournalRetention {
		return nil, fmt.Errorf("agent: LINE_AGENT_JOURNAL_RETENTION is %v: it must be at least %v, or a record could vanish while its command may still be redelivered", r, MinJournalRetention)
	}
	creds, err := LoadCredentials(o.Config.DataDir)
	if err != nil {
		return nil, err
	}
	j, err := OpenJournal(o.Config.DataDir, o.Config.MaxOutbox)
	if err != nil {
		return nil, err
	}
	if o.Metrics != nil {
		j.obs = o.Metrics
	}
	if r := o.Config.JournalRetention; r != 0 {
		j.SetRetention(r)
	}
	lines := o.Config.Lines
	if len(lines) == 0 {
		lines = o.Backend.Lines
	}
	if len(lines) == 0 {
		j.Close()
		return nil, errors.New("agent: no lines to serve: configure LINE_AGENT_LINES")
	}
	if j.Created() {
		// Enrollment creates state.db, so an enrolled agent without one lost
		// it: its event sequences restart at 1 below what the relay stored.
		// The new epoch in Hello tells the relay; the operator must hear it.
		o.Logger.Warn(fmt.Sprintf("state.db was missing: new journal epoch %s; events are numbered from 1 again", j.Epoch()),
			"data_dir", o.Config.DataDir, "agent", creds.AgentID)
		// chat.db is read again from where the relay's acknowledgements
		// stood, not from its end (tailstart.go).
		if err := j.expectRelayCursor(context.Background()); err != nil {
			j.Close()
			return nil, err
		}
	}
	// chat.db tells the quotas who this Mac has talked to; a backend
	// without one leaves that to the journal.
	convs, _ := o.Backend.ChatDB.(Conversations)
	quotas := NewQuotas(j, QuotaOptions{
		Limits: QuotaLimits{Sends: o.Config.QuotaSends, NewConversations: o.Config.QuotaNewConversations},
		Lines:  lines, Conversations: convs, Logger: o.Logger,
	})
	return &Agent{o: o, log: o.Logger, journal: j, quotas: quotas, creds: creds, lines: lines, own: newOwnComponents(o.Config, j)}, nil
}

// Run serves until ctx is cancelled (hard stop: in-flight commands are
// abandoned and settled as IN_DOUBT at the next start) or stop is closed
// (staged: stop taking commands, finish in-flight ones within the grace
// period, say Goodbye).
func (a *Agent) Run(ctx context.Context, stop <-chan struct{}) error {
	defer a.journal.Close()
	if a.o.Backend.Close != nil {
		defer a.o.Backend.Close()
	}
	cfg := a.o.Config
	_, resumable := a.o.Backend.Driver.(messages.Resumable)
	forgotten, err := a.journal.ForgetUnstarted(ctx)
	if err != nil {
		return err
	}
	if len(forgotten) > 0 {
		a.log.Info("commands accepted but never started before the last stop are forgotten; the relay's redelivery runs them", "count", len(forgotten))
	}
	var rec *reconciler
	if a.o.Backend.Reconcile != nil {
		// Before SettleInterrupted, which settles IN_DOUBT whatever is left.
		rec = newReconciler(a.o.Backend.Reconcile, a.journal, a.log, cfg.ReconcileSettle, cfg.ReconcileWait)
		if err := rec.first(ctx); err != nil {
			return err
		}
	}
	ids, resume, err := a.journal.SettleInterrupted(ctx, func(*linev1.Command) bool { return resumable })
	if err != nil {
		return err
	}
	if len(ids) > 0 {
		a.log.Warn("commands interrupted by the last stop are settled as IN_DOUBT, not re-run", "ids", ids)
	}

	target := RelayTarget(cfg, a.creds)
	addr := target.Addr
	transport := &Transport{}
	target.Transport = transport
	cc, err := Dial(target)
	if err != nil {
		return err
	}
	defer cc.Close()

	runCtx, cancelRun := context.WithCancel(ctx)
	defer cancelRun()

	tokens := &tokenSource{dir: cfg.DataDir, client: linev1.NewLineRelayClient(cc), creds: a.creds,
		grace: cfg.AuthGrace, relay: addr, log: a.log}
	go tokens.keepFresh(runCtx, func(err error) { a.log.Warn("access token renewal failed; will retry", "err", err) })

	driver, sink := a.o.Backend.Driver, Sink(a.journal)
	if src := a.o.Backend.Attachments; src != nil {
		att := newAttachmentServer(*src, linev1.NewLineRelayClient(cc), tokens)
		driver, sink = attachmentDriver{Driver: driver, fetch: att}, notifyingSink{Sink: a.journal, after: att.waiters.notify}
	}
	var tail *tailStart
	if a.o.Backend.Tailer != nil {
		tail = newTailStart(a.o.Backend.Tailer, sink, a.journal, a.log)
	}
	// The chat.db that answers reads also marks each command's start.
	marker, _ := a.o.Backend.ChatDB.(Marker)
	var sess *Session
	disp := NewDispatcher(runCtx, DispatcherOptions{
		Driver: driver, Journal: a.journal, Quotas: a.quotas, Lines: a.lines, ChatDB: a.o.Backend.ChatDB, Marker: marker,
		Resolve:  newBlobFetcher(linev1.NewLineRelayClient(cc), tokens).resolve,
		Emit:     func(f *linev1.AgentFrame) { sess.Emit(f) },
		MaxChats: cfg.MaxChats, MaxQueued: cfg.MaxQueued, Logger: a.log,
		Observer: a.o.Metrics.commandObserver(),
	})
	bo := Backoff{Base: cfg.BackoffBase, Cap: cfg.BackoffCap}
	if a.o.Backoff != nil {
		bo = *a.o.Backoff
	}
	if bo.Base <= 0 {
		bo.Base = time.Second
	}
	if bo.Cap <= 0 {
		bo.Cap = time.Minute
	}
	hostname, _ := os.Hostname()
	sess = NewSession(SessionOptions{
		Conn:      cc,
		Transport: transport,
		Tokens:    tokens,
		Journal:   a.journal,
		Submit:    disp.Submit,
		Health:    a.health(nil),
		Hello: func() *linev1.Hello {
			return &linev1.Hello{
				AgentId: a.creds.AgentID, Version: Version, Lines: a.lines, Capabilities: driver.Capabilities(),
				Hostname: hostname, OsVersion: runtime.GOOS + "/" + runtime.GOARCH, Driver: a.o.Backend.Name,
			}
		},
		Backoff: bo,
		Logger:  a.log,
	})
	if tail != nil {
		sess.o.OnWelcome = tail.welcome
	}
	healthFn := a.health(sess)
	sess.o.Health = healthFn
	if path := cfg.StatusSocketPath(); path != "" {
		// The same report, on the Mac (docs/operations.md): a socket
		// that cannot listen is logged, not fatal; the relay still hears.
		if err := serveStatus(runCtx, path, healthFn); err != nil {
			a.log.Warn("no local status socket", "err", err)
		}
	}
	defer a.o.Metrics.start(runCtx, cfg, metricSources{journal: a.journal, quotas: a.quotas, session: sess}, a.log)()
	// Only now: a resumed command may finish at once and emit through sess.
	for _, r := range resume {
		disp.Resume(r.Command, r.Checkpoint)
	}
	if rec != nil {
		rec.background(runCtx, disp)
	}

	var wg sync.WaitGroup
	tailErr := make(chan error, 1)
	if tail != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := tail.run(runCtx); err != nil && runCtx.Err() == nil {
				tailErr <- fmt.Errorf("chat.db tailer: %w", err)
			}
		}()
	}
	if evs := a.o.Backend.Events; evs != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pumpEvents(runCtx, evs, a.journal, a.log)
		}()
	}
	if tail != nil {
		// A fresh journal's reader fixes where chat.db's news begins; until
		// it has, a message would be taken for history. Hello (and a
		// healthy agent at the relay) only after that.
		tail.awaitStart(runCtx, startWait)
	}
	sessDone := make(chan struct{})
	go func() {
		defer close(sessDone)
		_ = sess.Run(runCtx)
	}()
	a.log.Info("line-agent running", "agent", a.creds.AgentID, "relay", addr, "driver", a.o.Backend.Name, "lines", a.lines)

	var runErr error
	select {
	case <-ctx.Done():
	case err := <-tailErr:
		runErr = err
	case <-stop:
		a.drain(ctx, disp)
	}
	sess.Goodbye()
	select {
	case <-sessDone:
	case <-time.After(5 * time.Second):
	case <-ctx.Done():
	}
	cancelRun()
	<-sessDone
	disp.Wait()
	wg.Wait()
	return runErr
}

// drain stops taking commands and waits for in-flight ones within the grace
// period or until the hard stop.
func (a *Agent) drain(ctx context.Context, d *Dispatcher) {
	grace := a.o.Config.ShutdownGrace
	if grace <= 0 {
		grace = 20 * time.Second
	}
	a.log.Info("draining: no new commands; waiting for in-flight ones", "in_flight", d.InFlight(), "grace", grace)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-d.Drain():
		a.log.Info("drained")
	case <-t.C:
		a.log.Warn("grace period over; abandoning in-flight commands", "in_flight", d.InFlight())
	case <-ctx.Done():
	}
}

// health returns the HealthCheck answer: every component and the worst status.
func (a *Agent) health(sess *Session) func(string) *linev1.HealthReport {
	return func(id string) *linev1.HealthReport {
		var comps []*linev1.HealthComponent
		if sess != nil {
			comps = append(comps, sess.Component())
		}
		comps = append(comps, a.journalComponent())
		comps = append(comps, a.own.list(sess)...)
		var headroom []*linev1.LineHeadroom
		if a.quotas != nil {
			qc, hr := a.quotas.Health()
			comps, headroom = append(comps, qc), hr
		}
		if a.o.Backend.Tailer != nil {
			comps = append(comps, a.o.Backend.Tailer.Health())
		}
		if a.o.Backend.Components != nil {
			comps = append(comps, a.o.Backend.Components()...)
		}
		worst := linev1.HealthStatus_HEALTH_STATUS_OK
		for _, c := range comps {
			if c.GetStatus() > worst {
				worst = c.GetStatus()
			}
		}
		return &linev1.HealthReport{CheckId: id, Status: worst, Components: comps, At: timestamppb.Now(), Headroom: headroom}
	}
}

func (a *Agent) journalComponent() *linev1.HealthComponent {
	n := a.journal.OutboxLen()
	if err, since := a.journal.WriteErr(); err != nil {
		// Nothing can be recorded: commands are refused UNAVAILABLE and
		// chat.db reading stalls, until a write succeeds again.
		return &linev1.HealthComponent{Name: component.Journal, Status: linev1.HealthStatus_HEALTH_STATUS_DOWN, Since: timestamppb.New(since),
			Detail: fmt.Sprintf("state.db writes failing: %v (commands are refused until a write succeeds; %d events awaiting ack)", err, n)}
	}
	hc := &linev1.HealthComponent{Name: component.Journal, Status: linev1.HealthStatus_HEALTH_STATUS_OK, Detail: fmt.Sprintf("%d events awaiting ack", n)}
	if n >= a.journal.maxOutbox {
		hc.Status = linev1.HealthStatus_HEALTH_STATUS_DEGRADED
		hc.Detail += " (outbox full: chat.db reading paused until the relay acks)"
	}
	return hc
}
