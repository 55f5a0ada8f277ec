// Command fakeosascript stands in for /usr/bin/osascript in the applescript
// package's tests. It is invoked exactly as the sender invokes osascript
// (`fakeosascript - <argv...>`, the script on standard input), records what
// it received, and behaves like Messages: a send writes the outgoing row into
// a simulated chat.db with messages/sim's Store.Send, which marks it sent a
// moment later and then delivered.
//
// It does not interpret AppleScript: it recognises the sender's scripts by
// their shape ("to chat id", "participant", "POSIX file"). That is enough to
// prove the property that matters: values only ever arrive in argv.
//
// The health probes' scripts (probe.go: the Automation permission, the
// iMessage account) are answered as a healthy Mac answers them, before
// anything else: they are not logged and follow none of the settings
// below, so an agent's background probes never change what a test counts
// or makes hang. The probes' own tests use fakes of their own.
//
// Environment:
//
//	FAKEOSA_LOG        file to append one JSON record per run to (required)
//	FAKEOSA_DB         chat.db of the simulated Messages (required for sends)
//	FAKEOSA_FAIL       an AppleScript error number to fail every run with
//	FAKEOSA_FAIL_ONCE  an error number to fail with while FAKEOSA_STATE does not exist (then it is created)
//	FAKEOSA_STATE      marker file for FAKEOSA_FAIL_ONCE
//	FAKEOSA_GARBAGE    exit 1 with a message that has no error number
//	FAKEOSA_REJECT     comma-separated services ("any,iMessage") whose `chat id <svc>;...` fails -1700, as `any` does on macOS 26
//	FAKEOPEN_FAIL      when invoked as open(1) (first argument -g), fail
//	FAKEOSA_NEW_SERVICE service prefix of chats a participant send creates (default "any")
//	FAKEOSA_HANG       never finish: start a child copy that sleeps too, write both pids to FAKEOSA_PIDS
//	FAKEOSA_PIDS       where FAKEOSA_HANG writes "<pid> <child pid>"
//	FAKEOSA_HANG_AFTER_SEND send as usual, then never finish (Messages sent but AppleScript hangs)
//	FAKEOSA_NO_ROW     accept the send but write no row
//	FAKEOSA_ROW_ERROR  write the row, then set message.error to this code instead of sending
//	FAKEOSA_NO_SENT    write the row and never mark it sent
//	FAKEOSA_SENT_DELAY how long after the row is_sent flips, and again is_delivered (default 30ms)
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/line-agent/line-agent/messages/sim"
)

// Record is one run as the log holds it.
type Record struct {
	Script string   `json:"script"`
	Argv   []string `json:"argv"`
	Pid    int      `json:"pid"`
	// FileSHA256 and FileMode describe the file a file script pointed at,
	// read while "Messages" had it.
	FileSHA256 string `json:"file_sha256,omitempty"`
	FileMode   string `json:"file_mode,omitempty"`
	FileErr    string `json:"file_err,omitempty"`
	// Open marks a run as open(1) rather than osascript.
	Open bool `json:"open,omitempty"`
}

// maxSleep bounds every sleep, so a child a test forgot can never live on.
const maxSleep = 10 * time.Minute

func main() {
	if len(os.Args) > 1 && os.Args[1] == "__sleep" {
		time.Sleep(maxSleep)
		os.Exit(0)
	}
	if len(os.Args) > 1 && os.Args[1] == "-g" {
		// Invoked as open(1): `open -g -a Messages`.
		if err := appendRecord(Record{Argv: os.Args[1:], Pid: os.Getpid(), Open: true}); err != nil {
			fmt.Fprintln(os.Stderr, "fakeosascript:", err)
			os.Exit(2)
		}
		if os.Getenv("FAKEOPEN_FAIL") != "" {
			fmt.Fprintln(os.Stderr, "Unable to find application named 'Messages'")
			os.Exit(1)
		}
		return
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "fakeosascript:", err)
		os.Exit(2)
	}
}

func run() error {
	if len(os.Args) < 2 || os.Args[1] != "-" {
		return errors.New("usage: fakeosascript - argv...")
	}
	script, err := io.ReadAll(io.LimitReader(os.Stdin, 1<<20))
	if err != nil {
		return err
	}
	if answerProbe(string(script)) {
		return nil
	}
	rec := Record{Script: string(script), Argv: os.Args[2:], Pid: os.Getpid()}
	isFile := strings.Contains(rec.Script, "POSIX file")
	if isFile && len(rec.Argv) > 0 {
		if b, err := os.ReadFile(rec.Argv[0]); err != nil {
			rec.FileErr = err.Error()
		} else {
			sum := sha256.Sum256(b)
			rec.FileSHA256 = hex.EncodeToString(sum[:])
			if fi, err := os.Stat(rec.Argv[0]); err == nil {
				rec.FileMode = fi.Mode().Perm().String()
			}
		}
	}
	if err := appendRecord(rec); err != nil {
		return err
	}

	if os.Getenv("FAKEOSA_HANG") != "" {
		return hang()
	}
	if os.Getenv("FAKEOSA_GARBAGE") != "" {
		fmt.Fprintln(os.Stderr, "osascript: something odd happened")
		os.Exit(1)
	}
	if n := os.Getenv("FAKEOSA_FAIL_ONCE"); n != "" {
		state := os.Getenv("FAKEOSA_STATE")
		if _, err := os.Stat(state); errors.Is(err, os.ErrNotExist) {
			if err := os.WriteFile(state, []byte("failed once\n"), 0o600); err != nil {
				return err
			}
			fail(n, "Messages got an error: Application isn’t running.")
		}
	}
	if n := os.Getenv("FAKEOSA_FAIL"); n != "" {
		fail(n, "Messages got an error: scripted failure.")
	}
	if len(rec.Argv) != 2 {
		return fmt.Errorf("want 2 arguments, got %d", len(rec.Argv))
	}
	return send(rec)
}

