package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/line-agent/line-agent/agent"
	"github.com/line-agent/line-agent/component"
	"github.com/line-agent/line-agent/icloud"
	"github.com/line-agent/line-agent/installer"
	"github.com/line-agent/line-agent/macprobe"
	"github.com/line-agent/line-agent/messages/applescript"
	"github.com/line-agent/line-agent/messages/bridge"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// `line-agent doctor` checks everything a Mac needs for the agent, one
// verdict a check, each with the exact fix (docs/operations.md, "Doctor").
// When the agent runs, its own report answers what it knows (it is the
// process whose permissions count: Full Disk Access and Automation are
// granted per program, and doctor may be running in a Terminal that has
// other grants); what it does not know doctor looks at itself. Off a Mac,
// a check of something only a Mac has is SKIP, unless its program was
// configured (that is how the tests run them against fakes).

// Verdicts of a doctor check.
const (
	verdictPass = "PASS"
	verdictWarn = "WARN"
	verdictFail = "FAIL"
	verdictSkip = "SKIP"
)

// Names of doctor's checks: a component's name where the check is the
// component's, else doctor's own.
const (
	checkAgent      = "agent"
	checkLaunchd    = "launchd"
	checkSIP        = "sip"
	checkHelperPort = "helper-port"
	checkClock      = "clock"
)

// Fixes doctor gives for what the agent's own components report without one.
const (
	fullDiskAccessFix = "System Settings > Privacy & Security > Full Disk Access, add line-agent (the binary the LaunchAgent runs; also the Terminal, to run doctor there), then restart the agent"
	chatDBMissingFix  = "open Messages and sign in once (it creates ~/Library/Messages/chat.db), or correct LINE_AGENT_CHAT_DB / --chat-db"
	helperFix         = "install the private-API helper into Messages and restart Messages (docs/bridge.md); it needs SIP disabled"
	sipFix            = "start up in Recovery (hold the power button on Apple silicon), open Utilities > Terminal, run csrutil disable, restart (docs/bridge.md); or pass --no-helper if this Mac sends with AppleScript only"
	notOnMac          = "not checkable on " + runtime.GOOS + " (macOS only)"
)

// finding is one check's verdict, as printed and as --json lists it.
type finding struct {
	Name   string `json:"name"`
	Status string `json:"status"`
	Detail string `json:"detail"`
	Fix    string `json:"fix"`
}

// doctor holds what the checks share.
type doctor struct {
	cfg      agent.Config
	noHelper bool
	// report is the running agent's, nil when none answers.
	report *linev1.HealthReport
	// onMac is whether this is macOS: off it, a Mac's program runs only
	// when configured away from its default path.
	onMac bool
}

func runDoctor(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := loadConfig()
	if err != nil {
		return err
	}
	fs := newFlagSet("doctor", stderr)
	apply := configFlags(fs, &cfg)
	asJSON := fs.Bool("json", false, "print the checks as a JSON list of {name, status, detail, fix}")
	noHelper := fs.Bool("no-helper", false, "this Mac runs without the private-API helper (AppleScript only): skip the helper and SIP checks")
	if err := parse(fs, args); err != nil {
		return err
	}
	apply()
	d := &doctor{cfg: cfg, noHelper: *noHelper, onMac: runtime.GOOS == "darwin"}
	found := d.run(ctx)
	if *asJSON {
		b, err := json.MarshalIndent(found, "", "  ")
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s\n", b)
	} else {
		printFindings(stdout, cfg.DataDir, found)
	}
	failed := 0
	for _, f := range found {
		if f.Status == verdictFail {
			failed++
		}
	}
	if failed > 0 {
		return &exitError{code: 1, err: fmt.Errorf("%d of %d checks failed", failed, len(found))}
	}
	return nil
}

