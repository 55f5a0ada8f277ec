// Package applescript sends plain texts and files through Messages with
// osascript, the one sending path every Mac has without disabling SIP.
//
// Safety first: the scripts are constants fed to `osascript -` on standard
// input, and every value (text, file path, chat GUID, handle) is an argument
// of `on run argv`. Nothing a caller sends ever becomes AppleScript source or a
// shell line, and no shell runs at all.
//
// Truth second: AppleScript returns no message GUID and "success" from
// osascript only means Messages accepted the request. The sender therefore
// finds its outgoing row in chat.db and reports what the row says: sent,
// failed (message.error), or still pending when the deadline passes. It never
// reports success without the row.
//
// What AppleScript cannot do (effects, replies, subjects, tapbacks, edits,
// group creation...) is UNSUPPORTED here and provided by the private-API
// helper (package bridge). See docs/applescript.md.
package applescript

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/line-agent/line-agent/command"
	"github.com/line-agent/line-agent/messages"
	"github.com/line-agent/line-agent/messages/chatdb"
	"github.com/line-agent/line-agent/messages/confirm"
	"github.com/line-agent/line-agent/messages/spool"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// Defaults for Options' zero values.
const (
	DefaultOsascriptPath      = "/usr/bin/osascript"
	DefaultOpenPath           = "/usr/bin/open"
	DefaultMessagesApp        = "Messages"
	DefaultTimeout            = 30 * time.Second
	DefaultMaxAttachmentBytes = 100 << 20
	DefaultFetchTimeout       = 60 * time.Second
	DefaultLaunchWait         = 3 * time.Second
	DefaultCommandTimeout     = 2 * time.Minute
	// DefaultStageSubdir is the staging directory under the user's home:
	// Messages is sandboxed and can read ~/Pictures, not the agent's data.
	DefaultStageSubdir = "Pictures/line-agent-outbox"
)

// dateSkew is how far before the send's start a row's date may be and still
// be this send's row: chat.db dates come from the same clock, but are taken
// by Messages a moment before or after osascript returns.
const dateSkew = 2 * time.Second

// Poll pacing while waiting for the row: quick at first (the row usually
// lands within milliseconds), then backing off to a gentle cap.
const (
	pollFirst = 20 * time.Millisecond
	pollMax   = time.Second
)

// attachmentText is the body of a message that is only a file: the object
// replacement character that stands for the attachment.
const attachmentText = "\uFFFC"

// Options configures a Sender. The zero value of every field but ChatDB is a
// sensible default.
type Options struct {
	// OsascriptPath is the osascript binary. Default /usr/bin/osascript;
	// tests point it at a fake.
	OsascriptPath string
	// OpenPath is open(1), run as `open -g -a <MessagesApp>` to launch
	// Messages when a script fails with -600 (not running). Default
	// /usr/bin/open.
	OpenPath string
	// MessagesApp is the application open(1) launches. Default "Messages".
	MessagesApp string
	// ChatDB reads chat.db to find the row each send produced. Required:
	// without it no send could ever be confirmed.
	ChatDB ChatDB
	// Confirm runs the chat.db checks before a send (the agent's
	// *confirm.Confirmer, the one the bridge's driver is given too), so a
	// send to a chat this Mac does not have is refused as the bridge
	// refuses it, before osascript runs. The send itself is confirmed
	// from its own row (ChatDB). Nil skips the checks.
	Confirm Checker
	// StageDir is where attachments are copied for Messages to read. It is
	// created 0700. Default ~/Pictures/line-agent-outbox (Messages is
	// sandboxed and cannot read the agent's own directories).
	StageDir string
	// Timeout bounds one osascript run; past it the run's whole process
	// group is killed. Default 30 s.
	Timeout time.Duration
	// LaunchWait is how long Messages gets to start after a -600 before the
	// one retry. Default 3 s.
	LaunchWait time.Duration
	// CommandTimeout bounds a command whose context and Command carry no
	// deadline, so that waiting for a row always ends. Default 2 min.
	CommandTimeout time.Duration
	// MaxAttachmentBytes caps an attachment, given as bytes or fetched.
	// Default 100 MB.
	MaxAttachmentBytes int64
	// MaxTextRunes caps a text's length in code points. Default 20,000;
	// MaxTextBytes (256 KiB) applies whatever this says.
	MaxTextRunes int
	// FetchTimeout bounds fetching an attachment URL, retries and body
	// included. Default 60 s.
	FetchTimeout time.Duration
	// HTTPClient supplies TLS settings (roots) for fetching attachment
	// URLs; the fetch is spool.Fetcher's, with its own dialer (only public
	// addresses), no proxy, and its own timeout and redirect policy.
	// Default: Go's default transport.
	HTTPClient *http.Client
	// AllowLoopbackForTests lets attachment URLs on loopback addresses be
	// fetched. For tests only, which serve files from an httptest server
	// on 127.0.0.1: the agent never sets it (spool.Fetcher).
	AllowLoopbackForTests bool
	// Env is added to osascript's environment, which otherwise holds only
	// what macOS needs (HOME, USER, PATH...): the agent's own variables
	// never reach it. Tests use it to steer the fake osascript.
	Env []string
	// Logger receives one line per send and per retry; never message text.
	// Default slog.Default().
	Logger *slog.Logger
	// Clock dates sends and paces polling. Default the system clock.
	Clock Clock
	// Runs, when set, hears each osascript run of a send: its start, and
	// whether it ended answered or timed out (RunObserver). The agent's
	// Messages restarter counts timeouts in a row with it and waits for
	// runs in flight before it restarts Messages. Nil hears nothing.
	Runs RunObserver
}

