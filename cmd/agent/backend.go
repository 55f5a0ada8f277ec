package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/line-agent/line-agent/agent"
	"github.com/line-agent/line-agent/command"
	"github.com/line-agent/line-agent/component"
	"github.com/line-agent/line-agent/icloud"
	"github.com/line-agent/line-agent/macpeer"
	"github.com/line-agent/line-agent/macprobe"
	"github.com/line-agent/line-agent/messages"
	"github.com/line-agent/line-agent/messages/applescript"
	"github.com/line-agent/line-agent/messages/bridge"
	"github.com/line-agent/line-agent/messages/chatdb"
	"github.com/line-agent/line-agent/messages/confirm"
	"github.com/line-agent/line-agent/messages/sim"
	"github.com/line-agent/line-agent/messages/simhelper"
	"github.com/line-agent/line-agent/messages/spool"
	"github.com/line-agent/line-agent/messagesrestart"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// helperWait bounds how long the sim backend waits for its simulated helper
// to connect and finish the handshake, so Hello advertises the full set.
const helperWait = 5 * time.Second

// simSetup are the knobs of the simulated backend that only tests turn.
type simSetup struct {
	// NoHelper leaves the simulated helper out: the bridge has nobody.
	NoHelper bool
	// Unreachable handles for lookup_handle.
	Unreachable []string
	// Window is the edit/unsend window (default confirm.DefaultWindow).
	Window time.Duration
	// MaxAttachmentBytes, FetchTimeout and HTTPClient configure the spool.
	MaxAttachmentBytes int64
	FetchTimeout       time.Duration
	HTTPClient         *http.Client
	// AllowLoopbackForTests lets the spool fetch URLs on loopback (the
	// tests' httptest file server on 127.0.0.1). openBackend, the wiring
	// the binary runs, never sets it: production refuses loopback.
	AllowLoopbackForTests bool
	// Helper receives the simulated helper (nil with NoHelper).
	Helper func(*simhelper.Helper)
	// Messages receives the simulated Messages.
	Messages func(*sim.Messages)
	// Upload, when set, replaces the background upload plan (default: it
	// takes cfg.SimBackgroundDelay); Store receives the helper's store
	// (SetUploadPlan, Uploads).
	Upload *sim.UploadPlan
	Store  func(*simhelper.SimStore)
	// MaxImageBytes caps a background image (default 10 MB).
	MaxImageBytes int64
	// Account receives the simulated iCloud account.
	Account func(*icloud.SimAccount)
	// BackgroundPoll is how often chat.db is read while a background
	// uploads (default 500 ms).
	BackgroundPoll time.Duration
	// AttachmentWait, when set, replaces cfg.AttachmentWait.
	AttachmentWait time.Duration
	// Observer, when set, hears the bridge's helper round trips (metrics).
	Observer bridge.RoundTripObserver
}

// openBackend builds Messages as the configuration names it: the simulated
// Messages (its own chat.db under the data directory) with a simulated
// private-API helper dialing the bridge, or the real one. Either way inbound
// goes through the same chat.db tailer and every command is confirmed by
// the same chat.db confirmer.
func openBackend(ctx context.Context, cfg agent.Config, log *slog.Logger) (agent.Backend, error) {
	return openObservedBackend(ctx, cfg, log, nil)
}

// openObservedBackend is openBackend whose bridge tells obs (nil: no one)
// about every helper round trip: `line-agent run` passes its metrics.
func openObservedBackend(ctx context.Context, cfg agent.Config, log *slog.Logger, obs bridge.RoundTripObserver) (agent.Backend, error) {
	switch cfg.Driver {
	case "sim":
		return openSim(ctx, cfg, log, simSetup{Observer: obs})
	case "macos":
		return openMacOS(ctx, cfg, log, obs)
	}
	return agent.Backend{}, usageError("unknown driver %q: want sim or macos", cfg.Driver)
}

// closers closes things in reverse order, once.
type closers struct {
	once sync.Once
	fs   []func() error
}

func (c *closers) add(f func() error) { c.fs = append(c.fs, f) }

func (c *closers) close() error {
	var err error
	c.once.Do(func() {
		for i := len(c.fs) - 1; i >= 0; i-- {
			err = errors.Join(err, c.fs[i]())
		}
	})
	return err
}