// answerProbe answers a health probe's script as an authorized Mac with
// a connected iMessage account does, and reports whether it was one.
func answerProbe(script string) bool {
	if !strings.HasPrefix(script, `if application "Messages" is not running then return "not running"`) {
		return false
	}
	if strings.Contains(script, "every account") {
		fmt.Print("iMessage\ttrue\tconnected\n")
	} else {
		fmt.Println("authorized")
	}
	return true
}

// fail prints an execution error the way osascript does and exits 1.
func fail(num, msg string) {
	fmt.Fprintf(os.Stderr, "-:123:160: execution error: %s (%s)\n", msg, num)
	os.Exit(1)
}

// appendRecord appends rec as one JSON line with one write, so concurrent
// runs never interleave.
func appendRecord(rec Record) error {
	path := os.Getenv("FAKEOSA_LOG")
	if path == "" {
		return errors.New("FAKEOSA_LOG is not set")
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	_, werr := f.Write(append(b, '\n'))
	return errors.Join(werr, f.Close())
}

// hang starts a child copy of itself that sleeps, records both pids, and
// sleeps: only killing the whole process group ends both.
func hang() error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	child := exec.Command(self, "__sleep")
	if err := child.Start(); err != nil {
		return err
	}
	pids := fmt.Sprintf("%d %d\n", os.Getpid(), child.Process.Pid)
	if err := os.WriteFile(os.Getenv("FAKEOSA_PIDS"), []byte(pids), 0o600); err != nil {
		return err
	}
	time.Sleep(maxSleep)
	return nil
}

// send behaves like Messages receiving `send ... to chat id|participant`.
func send(rec Record) error {
	ctx := context.Background()
	isChat := strings.Contains(rec.Script, "to chat id")
	isParticipant := strings.Contains(rec.Script, "to participant")
	if isChat == isParticipant {
		return errors.New("script is neither a chat id nor a participant send")
	}
	value, addr := rec.Argv[0], rec.Argv[1]
	if isChat {
		for _, svc := range strings.Split(os.Getenv("FAKEOSA_REJECT"), ",") {
			if svc != "" && strings.HasPrefix(addr, svc+";") {
				fail("-1700", fmt.Sprintf("Messages got an error: Can’t make %q into type service type.", svc))
			}
		}
	}
	store, err := sim.Create(os.Getenv("FAKEOSA_DB"))
	if err != nil {
		return err
	}
	defer store.Close()

	var chat sim.Chat
	if isChat {
		// Messages on macOS 26 finds the chat under its other service
		// spelling too (a chat stored as any;-;x answers to iMessage;-;x).
		chat, err = store.Chat(ctx, addr)
		if err != nil {
			fail("-1728", fmt.Sprintf("Messages got an error: Can’t get chat id %q.", addr))
		}
	} else {
		svc := os.Getenv("FAKEOSA_NEW_SERVICE")
		if svc == "" {
			svc = "any"
		}
		chat, err = store.EnsureChat(ctx, sim.ChatSpec{Service: svc, Participants: []string{addr}})
		if err != nil {
			return err
		}
	}
	if os.Getenv("FAKEOSA_NO_ROW") != "" {
		return nil
	}
	var m sim.Msg
	if strings.Contains(rec.Script, "POSIX file") {
		if rec.FileErr != "" {
			fail("-1700", "Messages got an error: Can’t make file into type file.")
		}
		fi, err := os.Stat(value)
		if err != nil {
			return err
		}
		m.Attachments = []sim.Attachment{{Name: filepath.Base(value), Size: fi.Size()}}
	} else {
		m.Text = value
	}
	o := sim.Outgoing{Latency: 30 * time.Millisecond, Stuck: os.Getenv("FAKEOSA_NO_SENT") != ""}
	if d, err := time.ParseDuration(os.Getenv("FAKEOSA_SENT_DELAY")); err == nil {
		o.Latency = min(d, maxSleep)
	}
	if code := os.Getenv("FAKEOSA_ROW_ERROR"); code != "" {
		if o.FailCode, err = strconv.Atoi(code); err != nil {
			return err
		}
	}
	snd, err := store.Send(ctx, chat, m, o)
	if err != nil {
		return err
	}
	if err := snd.Err(); err != nil {
		return err
	}
	if os.Getenv("FAKEOSA_HANG_AFTER_SEND") != "" {
		store.Close()
		time.Sleep(maxSleep)
	}
	return nil
}
