package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
	"github.com/line-agent/line-agent/relay"
	"github.com/line-agent/line-agent/relay/opclient"
)

// demo is one run: the children it started and where it has read events up
// to.
type demo struct {
	dir                string // the temporary directory: data and logs
	agentBin, relayBin string
	out                io.Writer
	procs              []*exec.Cmd // started children, stopped in reverse order
	api                *opclient.Client
	cursor             int64  // the last event sequence printed
	line               string // the line the agent serves
}

func (d *demo) say(format string, args ...any) {
	fmt.Fprintf(d.out, format+"\n", args...)
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// start runs a child in its own process group, logging to a file in the demo
// directory, so stopAll can take down it and anything it spawned.
func (d *demo) start(name string, bin string, args ...string) (*exec.Cmd, error) {
	logf, err := os.Create(filepath.Join(d.dir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	logf.Close()
	d.procs = append(d.procs, cmd)
	return cmd, nil
}

// stopAll asks each child to stop (SIGTERM, the staged shutdown), then kills
// what is left.
func (d *demo) stopAll() {
	for i := len(d.procs) - 1; i >= 0; i-- {
		p := d.procs[i]
		if p.ProcessState != nil {
			continue
		}
		_ = syscall.Kill(-p.Process.Pid, syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = p.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-p.Process.Pid, syscall.SIGKILL)
			<-done
		}
	}
	d.procs = nil
}

func (d *demo) run(ctx context.Context, to string) error {
	grpcAddr, err := freePort()
	if err != nil {
		return err
	}
	httpAddr, err := freePort()
	if err != nil {
		return err
	}
	relayDir, agentDir := filepath.Join(d.dir, "relay"), filepath.Join(d.dir, "agent")
	d.say("== line-agent demo: relay, agent and a simulated Messages on loopback in %s", d.dir)

	tok, err := exec.CommandContext(ctx, d.relayBin, "token", "create", "--data", relayDir).Output()
	if err != nil {
		return fmt.Errorf("line-relay token create: %w", err)
	}
	if _, err := d.start("relay", d.relayBin, "serve", "--data", relayDir, "--grpc-addr", grpcAddr, "--http-addr", httpAddr); err != nil {
		return err
	}
	d.api = opclient.New(httpAddr)
	if err := waitFor(ctx, 20*time.Second, func() error { _, err := d.api.Agents(ctx); return err }); err != nil {
		return fmt.Errorf("relay did not come up (see %s): %w", filepath.Join(d.dir, "relay.log"), err)
	}
	d.say("relay    serving gRPC on %s, operator API on http://%s", grpcAddr, httpAddr)

	enroll := exec.CommandContext(ctx, d.agentBin, "enroll", "--relay", grpcAddr, "--ca", filepath.Join(relayDir, "ca.pem"), "--token-file", "-", "--data", agentDir)
	enroll.Stdin = strings.NewReader(string(tok))
	if out, err := enroll.CombinedOutput(); err != nil {
		return fmt.Errorf("enroll: %v: %s", err, out)
	} else {
		d.say("agent    %s", strings.TrimSpace(string(out)))
	}
	if _, err := d.start("agent", d.agentBin, "run", "--data", agentDir, "--driver", "sim", "--sim-reply-delay", "400ms"); err != nil {
		return err
	}
	var agentView relay.AgentView
	if err := waitFor(ctx, 30*time.Second, func() error {
		as, err := d.api.Agents(ctx)
		if err != nil {
			return err
		}
		for _, a := range as {
			if a.Connected && a.Healthy {
				agentView = a
				return nil
			}
		}
		return errors.New("no healthy agent yet")
	}); err != nil {
		return fmt.Errorf("agent did not connect (see %s): %w", filepath.Join(d.dir, "agent.log"), err)
	}
	d.line = agentView.Lines[0]
	d.say("agent    %s connected and healthy; serves %s; can %s", agentView.ID, strings.Join(agentView.Lines, ", "), strings.Join(agentView.Capabilities, ", "))
	d.say("")

	// Send a text and wait for its truthful result.
	cmd := &linev1.Command{
		Id: "demo-1", Line: d.line,
		Target:   &linev1.Command_Participants{Participants: &linev1.Participants{Handles: []string{to}}},
		Deadline: timestamppb.New(time.Now().Add(30 * time.Second)),
		Kind:     &linev1.Command_SendText{SendText: &linev1.SendText{Text: "Hello from line-agent 👋"}},
	}
	res, err := d.send(ctx, cmd)
	if err != nil {
		return err
	}
	chat := res.chat
	d.say("")

	// Post it again: the same id is never a second message.
	v, created, err := d.api.Submit(ctx, cmd)
	if err != nil {
		return err
	}
	d.say("again    POST of id %s again: created=%v, state %s (one message, not two)", cmd.Id, created, v.State)

	// Wait for the simulated person's reply to arrive as an event.
	d.say("")
	reply, err := d.waitEvent(ctx, 20*time.Second, func(ev *linev1.Event) bool {
		m := ev.GetMessage()
		return m != nil && !m.GetFromMe() && ev.GetChatGuid() == chat
	})
	if err != nil {
		return err
	}

	// The rest of what a line can do, each acknowledged only once chat.db
	// shows it, each change streaming back as an event.
	d.say("")
	steps := []struct {
		id   string
		kind any
		want func(*linev1.Event) bool
	}{
		{"demo-typing-on", &linev1.Command_Typing{Typing: &linev1.Typing{On: true}}, nil},
		{"demo-typing-off", &linev1.Command_Typing{Typing: &linev1.Typing{On: false}}, nil},
		{"demo-react", &linev1.Command_React{React: &linev1.React{MessageGuid: reply.GetMessageGuid(), Reaction: &linev1.React_Tapback{Tapback: "love"}}},
			func(ev *linev1.Event) bool { return ev.GetTapback().GetFromMe() }},
		{"demo-edit", &linev1.Command_Edit{Edit: &linev1.Edit{MessageGuid: res.guid, Text: "Hello from line-agent (edited) 👋"}},
			func(ev *linev1.Event) bool { return ev.GetEdited() != nil }},
		{"demo-effect", &linev1.Command_SendText{SendText: &linev1.SendText{Text: "🎉 with confetti", Effect: "confetti"}},
			func(ev *linev1.Event) bool { return ev.GetMessage().GetEffect() != "" }},
	}
	var effectGUID string
	for _, st := range steps {
		c := &linev1.Command{Id: st.id, Line: d.line, Target: &linev1.Command_ChatGuid{ChatGuid: chat},
			Deadline: timestamppb.New(time.Now().Add(30 * time.Second))}
		switch k := st.kind.(type) {
		case *linev1.Command_Typing:
			c.Kind = k
		case *linev1.Command_React:
			c.Kind = k
		case *linev1.Command_Edit:
			c.Kind = k
		case *linev1.Command_SendText:
			c.Kind = k
		}
		r, err := d.send(ctx, c)
		if err != nil {
			return err
		}
		if st.id == "demo-effect" {
			effectGUID = r.guid
		}
		if st.want != nil {
			if _, err := d.waitEvent(ctx, 20*time.Second, st.want); err != nil {
				return err
			}
		}
		d.say("")
	}
	unsend := &linev1.Command{Id: "demo-unsend", Line: d.line, Target: &linev1.Command_ChatGuid{ChatGuid: chat},
		Deadline: timestamppb.New(time.Now().Add(30 * time.Second)),
		Kind:     &linev1.Command_Unsend{Unsend: &linev1.Unsend{MessageGuid: effectGUID}}}
	if _, err := d.send(ctx, unsend); err != nil {
		return err
	}
	if _, err := d.waitEvent(ctx, 20*time.Second, func(ev *linev1.Event) bool { return ev.GetUnsent() != nil }); err != nil {
		return err
	}
	d.say("")

	// A chat background: the image travels to iCloud inside Messages (the
	// simulated upload takes --sim-background-delay), progress streams to
	// the operator, and the result comes only once chat.db shows the asset
	// distributable.
	img, err := demoPNG()
	if err != nil {
		return err
	}
	bg := &linev1.Command{Id: "demo-background", Line: d.line, Target: &linev1.Command_ChatGuid{ChatGuid: chat},
		Deadline: timestamppb.New(time.Now().Add(60 * time.Second)),
		Kind:     &linev1.Command_SetBackground{SetBackground: &linev1.SetBackground{Source: &linev1.SetBackground_Data{Data: img}, MimeType: "image/png"}}}
	start := time.Now()
	if _, err := d.send(ctx, bg); err != nil {
		return err
	}
	d.say("         acknowledged %.1fs after the POST: only once chat.db showed the new asset distributable", time.Since(start).Seconds())
	d.say("")
	clear := &linev1.Command{Id: "demo-background-clear", Line: d.line, Target: &linev1.Command_ChatGuid{ChatGuid: chat},
		Deadline: timestamppb.New(time.Now().Add(30 * time.Second)),
		Kind:     &linev1.Command_ClearBackground{ClearBackground: &linev1.ClearBackground{}}}
	if _, err := d.send(ctx, clear); err != nil {
		return err
	}
	d.say("")
	d.say("== done: each command ran once, was acknowledged only after chat.db showed it, and every change streamed back as an event.")
	d.stopAll()
	d.say("   relay and agent stopped; temporary directory removed.")
	return nil
}

type sent struct{ chat, guid string }

// send posts a command and prints its states until the final one.
func (d *demo) send(ctx context.Context, cmd *linev1.Command) (sent, error) {
	_, _, err := d.api.Submit(ctx, cmd)
	if err != nil {
		return sent{}, err
	}
	d.say("you      POST /v1/commands %s %q", kindOf(cmd), describe(cmd))
	v, err := d.api.Final(ctx, cmd.Id, func(v *relay.CommandView) {
		switch {
		case v.Progress != nil && v.Progress.Total > 0:
			d.say("relay    %s: %s %s (%d/%d)", cmd.Id, v.State, v.Progress.Stage, v.Progress.Done, v.Progress.Total)
		case v.Progress != nil:
			d.say("relay    %s: %s (%s)", cmd.Id, v.State, v.Progress.Stage)
		default:
			d.say("relay    %s: %s", cmd.Id, v.State)
		}
	})
	if err != nil {
		return sent{}, err
	}
	if v.State != "succeeded" {
		return sent{}, fmt.Errorf("command %s failed: %s: %s", cmd.Id, v.Error.Code, v.Error.Message)
	}
	snap := &linev1.Snapshot{}
	_ = unmarshalJSON(v.Result, snap)
	if snap.GetAssetId() != "" {
		d.say("         result: background asset %s distributable in chat %s", snap.GetAssetId(), snap.GetChatGuid())
	} else if snap.GetMessageGuid() == "" {
		d.say("         result: ok in chat %s", snap.GetChatGuid())
	} else {
		d.say("         result: message %s in chat %s, sent=%v delivered=%v", snap.GetMessageGuid(), snap.GetChatGuid(), snap.GetSent(), snap.GetDelivered())
	}
	return sent{chat: snap.GetChatGuid(), guid: snap.GetMessageGuid()}, nil
}

// waitEvent prints events as they stream in until match is true.
func (d *demo) waitEvent(ctx context.Context, limit time.Duration, match func(*linev1.Event) bool) (*linev1.Event, error) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		page, err := d.api.Events(ctx, d.cursor, 2*time.Second)
		if err != nil {
			return nil, err
		}
		for _, ev := range page.Events {
			e, err := opclient.Event(ev)
			if err != nil {
				return nil, err
			}
			d.say("event    #%d %s", ev.Seq, eventLine(e))
			d.cursor = ev.Seq
			if match(e) {
				return e, nil
			}
		}
		d.cursor = max(d.cursor, page.Next)
	}
	return nil, fmt.Errorf("the expected event did not arrive within %s", limit)
}

func waitFor(ctx context.Context, limit time.Duration, f func() error) error {
	deadline := time.Now().Add(limit)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return err
}