// Checker refuses, before anything is sent, a command chat.db already says
// cannot work (an unknown chat); *confirm.Confirmer satisfies it.
type Checker interface {
	Check(ctx context.Context, cmd *linev1.Command) (confirm.Before, error)
}

// Clock is the time source, injected so tests control it.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time                         { return time.Now() }
func (systemClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Sender is the AppleScript messages.Driver: plain texts and files.
// It is safe for concurrent use.
type Sender struct {
	opts    Options
	log     *slog.Logger
	run     runner
	fetch   spool.Fetcher
	stager  stager
	claimed *claimed
}

var _ messages.Driver = (*Sender)(nil)

// New checks opts, fills the defaults and returns a Sender. It runs nothing:
// the first osascript run is the first send.
func New(opts Options) (*Sender, error) {
	if opts.ChatDB == nil {
		return nil, errors.New("applescript: Options.ChatDB is required (sends are confirmed from chat.db)")
	}
	if opts.OsascriptPath == "" {
		opts.OsascriptPath = DefaultOsascriptPath
	}
	if opts.OpenPath == "" {
		opts.OpenPath = DefaultOpenPath
	}
	if opts.MessagesApp == "" {
		opts.MessagesApp = DefaultMessagesApp
	}
	if opts.StageDir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return nil, fmt.Errorf("applescript: no home directory for the default staging directory: %w", err)
		}
		opts.StageDir = filepath.Join(home, DefaultStageSubdir)
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.LaunchWait <= 0 {
		opts.LaunchWait = DefaultLaunchWait
	}
	if opts.CommandTimeout <= 0 {
		opts.CommandTimeout = DefaultCommandTimeout
	}
	if opts.MaxAttachmentBytes <= 0 {
		opts.MaxAttachmentBytes = DefaultMaxAttachmentBytes
	}
	if opts.MaxTextRunes <= 0 {
		opts.MaxTextRunes = DefaultMaxTextRunes
	}
	if opts.FetchTimeout <= 0 {
		opts.FetchTimeout = DefaultFetchTimeout
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Clock == nil {
		opts.Clock = systemClock{}
	}
	return &Sender{
		opts: opts,
		log:  opts.Logger.With("driver", "applescript"),
		run:  runner{timeout: opts.Timeout, env: opts.Env, obs: opts.Runs},
		fetch: spool.Fetcher{Client: opts.HTTPClient, MaxBytes: opts.MaxAttachmentBytes, Timeout: opts.FetchTimeout,
			Noun: "the attachment", AllowLoopbackForTests: opts.AllowLoopbackForTests},
		stager:  stager{dir: opts.StageDir},
		claimed: newClaimed(1024),
	}, nil
}

// Capabilities is send_text and send_attachment, always: AppleScript offers
// nothing else, and whether Messages answers is only known by sending.
func (s *Sender) Capabilities() []linev1.Capability {
	return []linev1.Capability{linev1.Capability_CAPABILITY_SEND_TEXT, linev1.Capability_CAPABILITY_SEND_ATTACHMENT}
}

// Execute validates cmd completely, then sends it and waits for its row in
// chat.db. Every failure is a *command.Error. The kind is known: the
// agent's dispatcher refuses a command without one before any driver runs.
func (s *Sender) Execute(ctx context.Context, cmd *linev1.Command, report func(*linev1.CommandUpdate)) (*linev1.Snapshot, error) {
	snap, err := s.execute(ctx, cmd, report)
	if err != nil {
		return nil, command.AsError(err)
	}
	return snap, nil
}

func (s *Sender) execute(ctx context.Context, cmd *linev1.Command, report func(*linev1.CommandUpdate)) (*linev1.Snapshot, error) {
	if report == nil {
		report = func(*linev1.CommandUpdate) {}
	}
	if d := cmd.GetDeadline(); d != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, d.AsTime())
		defer cancel()
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.opts.CommandTimeout)
		defer cancel()
	}
	progress := func(stage string) {
		report(&linev1.CommandUpdate{CommandId: cmd.GetId(), State: linev1.CommandState_COMMAND_STATE_IN_PROGRESS,
			Progress: &linev1.Progress{Stage: stage}})
	}

	// What AppleScript cannot carry is refused, naming the capability
	// that would: a silently dropped effect or reply would be a lie.
	for _, need := range command.Needs(cmd) {
		if !slices.Contains(s.Capabilities(), need) {
			return nil, command.Unsupported(need, "AppleScript sends only plain text and files; the private-API helper provides the rest")
		}
	}
	tgt, err := parseTarget(cmd)
	if err != nil {
		return nil, err
	}
	if text := cmd.GetSendText(); text != nil {
		if err := validateText(text.GetText(), s.opts.MaxTextRunes); err != nil {
			return nil, err
		}
	}
	if s.opts.Confirm != nil {
		if _, err := s.opts.Confirm.Check(ctx, cmd); err != nil {
			return nil, err
		}
	}
	switch k := cmd.GetKind().(type) {
	case *linev1.Command_SendText:
		return s.send(ctx, cmd, tgt, payload{text: k.SendText.GetText()}, progress)

	case *linev1.Command_SendAttachment:
		sa := k.SendAttachment
		data, err := s.attachmentBytes(ctx, sa)
		if err != nil {
			return nil, err
		}
		if sa.GetUrl() != "" {
			progress("fetched")
		}
		// One rule for every door (spool.Admit): the caller's name is
		// refused when it carries control characters or path separators,
		// and the name and content when they are a program or a script.
		// The file is written under a generated name keeping only the
		// admitted name's extension, or a media extension sniffed from the
		// content: never one Admit did not judge.
		name, err := spool.Admit(sa.GetFileName(), sa.GetMimeType(), data)
		if err != nil {
			return nil, err
		}
		ext := sanitizeExt(name)
		if ext == "" {
			ext = sniffExt(data)
		}
		path, err := s.stager.stage(data, ext)
		if err != nil {
			return nil, command.Errorf(linev1.ErrorCode_ERROR_CODE_INTERNAL, "%w", err)
		}
		// The command ends here whatever happens, and Messages has either
		// copied the file (the row is sent or failed) or will never use it.
		defer func() {
			if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
				s.log.WarnContext(ctx, "removing a staged attachment", "path", path, "err", err)
			}
		}()
		progress("staged")
		return s.send(ctx, cmd, tgt, payload{file: path}, progress)
	}
	// Needs passed: a kind Capabilities lists but this switch lacks.
	return nil, command.Errorf(linev1.ErrorCode_ERROR_CODE_INTERNAL, "the AppleScript driver cannot run %s", command.KindName(cmd))
}