func openSim(ctx context.Context, cfg agent.Config, log *slog.Logger, setup simSetup) (_ agent.Backend, err error) {
	dir := filepath.Join(cfg.DataDir, "sim")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return agent.Backend{}, err
	}
	var cl closers
	defer func() {
		if err != nil {
			_ = cl.close()
		}
	}()
	m, err := sim.New(ctx, sim.Options{
		// A fresh seed each start: GUIDs drawn after a restart must not
		// repeat the ones already in chat.db.
		Dir: dir, Line: cfg.SimLine, Seed: uint64(time.Now().UnixNano()),
		Remote: sim.RemoteOptions{Delay: cfg.SimReplyDelay, Logger: log.With("component", "sim-remote")},
		Logger: log.With("component", "sim"),
	})
	if err != nil {
		return agent.Backend{}, fmt.Errorf("simulated Messages: %w", err)
	}
	cl.add(m.Close)
	// Background uploads a killed agent left behind carry on, as they do
	// inside Messages on a Mac while the agent is down.
	resumed, err := m.Store.ResumeUploads(ctx)
	if err != nil {
		log.Warn("some simulated background uploads could not be resumed", "err", err)
	}
	cl.add(func() error {
		for _, u := range resumed {
			u.Stop() // keeps its record: the next start carries it on
		}
		return nil
	})
	if setup.Messages != nil {
		setup.Messages(m)
	}
	path := m.ChatDBPath()
	if cfg.ChatDB != "" {
		path = cfg.ChatDB
	}
	be := agent.Backend{
		Name:   "sim",
		Tailer: chatdb.NewTailer(chatdb.TailerOptions{Path: path, Logger: log.With("component", "chatdb")}),
		Lines:  []string{cfg.SimLine},
		Close:  cl.close,
	}

	// chat.db's reader, the one confirmer every command is proved by, and
	// the spool that takes files in; then the bridge, its simulated
	// helper, and the driver given all of them.
	reader, err := chatdb.Open(m.ChatDBPath(), chatdb.Options{Line: cfg.SimLine, Logger: log.With("component", "confirm")})
	if err != nil {
		return agent.Backend{}, err
	}
	cl.add(reader.Close)
	be.ChatDB = reader
	conf := confirm.New(reader, confirm.Options{Window: setup.Window, Logger: log.With("component", "confirm")})
	be.Attachments = attachmentSource(cfg, reader, m.Store.AttachmentsDir(), "")
	if setup.AttachmentWait > 0 {
		be.Attachments.Wait = setup.AttachmentWait
	}
	sp := spool.New(spool.Options{Dir: filepath.Join(dir, "spool"), MaxBytes: setup.MaxAttachmentBytes,
		FetchTimeout: setup.FetchTimeout, HTTPClient: setup.HTTPClient, AllowLoopbackForTests: setup.AllowLoopbackForTests})
	bctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	cl.add(func() error { cancel(); return nil })
	// No Verifier: the simulated helper is a goroutine of this process,
	// so the sim takes any local peer for the helper (docs/security.md).
	br, err := bridge.Listen(bctx, bridge.Options{Addr: "127.0.0.1:0", Logger: log.With("component", "bridge"), Observer: setup.Observer})
	if err != nil {
		return agent.Backend{}, fmt.Errorf("bridge: %w", err)
	}
	cl.add(br.Close)
	if !setup.NoHelper {
		// The simulated private-API helper inside the simulated Messages,
		// dialing the bridge; Hello waits (bounded) for its handshake so
		// it advertises the full set.
		plan := sim.UploadPlan{Duration: cfg.SimBackgroundDelay}
		if setup.Upload != nil {
			plan = *setup.Upload
		}
		store := simhelper.NewSimStore(m.Store, simhelper.SimStoreOptions{
			Latency: cfg.SimLatency, Unreachable: setup.Unreachable, OnSent: m.Remote.Deliver, Reader: reader,
			Upload: plan, Logger: log.With("component", "simhelper"),
		})
		cl.add(func() error { store.Close(); return nil })
		if setup.Store != nil {
			setup.Store(store)
		}
		hopts := simhelper.Options{Addr: br.Addr().String(), Messages: store,
			Logger: log.With("component", "simhelper")}
		chaosHelper(&hopts)
		h := simhelper.New(hopts)
		hctx, hcancel := context.WithCancel(bctx)
		done := make(chan struct{})
		go func() { defer close(done); _ = h.Run(hctx) }()
		// Stop the helper before the store it writes with closes.
		cl.add(func() error { hcancel(); <-done; return nil })
		if setup.Helper != nil {
			setup.Helper(h)
		}
		wctx, wcancel := context.WithTimeout(ctx, helperWait)
		err := h.WaitConnects(wctx, 1)
		if err == nil {
			err = br.Wait(wctx)
		}
		wcancel()
		if err != nil {
			log.Warn("the simulated helper did not connect in time; commands needing it fail until it does", "err", err)
		}
	}
	bd := bridge.NewDriver(br, bridge.DriverOptions{Confirm: conf, Stager: sp, Backgrounds: reader,
		Images: spoolImages{sp, setup.MaxImageBytes}, Tracker: icloud.Options{Poll: setup.BackgroundPoll, Logger: log.With("component", "icloud")}})
	be.Driver = accountGuard{line: cfg.SimLine, d: bd}
	be.Reconcile = conf
	account := icloud.NewSimAccount()
	if setup.Account != nil {
		setup.Account(account)
	}
	health := icloud.NewHealth(account, nil)
	// The simulated Messages runs in this process and needs no Automation
	// permission: both hold from the start.
	opened := timestamppb.Now()
	simMessages := &linev1.HealthComponent{Name: component.Messages, Status: linev1.HealthStatus_HEALTH_STATUS_OK, Detail: "the simulated Messages is running", Since: opened}
	simAutomation := &linev1.HealthComponent{Name: component.Automation, Status: linev1.HealthStatus_HEALTH_STATUS_OK, Detail: "the simulated Messages needs no Automation permission", Since: opened}
	be.Components = func() []*linev1.HealthComponent {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return []*linev1.HealthComponent{br.Health(), simMessages, simAutomation, health.Account(ctx)}
	}
	return be, nil
}

