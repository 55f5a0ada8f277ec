package applescript

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/line-agent/line-agent/command"
	"github.com/line-agent/line-agent/component"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// The health probes that ask Messages itself (docs/operations.md,
// "Health"): may line-agent control Messages (the Automation permission,
// without which every AppleScript send fails -1743), and is Messages'
// iMessage account signed in (without which nothing is sent at all). Like
// the sends, each is a constant script on osascript's standard input; no
// value of anyone's reaches it. Neither launches Messages: a script asks
// whether Messages runs (which needs no permission) before it talks to it,
// so a probe never opens a Messages an operator quit.

// AutomationFix is where the Automation permission is granted.
const AutomationFix = "System Settings > Privacy & Security > Automation > line-agent (or the Terminal that runs it) > turn on Messages"

// accountFix is where Messages' iMessage account is signed in.
const accountFix = "open Messages > Settings > iMessage and sign in with the Apple Account whose addresses are the lines"

// automationScript sends Messages the most harmless event there is (get
// its name): it succeeds only with the Automation permission.
const automationScript = `if application "Messages" is not running then return "not running"
tell application "Messages" to get name
return "authorized"
`

// accountScript lists Messages' accounts, one line each: service type,
// enabled, connection status, tab-separated. These are properties of the
// account class of Messages' scripting dictionary, the same account a send
// to a participant goes through (docs/applescript.md).
const accountScript = `if application "Messages" is not running then return "not running"
tell application "Messages"
	set out to ""
	repeat with a in (every account)
		set out to out & ((service type of a) as text) & tab & ((enabled of a) as text) & tab & ((connection status of a) as text) & linefeed
	end repeat
	return out
end tell
`

// ProbeOptions configures a Probe.
type ProbeOptions struct {
	// OsascriptPath is the osascript binary; default /usr/bin/osascript.
	OsascriptPath string
	// Timeout bounds one run (the caller's deadline may be shorter); past
	// it the run's process group is killed. Default 10 s.
	Timeout time.Duration
	// Env is added to osascript's minimal environment (tests steer a fake
	// with it).
	Env []string
}

// Probe runs the Automation and account checks.
type Probe struct {
	path string
	run  runner
}

// NewProbe returns a Probe.
func NewProbe(o ProbeOptions) *Probe {
	if o.OsascriptPath == "" {
		o.OsascriptPath = DefaultOsascriptPath
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	return &Probe{path: o.OsascriptPath, run: runner{timeout: o.Timeout, env: o.Env}}
}

// ask runs one script and returns its trimmed output, or the Check that
// explains why there is none.
func (p *Probe) ask(ctx context.Context, script, what string) (string, *component.Check) {
	res, err := p.run.run(ctx, p.path, []string{"-"}, script)
	var se *scriptError
	var te *timeoutError
	switch {
	case err == nil:
		return strings.TrimSpace(string(res.stdout)), nil
	case errors.As(err, &te) || errors.Is(err, context.DeadlineExceeded):
		c := component.Degraded(fmt.Sprintf("osascript did not answer %s in time: a permission prompt may be waiting on the Mac's screen, or Messages is hanging", what),
			"answer the prompt \"line-agent wants access to control Messages\" on the Mac (OK), or grant it in "+AutomationFix+"; if Messages hangs, quit and reopen it")
		return "", &c
	case errors.As(err, &se) && se.Number == errNotAuthorized:
		c := component.Down("line-agent may not control Messages (AppleScript error -1743, Not authorized to send Apple events): every AppleScript send fails", AutomationFix)
		return "", &c
	case errors.As(err, &se) && se.Number == errNotRunning:
		return "not running", nil
	case errors.As(err, &se):
		c := component.Degraded(fmt.Sprintf("osascript failed asking %s: %v", what, se), "run the check again; if it persists, restart Messages")
		return "", &c
	}
	c := component.Down(fmt.Sprintf("cannot run osascript at %s: %v", p.path, err), "osascript is part of macOS at /usr/bin/osascript; set LINE_AGENT_OSASCRIPT only to point elsewhere")
	return "", &c
}

// Automation checks that line-agent (the process running osascript, and
// whoever macOS holds responsible for it) may control Messages.
func (p *Probe) Automation(ctx context.Context) component.Check {
	out, bad := p.ask(ctx, automationScript, "whether line-agent may control Messages")
	if bad != nil {
		return *bad
	}
	switch out {
	case "authorized":
		return component.OK("line-agent may control Messages")
	case "not running":
		return component.Degraded("Messages is not running, so the permission cannot be checked", "open Messages (see the messages component)")
	}
	return component.Degraded(fmt.Sprintf("unexpected answer from osascript: %q", cleanDetail(out)), "run the check again; if it persists, restart Messages")
}

// Account checks that Messages has an iMessage account, enabled and
// connected (signed in).
func (p *Probe) Account(ctx context.Context) component.Check {
	out, bad := p.ask(ctx, accountScript, "for Messages' accounts")
	if bad != nil {
		if bad.Status == linev1.HealthStatus_HEALTH_STATUS_DOWN && strings.Contains(bad.Detail, "-1743") {
			// Not this component's fault: the automation component is DOWN.
			return component.Degraded("cannot tell: line-agent may not control Messages (see the automation component)", AutomationFix)
		}
		return *bad
	}
	if out == "not running" {
		return component.Degraded("Messages is not running, so its account cannot be checked", "open Messages (see the messages component)")
	}
	return judgeAccounts(out)
}

// judgeAccounts reads accountScript's lines. The best iMessage account
// counts: one enabled and connected is enough.
func judgeAccounts(out string) component.Check {
	best := component.Down("Messages has no iMessage account", accountFix)
	rank := 0
	for _, line := range strings.Split(out, "\n") {
		f := strings.Split(strings.TrimSpace(line), "\t")
		if len(f) < 3 || !strings.EqualFold(strings.TrimSpace(f[0]), "iMessage") {
			continue
		}
		enabled, conn := strings.EqualFold(strings.TrimSpace(f[1]), "true"), strings.ToLower(strings.TrimSpace(f[2]))
		var c component.Check
		r := 0
		switch {
		case enabled && conn == "connected":
			c, r = component.OK("iMessage is signed in and connected"), 4
		case enabled && conn == "connecting":
			c, r = component.Degraded("iMessage is connecting", "wait a minute; if it stays, check the Mac's network and "+accountFix), 3
		case enabled:
			c, r = component.Down("the iMessage account is enabled but "+cleanDetail(conn)+" (signed out, or Apple refused it)", accountFix), 2
		default:
			c, r = component.Down("the iMessage account is disabled", "open Messages > Settings > iMessage and tick Enable this account"), 1
		}
		if r > rank {
			best, rank = c, r
		}
	}
	return best
}

// NotAuthorized reports whether err is a send refused for the Automation
// permission (-1743), so the agent can have the automation component look
// again at once instead of at its next round.
func NotAuthorized(err error) bool {
	var me *command.Error
	return errors.As(err, &me) && me.Code == linev1.ErrorCode_ERROR_CODE_UNAVAILABLE && strings.Contains(me.Msg, fmt.Sprintf("(%d)", errNotAuthorized))
}