// run runs every check, in the order an operator fixes things.
func (d *doctor) run(ctx context.Context) []finding {
	var out []finding
	out = append(out, d.agent(ctx))
	out = append(out, d.launchd(ctx))
	out = append(out, d.chatDB())
	out = append(out, d.messages(ctx))
	out = append(out, d.automation(ctx))
	out = append(out, d.icloud(ctx))
	out = append(out, d.helper(), d.sip(ctx), d.helperPort(ctx))
	rel, conn := d.relay(ctx)
	out = append(out, rel, d.clock(ctx, conn))
	out = append(out, d.disk())
	return out
}

// printFindings is doctor's answer for people: a line a check, the fix
// under anything that is not PASS.
func printFindings(w io.Writer, dataDir string, found []finding) {
	fmt.Fprintf(w, "line-agent doctor (data directory %s)\n", dataDir)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	counts := map[string]int{}
	for _, f := range found {
		counts[f.Status]++
		fmt.Fprintf(tw, "%s\t%s\t%s\n", f.Status, f.Name, f.Detail)
		if f.Fix != "" && f.Status != verdictPass {
			fmt.Fprintf(tw, "\t\tfix: %s\n", f.Fix)
		}
	}
	tw.Flush()
	fmt.Fprintf(w, "%d passed, %d failed, %d warned, %d skipped\n", counts[verdictPass], counts[verdictFail], counts[verdictWarn], counts[verdictSkip])
}

// verdictOf is a health status as doctor says it.
func verdictOf(s linev1.HealthStatus) string {
	switch s {
	case linev1.HealthStatus_HEALTH_STATUS_OK:
		return verdictPass
	case linev1.HealthStatus_HEALTH_STATUS_DEGRADED:
		return verdictWarn
	}
	return verdictFail
}

// fromCheck is a component.Check as a finding.
func fromCheck(name string, c component.Check) finding {
	return finding{Name: name, Status: verdictOf(c.Status), Detail: c.Detail, Fix: c.Fix}
}

// fromReport is the running agent's component name as a finding, when
// its report has one. The component's Fix is the fix, and its detail
// without the "; fix: ..." it ends with: a detail that joins several
// checks may say "; fix: " more than once (the messages component's did,
// the Restarter's check before the probe's, until Fix came), so only the
// field says where the fix starts. An agent that predates Fix has it only
// in the detail, after the first "; fix: "; fallback is the fix for a
// component that names none.
func (d *doctor) fromReport(name, fallback string) (finding, bool) {
	for _, c := range d.report.GetComponents() {
		if c.GetName() != name {
			continue
		}
		rc := component.Reported(c, true)
		if rc.Fix == "" {
			rc.Fix = fallback
		}
		f := finding{Name: name, Status: verdictOf(c.GetStatus()), Detail: rc.Detail + " (from the running agent)", Fix: rc.Fix}
		if f.Status == verdictPass {
			f.Fix = ""
		}
		return f, true
	}
	return finding{}, false
}

// macTool says whether a Mac's program can be run here: on a Mac always;
// elsewhere only when it was configured away from the Mac's path (a fake).
func (d *doctor) macTool(path, macPath string) bool {
	return d.onMac || (path != "" && path != macPath)
}

// agent asks the running agent for its report over its status socket.
func (d *doctor) agent(ctx context.Context) finding {
	path := d.cfg.StatusSocketPath()
	if path == "" {
		return finding{Name: checkAgent, Status: verdictWarn, Detail: "the status socket is turned off (LINE_AGENT_STATUS_SOCKET=-): doctor cannot see the running agent and looks at everything itself",
			Fix: "unset LINE_AGENT_STATUS_SOCKET to let doctor and line-agent status read the agent"}
	}
	rep, err := askAgent(ctx, path)
	if err != nil {
		return finding{Name: checkAgent, Status: verdictWarn,
			Detail: fmt.Sprintf("no agent answers on %s: the checks below look from this process, whose permissions may differ from the agent's", path),
			Fix:    fmt.Sprintf("start it: launchctl kickstart gui/%d/%s (installed) or line-agent run --data %s", os.Getuid(), installer.Label, d.cfg.DataDir)}
	}
	d.report = rep
	f := finding{Name: checkAgent, Status: verdictOf(rep.GetStatus()), Detail: "running; it reports itself " + statusWord(rep.GetStatus())}
	if f.Status != verdictPass {
		f.Fix = "see the checks below (line-agent status has every component)"
	}
	return f
}