// attachmentBytes returns the file's bytes: given inline (checked against the
// cap) or fetched from an HTTPS URL. A local path is never accepted.
func (s *Sender) attachmentBytes(ctx context.Context, sa *linev1.SendAttachment) ([]byte, error) {
	switch src := sa.GetSource().(type) {
	case *linev1.SendAttachment_Data:
		if len(src.Data) == 0 {
			return nil, invalid("attachment is empty")
		}
		if int64(len(src.Data)) > s.opts.MaxAttachmentBytes {
			return nil, invalid("attachment is %d bytes, over the %d-byte limit", len(src.Data), s.opts.MaxAttachmentBytes)
		}
		return src.Data, nil
	case *linev1.SendAttachment_Url:
		// HTTPS only, public addresses only, capped while streaming,
		// retried when transient, typed errors that never quote the URL:
		// see spool.Fetcher.
		return s.fetch.Fetch(ctx, src.Url)
	}
	return nil, invalid("attachment has neither data nor url")
}

// payload is what one send carries: text, or the path of a staged file.
type payload struct {
	text string
	file string
}

// rowText is the text the payload's row will carry in chat.db.
func (p payload) rowText() string {
	if p.file != "" {
		return attachmentText
	}
	return p.text
}

// snapshot turns a confirmed row into the relay's answer.
func snapshot(r *chatdb.MessageState) *linev1.Snapshot {
	sn := &linev1.Snapshot{MessageGuid: r.GUID, ChatGuid: r.ChatGUID, Sent: r.Sent, Delivered: r.Delivered, Service: r.Service}
	if !r.Date.IsZero() {
		sn.Date = timestamppb.New(r.Date)
	}
	return sn
}
