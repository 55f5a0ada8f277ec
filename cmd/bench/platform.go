package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/line-agent/line-agent/messages/chatdb"
	"github.com/line-agent/line-agent/messages/sim"
	"github.com/line-agent/line-agent/pkg/capool"
	imessagev1 "github.com/line-agent/line-agent/proto/photon/imessage/v1"
)

// Rows 5a and 5b: the platform API (photon.imessage.v1, what spectrum-ts
// apps call) beside the operator path, on one relay and one agent, so the
// only difference between a row and its baseline is the API itself.

// platformResult holds both rows' samples; each baseline is measured in
// the same phase on the same stack.
type platformResult struct {
	api, op        []time.Duration // 5a: SendTextMessage → response; SubmitCommand → result stored
	frame, relayed []time.Duration // 5b: commit → frame on SubscribeMessageEvents; commit → event stored
	floor          []time.Duration // a SendTextMessage refused at the first door: TLS round trip + token check
}

// platformTimeout bounds one call, one command or one message's two
// arrivals; phaseTimeout bounds the whole phase.
const (
	platformTimeout = 10 * time.Second
	phaseTimeout    = 90 * time.Second
)

// runPlatform starts a relay and an agent (the instant driver for
// commands, a chatdb Tailer with fsnotify on a simulated chat.db for
// inbound), makes a dedicated API token for the agent's line and dials the
// API over loopback TLS as an app would. Then nSend sends one at a time,
// alternating API and operator path (the order swapped every pair, so
// load falls on both alike), and nIn incoming messages, each timed to the
// event stored at the relay and to its frame on a live
// SubscribeMessageEvents stream.
func runPlatform(ctx context.Context, dir string, nSend, nIn int) (*platformResult, error) {
	ctx, cancel := context.WithTimeout(ctx, phaseTimeout)
	defer cancel()
	simDB, chat, err := newSimChatDB(ctx, filepath.Join(dir, "messages"))
	if err != nil {
		return nil, err
	}
	defer simDB.Close()
	s, err := startRelay(ctx, dir)
	if err != nil {
		return nil, err
	}
	defer s.close()
	tailer := chatdb.NewTailer(chatdb.TailerOptions{Path: simDB.Path(), Logger: discard, Line: benchLine})
	if err := s.startAgent(ctx, agentBackend(instantDriver{}, tailer)); err != nil {
		return nil, err
	}
	token, _, err := s.relay.CreateAPIToken(ctx, []string{benchLine}, false)
	if err != nil {
		return nil, fmt.Errorf("api token: %w", err)
	}
	cc, err := dialAPI(s.relay.APIAddr(), s.relay.CAFile())
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	auth := metadata.Pairs("authorization", "Bearer "+token)
	msgs := imessagev1.NewMessageServiceClient(cc)

	res := &platformResult{}
	if err := sendPairs(ctx, s, msgs, auth, nSend, res); err != nil {
		return nil, fmt.Errorf("sends: %w", err)
	}
	if res.floor, err = refusedSends(ctx, msgs, auth, max(50, nSend/5)); err != nil {
		return nil, fmt.Errorf("refused sends: %w", err)
	}
	if err := inboundPairs(ctx, s, msgs, auth, simDB, chat, nIn, res); err != nil {
		return nil, fmt.Errorf("inbound: %w", err)
	}
	return res, nil
}

// dialAPI is an app's connection: TLS trusting only the relay's CA.
func dialAPI(addr, caFile string) (*grpc.ClientConn, error) {
	pool, err := capool.Load(caFile)
	if err != nil {
		return nil, err
	}
	return grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13,
	})))
}