// askAgent is AgentStatus.Status over the status socket.
func askAgent(ctx context.Context, path string) (*linev1.HealthReport, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	return linev1.NewAgentStatusClient(conn).Status(ctx, &linev1.StatusRequest{})
}

// launchd reports the LaunchAgent installer.Label in the user's session.
func (d *doctor) launchd(ctx context.Context) finding {
	f := finding{Name: checkLaunchd}
	if !d.macTool(d.cfg.Launchctl, "/bin/launchctl") {
		f.Status, f.Detail = verdictSkip, notOnMac
		return f
	}
	job, err := macprobe.Launchctl{Path: d.cfg.Launchctl}.Print(ctx, os.Getuid(), installer.Label)
	domain := fmt.Sprintf("gui/%d/%s", os.Getuid(), installer.Label)
	switch {
	case err != nil:
		f.Status, f.Detail, f.Fix = verdictWarn, "cannot ask launchd: "+err.Error(), "run launchctl print "+domain+" by hand"
	case !job.Loaded:
		f.Status, f.Detail, f.Fix = verdictWarn, "no LaunchAgent "+installer.Label+": the agent does not start at login", "line-agent install"
	case job.State == "running":
		f.Status, f.Detail = verdictPass, fmt.Sprintf("%s is running (pid %d)", domain, job.PID)
	default:
		f.Status = verdictFail
		f.Detail = fmt.Sprintf("%s is loaded but %s (last exit code %s)", domain, job.State, job.LastExit)
		f.Fix = "read the agent's stderr.log in ~/Library/Logs/line-agent, fix what it says, then launchctl kickstart -k " + domain
	}
	return f
}

// chatDB is chat.db's readability: the running agent's word, else a read
// of the file.
func (d *doctor) chatDB() finding {
	if f, ok := d.fromReport(component.ChatDB, "if chat.db exists, "+fullDiskAccessFix+"; if not, "+chatDBMissingFix); ok {
		return f
	}
	path := d.cfg.ChatDB
	if path == "" {
		if !d.onMac {
			return finding{Name: component.ChatDB, Status: verdictSkip, Detail: notOnMac + "; --chat-db PATH checks a file"}
		}
		home, err := os.UserHomeDir()
		if err != nil {
			return finding{Name: component.ChatDB, Status: verdictFail, Detail: "no home directory: " + err.Error(), Fix: "set HOME, or --chat-db PATH"}
		}
		path = filepath.Join(home, "Library", "Messages", "chat.db")
	}
	return checkChatDBFile(path)
}

// sqliteMagic opens every SQLite database file.
const sqliteMagic = "SQLite format 3\x00"

// checkChatDBFile opens chat.db read-only and reads its header.
func checkChatDBFile(path string) finding {
	f, err := os.Open(path)
	if err != nil {
		return chatDBOpenFailure(path, err)
	}
	defer f.Close()
	head := make([]byte, len(sqliteMagic))
	if _, err := io.ReadFull(f, head); err != nil || string(head) != sqliteMagic {
		return finding{Name: component.ChatDB, Status: verdictFail, Detail: path + " is not a SQLite database",
			Fix: "point LINE_AGENT_CHAT_DB / --chat-db at Messages' chat.db (~/Library/Messages/chat.db)"}
	}
	return finding{Name: component.ChatDB, Status: verdictPass, Detail: path + " is readable"}
}