// openMacOS is the real Messages: the private-API helper's bridge first
// (everything, while the helper is connected), AppleScript second (plain
// texts and files, even without the helper), both confirmed through a
// read-only view of chat.db.
func openMacOS(ctx context.Context, cfg agent.Config, log *slog.Logger, obs bridge.RoundTripObserver) (_ agent.Backend, err error) {
	path := cfg.ChatDB
	if path == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return agent.Backend{}, err
		}
		path = filepath.Join(home, "Library", "Messages", "chat.db")
	}
	if len(cfg.Lines) == 0 {
		return agent.Backend{}, usageError("driver macos needs the lines this Mac's Messages account serves: set LINE_AGENT_LINES or --lines")
	}
	var cl closers
	defer func() {
		if err != nil {
			_ = cl.close()
		}
	}()
	// chat.db's reader, the one confirmer every command is proved by, and
	// the spool that takes files in; then the bridge's driver and the
	// AppleScript driver given them, composed helper first.
	reader, err := chatdb.Open(path, chatdb.Options{Line: cfg.Lines[0], Logger: log.With("component", "confirm")})
	if err != nil {
		return agent.Backend{}, fmt.Errorf("chat.db (the agent needs Full Disk Access): %w", err)
	}
	cl.add(reader.Close)
	conf := confirm.New(reader, confirm.Options{Logger: log.With("component", "confirm")})
	// Zero options: the fetch guard refuses loopback, private and
	// link-local addresses (spool.Fetcher), as does the sender's.
	sp := spool.New(spool.Options{})
	bctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	cl.add(func() error { cancel(); return nil })
	helperAddr := cfg.HelperAddr
	if helperAddr == "" {
		helperAddr = bridge.DefaultAddr()
	}
	// Only Apple's Messages (the helper is loaded into it) may be the
	// helper: any other local process dialing the port is refused.
	var verifier bridge.PeerVerifier
	if cfg.HelperPeerCheck {
		verifier = macpeer.New(macpeer.Options{Lsof: cfg.Lsof, PS: cfg.PS, Codesign: cfg.Codesign})
	} else {
		log.Warn("LINE_AGENT_HELPER_PEER_CHECK is off: any local process that dials the helper port is taken for the helper")
	}
	// Writes to a BlueBubbles helper go by its answers unless the
	// operator fell back to the fixed 200 ms (docs/bridge.md, "Pacing").
	pacing, err := bridge.ParsePacing(cfg.HelperPacing)
	if err != nil {
		return agent.Backend{}, usageError("LINE_AGENT_HELPER_PACING: %v", err)
	}
	br, err := bridge.Listen(bctx, bridge.Options{Addr: helperAddr, Logger: log.With("component", "bridge"), Observer: obs, Verifier: verifier, Pacing: pacing})
	if err != nil {
		return agent.Backend{}, fmt.Errorf("bridge (is BlueBubbles Server holding the port?): %w", err)
	}
	cl.add(br.Close)
	bd := bridge.NewDriver(br, bridge.DriverOptions{Confirm: conf, Stager: sp, Backgrounds: reader,
		Images: spoolImages{sp, 0}, Tracker: icloud.Options{Logger: log.With("component", "icloud")}})
	probes := newMacProbes(cfg)
	// A hanging Messages (osascript timing out, the helper not answering)
	// is restarted, within LINE_AGENT_MESSAGES_RESTARTS_PER_HOUR and
	// _RESTART_MIN_INTERVAL (docs/operations.md, "Messages restarts").
	// Each restart also goes to the relay as an event.
	restarts := make(chan *linev1.Event, 8)
	restarter := messagesrestart.New(messagesrestart.Options{
		Actions: messagesrestart.Mac{Osascript: cfg.Osascript, Killall: cfg.Killall, OpenPath: cfg.Open, PS: cfg.PS},
		PerHour: cfg.MessagesRestartsPerHour, MinInterval: cfg.MessagesRestartMinInterval,
		Unanswered: br.Unanswered, Restarted: probes.messages.Recheck, Logger: log.With("component", "messages-restart"),
		Report: func(r messagesrestart.Restart) { reportRestart(restarts, r, log) },
	})
	sender, err := applescript.New(applescript.Options{ChatDB: reader, Confirm: conf, OsascriptPath: cfg.Osascript, Runs: restarter, Logger: log.With("component", "applescript")})
	if err != nil {
		return agent.Backend{}, err
	}
	probes.run(bctx)
	go restarter.Run(bctx)
	lines := checkLines(ctx, reader, cfg.Lines)
	if lines.status != linev1.HealthStatus_HEALTH_STATUS_OK {
		log.Warn(lines.detail)
	}
	health := icloud.NewHealth(icloud.MacAccount{}, nil)
	home, _ := os.UserHomeDir()
	return agent.Backend{
		Name:        "macos",
		Attachments: attachmentSource(cfg, reader, filepath.Join(home, "Library", "Messages", "Attachments"), home),
		Driver:      messages.Compose(bd, automationWatch{Sender: sender, refused: probes.automation.Recheck}),
		Events:      restarts,
		Tailer:      chatdb.NewTailer(chatdb.TailerOptions{Path: path, Logger: log.With("component", "chatdb")}),
		Lines:       cfg.Lines,
		ChatDB:      reader,
		Reconcile:   conf,
		Components: func() []*linev1.HealthComponent {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			return []*linev1.HealthComponent{br.Health(), lines.component(), restarter.Component(probes.messages.Component()), probes.automation.Component(),
				mergeComponents(component.ICloud, labelled{"iMessage", probes.account.Component()}, labelled{"iCloud for chat backgrounds", health.Account(ctx)})}
		},
		Close: cl.close,
	}, nil
}