// sendPairs runs 50 warm-up pairs, then n measured ones: a SendTextMessage
// (with a fresh x-idempotency-key, as spectrum-ts sends) waited to its
// response, and an operator command (SubmitCommand, row 4a's path) waited
// to its result stored at the relay, one after the other.
func sendPairs(ctx context.Context, s *stack, msgs imessagev1.MessageServiceClient, auth metadata.MD, n int, res *platformResult) error {
	const warm = 50
	viaAPI := func(i int) (time.Duration, error) {
		key := fmt.Sprintf("bench-%06d", i)
		cctx, cancel := context.WithTimeout(metadata.NewOutgoingContext(ctx, metadata.Join(auth, metadata.Pairs("x-idempotency-key", key))), platformTimeout)
		defer cancel()
		t0 := time.Now()
		resp, err := msgs.SendTextMessage(cctx, &imessagev1.SendTextMessageRequest{
			ChatGuid: fmt.Sprintf("any;-;+1555700%04d", i%16), Text: "benchmark " + key,
		})
		d := time.Since(t0)
		if err != nil {
			return 0, fmt.Errorf("SendTextMessage %s: %w", key, err)
		}
		if resp.GetMessage().GetGuid() == "" {
			return 0, fmt.Errorf("SendTextMessage %s: no message GUID in the response", key)
		}
		return d, nil
	}
	viaOperator := func(i int) (time.Duration, error) {
		id := fmt.Sprintf("op-%06d", i)
		ch := s.hook.expect(id)
		t0 := time.Now()
		if _, err := s.relay.SubmitCommand(ctx, sendText(id, i%16)); err != nil {
			return 0, err
		}
		select {
		case at := <-ch:
			return at.Sub(t0), nil
		case <-time.After(platformTimeout):
			return 0, fmt.Errorf("command %s: no result in %v", id, platformTimeout)
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	for i := 0; i < warm+n; i++ {
		var a, o time.Duration
		var err error
		if i%2 == 0 {
			if a, err = viaAPI(i); err == nil {
				o, err = viaOperator(i)
			}
		} else {
			if o, err = viaOperator(i); err == nil {
				a, err = viaAPI(i)
			}
		}
		if err != nil {
			return err
		}
		if i >= warm {
			res.api, res.op = append(res.api, a), append(res.op, o)
		}
	}
	for i := 0; i < warm+n; i++ {
		if v, err := s.relay.CommandView(fmt.Sprintf("op-%06d", i)); err != nil || v.State != "succeeded" {
			return fmt.Errorf("command op-%06d did not succeed: %v %+v", i, err, v)
		}
	}
	return nil
}

// refusedSends times n SendTextMessage calls with a chat GUID the relay
// refuses before any command exists: one TLS round trip and the token
// check, the part of 5a's extra that is the API's transport alone.
func refusedSends(ctx context.Context, msgs imessagev1.MessageServiceClient, auth metadata.MD, n int) ([]time.Duration, error) {
	var d []time.Duration
	for i := 0; i < n; i++ {
		cctx, cancel := context.WithTimeout(metadata.NewOutgoingContext(ctx, auth), platformTimeout)
		t0 := time.Now()
		_, err := msgs.SendTextMessage(cctx, &imessagev1.SendTextMessageRequest{ChatGuid: "not a chat", Text: "x"})
		d = append(d, time.Since(t0))
		cancel()
		if status.Code(err) != codes.InvalidArgument {
			return nil, fmt.Errorf("a send to a malformed chat GUID: want INVALID_ARGUMENT, got %v", err)
		}
	}
	return d, nil
}

// inboundPairs opens SubscribeMessageEvents (its first frame, a heartbeat,
// says the stream is at the head), then inserts n incoming rows one at a
// time with a random 0–10 ms pause, as row 1a does, each waited for at
// both ends: the event stored at the relay (the operator long poll) and
// its message_received frame.
func inboundPairs(ctx context.Context, s *stack, msgs imessagev1.MessageServiceClient, auth metadata.MD, simDB *sim.Store, chat string, n int, res *platformResult) error {
	sctx, cancel := context.WithCancel(metadata.NewOutgoingContext(ctx, auth))
	defer cancel()
	sub, err := msgs.SubscribeMessageEvents(sctx, &imessagev1.SubscribeMessageEventsRequest{})
	if err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	opened := make(chan struct{})
	frames := newArrivals()
	recvDone := make(chan error, 1)
	go func() {
		first := true
		for {
			f, err := sub.Recv()
			if err != nil {
				recvDone <- err
				return
			}
			at := time.Now()
			if first {
				first = false
				close(opened)
			}
			if m := f.GetMessageChanged().GetMessageReceived().GetMessage(); m != nil {
				frames.arrived(m.GetGuid(), at)
			}
		}
	}()
	defer func() { cancel(); <-recvDone }()
	select {
	case <-opened:
	case err := <-recvDone:
		recvDone <- err
		return fmt.Errorf("subscribe: %w", err)
	case <-time.After(platformTimeout):
		return fmt.Errorf("subscribe: no first frame in %v", platformTimeout)
	}
	time.Sleep(300 * time.Millisecond) // the tailer's baseline, as in row 1a

	stored := newArrivals()
	stop := pollRelayEvents(ctx, s.relay, stored)
	defer stop()
	rnd := rand.New(rand.NewPCG(5, 6))
	const warm = 20
	for i := 0; i < warm+n; i++ {
		row, err := simDB.Insert(ctx, sim.Msg{Chat: chat, Text: fmt.Sprintf("platform inbound %d", i)})
		at := time.Now()
		if err != nil {
			return err
		}
		limit := time.NewTimer(platformTimeout)
		var got [2]time.Time
		for k, ch := range []<-chan time.Time{stored.await(row.GUID), frames.await(row.GUID)} {
			select {
			case got[k] = <-ch:
			case <-limit.C:
				return fmt.Errorf("message %d not seen %s within %v", i, []string{"at the relay", "on SubscribeMessageEvents"}[k], platformTimeout)
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		limit.Stop()
		if i >= warm {
			res.relayed = append(res.relayed, got[0].Sub(at))
			res.frame = append(res.frame, got[1].Sub(at))
		}
		time.Sleep(time.Duration(rnd.Int64N(int64(10 * time.Millisecond))))
	}
	return nil
}