// chatDBOpenFailure tells apart what keeps chat.db from being opened:
// macOS's privacy protection refuses with EPERM (Full Disk Access is
// missing), the file's own mode or owner with EACCES, and a file that is
// not there is neither.
func chatDBOpenFailure(path string, err error) finding {
	f := finding{Name: component.ChatDB, Status: verdictFail}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		f.Detail, f.Fix = "no chat.db at "+path, chatDBMissingFix
	case errors.Is(err, syscall.EPERM):
		f.Detail = fmt.Sprintf("macOS refused to open %s (operation not permitted): this process has no Full Disk Access", path)
		f.Fix = fullDiskAccessFix
	case errors.Is(err, fs.ErrPermission):
		f.Detail = fmt.Sprintf("permission denied opening %s: its mode or owner does not let this user read it", path)
		f.Fix = fmt.Sprintf("ls -l %q must show it (and ~/Library/Messages) owned by you and readable (chmod u+r); if it is, grant Full Disk Access: %s", path, fullDiskAccessFix)
	default:
		f.Detail, f.Fix = fmt.Sprintf("cannot open %s: %v", path, err), "check the path (LINE_AGENT_CHAT_DB / --chat-db)"
	}
	return f
}

// messages is Messages.app running.
func (d *doctor) messages(ctx context.Context) finding {
	if f, ok := d.fromReport(component.Messages, macprobe.MessagesFix); ok {
		return f
	}
	if !d.macTool(d.cfg.PS, "/bin/ps") {
		return finding{Name: component.Messages, Status: verdictSkip, Detail: notOnMac}
	}
	return fromCheck(component.Messages, macprobe.PS{Path: d.cfg.PS}.Messages(ctx))
}

// osascript is the probe of Messages through osascript, nil off a Mac.
func (d *doctor) osascript() *applescript.Probe {
	if !d.macTool(d.cfg.Osascript, applescript.DefaultOsascriptPath) {
		return nil
	}
	return applescript.NewProbe(applescript.ProbeOptions{OsascriptPath: d.cfg.Osascript, Timeout: 15 * time.Second})
}

// automation is the permission to control Messages. Asked from here it is
// this process's (the Terminal's) permission, which the finding says.
func (d *doctor) automation(ctx context.Context) finding {
	if f, ok := d.fromReport(component.Automation, applescript.AutomationFix); ok {
		return f
	}
	p := d.osascript()
	if p == nil {
		return finding{Name: component.Automation, Status: verdictSkip, Detail: notOnMac}
	}
	f := fromCheck(component.Automation, p.Automation(ctx))
	f.Detail += " (asked from this process: the agent's own permission shows when it runs)"
	return f
}

// icloud is Messages' iMessage account, and iCloud for chat backgrounds.
func (d *doctor) icloud(ctx context.Context) finding {
	if f, ok := d.fromReport(component.ICloud, "open Messages > Settings > iMessage and sign in"); ok {
		return f
	}
	p := d.osascript()
	if p == nil {
		return finding{Name: component.ICloud, Status: verdictSkip, Detail: notOnMac}
	}
	imsg := p.Account(ctx)
	cloud := icloud.NewHealth(icloud.MacAccount{}, nil).Account(ctx)
	f := fromCheck(component.ICloud, component.Worse(imsg, component.Check{Status: cloud.GetStatus()}))
	f.Detail = "iMessage: " + imsg.Detail + " | iCloud for chat backgrounds: " + cloud.GetDetail()
	f.Fix = imsg.Fix
	if imsg.Status == linev1.HealthStatus_HEALTH_STATUS_OK && f.Status != verdictPass {
		f.Fix = "System Settings > Apple Account: sign in; then Messages > Settings > iMessage > Enable Messages in iCloud (chat backgrounds need both)"
	}
	return f
}