// attachmentSource serves attachment files from chat.db's rows, only from
// the configured attachments folder, else the backend's own (Messages' on
// a Mac, the simulated one's beside its chat.db).
func attachmentSource(cfg agent.Config, r *chatdb.Reader, dir, home string) *agent.AttachmentSource {
	if cfg.AttachmentsDir != "" {
		dir = cfg.AttachmentsDir
	}
	return &agent.AttachmentSource{Lookup: r, Dir: dir, Home: home, Wait: cfg.AttachmentWait}
}

// linesCheck compares the configured lines with the addresses this Mac's
// Messages account has used, once at start: a line the account never used
// may be a typo (or a brand-new account), so it is reported, not refused.
type linesCheck struct {
	status linev1.HealthStatus
	detail string
	// since is when the check ran: it holds from then on.
	since *timestamppb.Timestamp
}

func checkLines(ctx context.Context, r *chatdb.Reader, lines []string) linesCheck {
	c := judgeLines(ctx, r, lines)
	c.since = timestamppb.Now()
	return c
}

func judgeLines(ctx context.Context, r *chatdb.Reader, lines []string) linesCheck {
	addrs, err := r.AccountAddresses(ctx)
	if err != nil {
		return linesCheck{status: linev1.HealthStatus_HEALTH_STATUS_DEGRADED, detail: "cannot read the account's addresses from chat.db: " + err.Error()}
	}
	known := map[string]bool{}
	for _, a := range addrs {
		known[command.NormalizeLine(a)] = true
	}
	var unseen []string
	for _, l := range lines {
		if !known[command.NormalizeLine(l)] {
			unseen = append(unseen, l)
		}
	}
	if len(unseen) > 0 {
		return linesCheck{status: linev1.HealthStatus_HEALTH_STATUS_DEGRADED, detail: fmt.Sprintf("configured lines %s were never used by this Mac's Messages account (it has used %s): check LINE_AGENT_LINES", strings.Join(unseen, ", "), strings.Join(addrs, ", "))}
	}
	return linesCheck{status: linev1.HealthStatus_HEALTH_STATUS_OK, detail: "every configured line is an address of this Mac's Messages account"}
}

