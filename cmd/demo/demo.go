package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/line-agent/line-agent/pkg/localstack"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
	"github.com/line-agent/line-agent/relay"
	"github.com/line-agent/line-agent/relay/opclient"
)

// demo is one run: the relay and agent it started and where it has read
// events up to.
type demo struct {
	dir                string // the temporary directory: data and logs
	agentBin, relayBin string
	out                io.Writer
	stack              *localstack.Stack
	api                *opclient.Client
	cursor             int64  // the last event sequence printed
	line               string // the line the agent serves
}

func (d *demo) say(format string, args ...any) {
	fmt.Fprintf(d.out, format+"\n", args...)
}

// stopAll stops the agent, then the relay (SIGTERM, their staged
// shutdown), if they were started.
func (d *demo) stopAll() {
	if d.stack != nil {
		d.stack.Close()
		d.stack = nil
	}
}

func (d *demo) run(ctx context.Context, to string) error {
	d.say("== line-agent demo: relay, agent and a simulated Messages on loopback in %s", d.dir)
	st, err := localstack.Start(ctx, localstack.Options{
		Dir: d.dir, RelayBin: d.relayBin, AgentBin: d.agentBin,
		AgentArgs: []string{"--sim-reply-delay", "400ms"},
	})
	if err != nil {
		return err
	}
	d.stack, d.api = st, st.Operator
	d.say("relay    serving gRPC on %s, operator API on http://%s", st.GRPCAddr, st.HTTPAddr)
	agentView := st.Agent
	d.say("agent    %s enrolled with %s", agentView.ID, st.GRPCAddr)
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