// helper is the private-API helper connected: only the running agent
// knows, since the helper dials it.
func (d *doctor) helper() finding {
	if d.noHelper {
		return finding{Name: component.Helper, Status: verdictSkip, Detail: "--no-helper: this Mac sends with AppleScript only"}
	}
	if f, ok := d.fromReport(component.Helper, helperFix); ok {
		return f
	}
	return finding{Name: component.Helper, Status: verdictSkip, Detail: "the agent is not running, and the helper connects to it: start the agent and run doctor again"}
}

// sip is System Integrity Protection, which must be off for the helper.
func (d *doctor) sip(ctx context.Context) finding {
	f := finding{Name: checkSIP}
	switch {
	case d.noHelper:
		f.Status, f.Detail = verdictSkip, "--no-helper: SIP may stay on"
		return f
	case !d.macTool(d.cfg.Csrutil, "/usr/bin/csrutil"):
		f.Status, f.Detail = verdictSkip, notOnMac
		return f
	}
	state, said, err := macprobe.Csrutil{Path: d.cfg.Csrutil}.Status(ctx)
	said = strings.TrimSuffix(said, ".")
	switch {
	case err != nil:
		f.Status, f.Detail, f.Fix = verdictWarn, "cannot read SIP's state: "+err.Error(), "run csrutil status by hand"
	case state == macprobe.SIPDisabled:
		f.Status, f.Detail = verdictPass, said+" (the helper can load)"
	case state == macprobe.SIPEnabled:
		f.Status, f.Detail, f.Fix = verdictFail, said+": the private-API helper cannot load into Messages (typing, tapbacks, effects, edits, unsends, backgrounds are unavailable)", sipFix
	default:
		f.Status, f.Detail, f.Fix = verdictWarn, said+": a custom configuration; the helper loads only if library validation and filesystem protections are off", sipFix
	}
	return f
}

// helperPort is the address the helper dials, which the agent must be
// able to listen on: BlueBubbles Server listens on the same port.
func (d *doctor) helperPort(ctx context.Context) finding {
	addr := d.cfg.HelperAddr
	if addr == "" {
		addr = bridge.DefaultAddr()
	}
	f := finding{Name: checkHelperPort}
	if d.report != nil {
		f.Status, f.Detail = verdictPass, "the agent runs: on the macos driver it listens on "+addr+" itself (a taken port stops it at start)"
		return f
	}
	l, err := net.Listen("tcp", addr)
	if err == nil {
		l.Close()
		f.Status, f.Detail = verdictPass, addr+" is free for the agent"
		return f
	}
	if !errors.Is(err, syscall.EADDRINUSE) {
		f.Status, f.Detail, f.Fix = verdictFail, "cannot listen on "+addr+": "+err.Error(), "set LINE_AGENT_HELPER_ADDR to a loopback host:port this user may listen on"
		return f
	}
	f.Status = verdictFail
	holder := "another process, most likely BlueBubbles Server (it listens there for its helper)"
	if d.macTool(d.cfg.PS, "/bin/ps") {
		if procs, err := (macprobe.PS{Path: d.cfg.PS}).Processes(ctx); err == nil {
			if bb, ok := macprobe.FindBlueBubbles(procs); ok {
				holder = fmt.Sprintf("BlueBubbles Server (pid %d, %s), which is running", bb.PID, bb.Command)
			}
		}
	}
	f.Detail = fmt.Sprintf("%s is taken by %s, and no agent of this data directory runs: the agent cannot start", addr, holder)
	f.Fix = "quit BlueBubbles Server and remove it from System Settings > General > Login Items (line-agent takes its place), or set LINE_AGENT_HELPER_ADDR to a free loopback port and point the helper there"
	return f
}

// disk is the free space where the data directory is (or would be).
func (d *doctor) disk() finding {
	dir := d.cfg.DataDir
	for {
		if _, err := os.Stat(dir); err == nil || filepath.Dir(dir) == dir {
			break
		}
		dir = filepath.Dir(dir) // not created yet: its filesystem is its parent's
	}
	lim := d.cfg.DiskLimits()
	return fromCheck(component.Disk, agent.CheckDisk(dir, lim, nil))
}