func (c linesCheck) component() *linev1.HealthComponent {
	return &linev1.HealthComponent{Name: component.Lines, Status: c.status, Detail: c.detail, Since: c.since}
}

// accountGuard refuses a command for a line the simulated Messages account
// does not send as (the agent was configured with more lines than the
// account has): MISROUTED, before anything is sent. It forwards Resume to
// the driver it guards.
type accountGuard struct {
	line string
	d    *bridge.Driver
}

var (
	_ messages.Driver    = accountGuard{}
	_ messages.Resumable = accountGuard{}
	_ messages.Offerer   = accountGuard{}
)

func (g accountGuard) Capabilities() []linev1.Capability { return g.d.Capabilities() }

// Offered is the bridge driver's offer with its helper connected.
func (g accountGuard) Offered() []linev1.Capability { return g.d.Offered() }

func (g accountGuard) Execute(ctx context.Context, cmd *linev1.Command, report func(*linev1.CommandUpdate)) (*linev1.Snapshot, error) {
	if err := g.misrouted(cmd); err != nil {
		return nil, err
	}
	return g.d.Execute(ctx, cmd, report)
}

// Resume continues a background upload interrupted by a restart.
func (g accountGuard) Resume(ctx context.Context, cmd *linev1.Command, checkpoint []byte, report func(*linev1.CommandUpdate)) (*linev1.Snapshot, error) {
	if err := g.misrouted(cmd); err != nil {
		return nil, err
	}
	return g.d.Resume(ctx, cmd, checkpoint, report)
}

func (g accountGuard) misrouted(cmd *linev1.Command) error {
	if l := cmd.GetLine(); l != "" && command.NormalizeLine(l) != command.NormalizeLine(g.line) {
		return command.Errorf(linev1.ErrorCode_ERROR_CODE_MISROUTED, "line %s is not this Messages account's (it sends as %s)", l, g.line)
	}
	return nil
}

// spoolImages is the spool's image intake as the bridge's ImageStager:
// JPEG, PNG, HEIC or HEIF by content, the declared type checked, the cap
// held while downloading, staged 0600 in the spool's 0700 images folder.
type spoolImages struct {
	sp  *spool.Spool
	max int64
}

func (s spoolImages) StageImage(ctx context.Context, a bridge.Asset) (bridge.StagedImage, func(), error) {
	img, cleanup, err := s.sp.Image(ctx, spool.ImageSource{Data: a.Data, URL: a.URL, MimeType: a.MimeType}, spool.ImageLimits{MaxBytes: s.max})
	if err != nil {
		return bridge.StagedImage{}, nil, err
	}
	return bridge.StagedImage{Path: img.Path, MimeType: "image/" + img.Format}, cleanup, nil
}

// How often the Mac's probed components look (docs/operations.md,
// "Health"): Messages running is a cheap ps, every 15 s; the Automation
// permission and the iMessage account each cost an osascript run and
// change rarely, every 5 minutes, but every 30 s while they are not OK,
// so that a permission granted or an account signed in shows soon.
const (
	messagesEvery  = 15 * time.Second
	osascriptEvery = 5 * time.Minute
	probeRetry     = 30 * time.Second
)

// macProbes are the macOS backend's background-probed components.
type macProbes struct {
	messages, automation, account *agent.Probed
}

func newMacProbes(cfg agent.Config) *macProbes {
	ps := macprobe.PS{Path: cfg.PS, Timeout: 5 * time.Second}
	osa := applescript.NewProbe(applescript.ProbeOptions{OsascriptPath: cfg.Osascript, Timeout: 20 * time.Second})
	return &macProbes{
		messages:   agent.NewProbed(agent.ProbedOptions{Name: component.Messages, Probe: ps.Messages, Every: messagesEvery}),
		automation: agent.NewProbed(agent.ProbedOptions{Name: component.Automation, Probe: osa.Automation, Every: osascriptEvery, Retry: probeRetry, Timeout: 20 * time.Second}),
		account:    agent.NewProbed(agent.ProbedOptions{Name: component.ICloud, Probe: osa.Account, Every: osascriptEvery, Retry: probeRetry, Timeout: 20 * time.Second}),
	}
}

// run starts their loops; they end with ctx (the backend's Close).
func (m *macProbes) run(ctx context.Context) {
	for _, p := range []*agent.Probed{m.messages, m.automation, m.account} {
		go p.Run(ctx)
	}
}

// automationWatch is the AppleScript sender, telling the automation
// component to look again at once when a send is refused for the
// permission (-1743): the refusal is news the next round would bring
// minutes later.
type automationWatch struct {
	*applescript.Sender
	refused func()
}

func (w automationWatch) Execute(ctx context.Context, cmd *linev1.Command, report func(*linev1.CommandUpdate)) (*linev1.Snapshot, error) {
	snap, err := w.Sender.Execute(ctx, cmd, report)
	if applescript.NotAuthorized(err) {
		w.refused()
	}
	return snap, err
}

// labelled is one part of a merged component, with what it is about.
type labelled struct {
	label string
	c     *linev1.HealthComponent
}

// mergeComponents reports several checks under one name: the worst status,
// every part's detail with its label, and since when the worst has held
// (the earliest Since among the parts at that status). The parts' fixes
// go last, together, in Fix and after "; fix: " in the detail
// (component.Joined): a fix left inside its part's detail would have a
// reader that splits at "; fix: " take the parts after it for the fix.
func mergeComponents(name string, parts ...labelled) *linev1.HealthComponent {
	out := &linev1.HealthComponent{Name: name}
	var checks []component.Check
	for _, p := range parts {
		pc := component.Reported(p.c, false)
		pc.Detail = p.label + ": " + pc.Detail
		checks = append(checks, pc)
		switch st := p.c.GetStatus(); {
		case st > out.Status:
			out.Status, out.Since = st, p.c.GetSince()
		case st == out.Status && p.c.GetSince().AsTime().Before(out.GetSince().AsTime()):
			out.Since = p.c.GetSince()
		}
	}
	out.Detail, out.Fix = component.Joined(" | ", checks...)
	return out
}

// reportRestart hands a Messages restart to the agent as an event
// (MessagesRestartedEvent). The restarts are bounded (a few an hour), so
// the channel never fills in practice; if it does, the restart is still
// in the log and in health, and the event is dropped rather than block
// the restarter.
func reportRestart(ch chan<- *linev1.Event, r messagesrestart.Restart, log *slog.Logger) {
	at := r.At.UTC()
	ev := &linev1.Event{Key: "agent/messages_restarted/" + at.Format(time.RFC3339Nano), Date: timestamppb.New(at),
		Payload: &linev1.Event_MessagesRestarted{MessagesRestarted: &linev1.MessagesRestartedEvent{Reason: r.Reason, Outcome: r.Outcome, Running: r.Running}}}
	select {
	case ch <- ev:
	default:
		log.Warn("the Messages restart event was dropped: too many waiting", "key", ev.GetKey())
	}
}
