package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/line-agent/line-agent/agent"
	"github.com/line-agent/line-agent/pkg/capool"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// echoResult is the bare gRPC baseline: round trips of one bidirectional
// stream over loopback TLS, and messages per second pipelined through it.
type echoResult struct {
	rtt     []time.Duration
	perSec  float64
	pipeN   int
	pipeDur time.Duration
}

var echoDesc = grpc.ServiceDesc{
	ServiceName: "bench.Echo",
	HandlerType: (*any)(nil),
	Streams: []grpc.StreamDesc{{
		StreamName: "Echo", ServerStreams: true, ClientStreams: true,
		Handler: func(_ any, st grpc.ServerStream) error {
			for {
				m := new(linev1.RelayFrame)
				if err := st.RecvMsg(m); err != nil {
					return nil
				}
				if err := st.SendMsg(m); err != nil {
					return err
				}
			}
		},
	}},
}

// runEcho serves a minimal echo service with the relay's own certificate
// (pkiDir holds server.pem, server-key.pem and ca.pem) and measures it.
func runEcho(ctx context.Context, pkiDir string, n, pipelined int) (*echoResult, error) {
	cert, err := tls.LoadX509KeyPair(filepath.Join(pkiDir, "server.pem"), filepath.Join(pkiDir, "server-key.pem"))
	if err != nil {
		return nil, err
	}
	pool, err := capool.Load(filepath.Join(pkiDir, "ca.pem"))
	if err != nil {
		return nil, err
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})))
	srv.RegisterService(&echoDesc, nil)
	go srv.Serve(lis)
	defer srv.Stop()

	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12})))
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	st, err := cc.NewStream(sctx, &echoDesc.Streams[0], "/bench.Echo/Echo")
	if err != nil {
		return nil, err
	}
	msg := &linev1.RelayFrame{Frame: &linev1.RelayFrame_Command{Command: sendText("echo-0000000000", 1)}}
	res := &echoResult{}
	for i := 0; i < n+200; i++ { // 200 warm-up round trips
		t0 := time.Now()
		if err := st.SendMsg(msg); err != nil {
			return nil, err
		}
		if err := st.RecvMsg(new(linev1.RelayFrame)); err != nil {
			return nil, err
		}
		if i >= 200 {
			res.rtt = append(res.rtt, time.Since(t0))
		}
	}
	// Pipelined: up to 256 messages in flight, as many commands would be.
	sem := make(chan struct{}, 256)
	recvErr := make(chan error, 1)
	go func() {
		for i := 0; i < pipelined; i++ {
			if err := st.RecvMsg(new(linev1.RelayFrame)); err != nil {
				recvErr <- err
				return
			}
			<-sem
		}
		recvErr <- nil
	}()
	t0 := time.Now()
	for i := 0; i < pipelined; i++ {
		sem <- struct{}{}
		if err := st.SendMsg(msg); err != nil {
			return nil, err
		}
	}
	if err := <-recvErr; err != nil {
		return nil, err
	}
	res.pipeN, res.pipeDur = pipelined, time.Since(t0)
	res.perSec = float64(pipelined) / res.pipeDur.Seconds()
	st.CloseSend()
	return res, nil
}

type cmdResult struct {
	lat       []time.Duration
	tpN       int
	tpFailed  int
	tpDur     time.Duration
	tpPerSec  float64
	tpTimeout bool
}

// runCommands measures commands through a real relay and agent: n one at a
// time (submit to result stored at the relay), then tp submitted with up to
// 256 in flight across 64 chats.
func runCommands(ctx context.Context, dir string, n, tp int) (*cmdResult, *echoResult, error) {
	st, err := startRelay(ctx, dir)
	if err != nil {
		return nil, nil, err
	}
	defer st.close()
	if err := st.startAgent(ctx, agentBackend(instantDriver{}, nil)); err != nil {
		return nil, nil, err
	}
	echo, err := runEcho(ctx, filepath.Join(dir, "relay"), n, 20000)
	if err != nil {
		return nil, nil, fmt.Errorf("echo: %w", err)
	}
	res := &cmdResult{}
	for i := 0; i < n+100; i++ { // 100 warm-up commands
		id := fmt.Sprintf("lat-%06d", i)
		ch := st.hook.expect(id)
		t0 := time.Now()
		if _, err := st.relay.SubmitCommand(ctx, sendText(id, i%16)); err != nil {
			return nil, nil, err
		}
		select {
		case at := <-ch:
			if i >= 100 {
				res.lat = append(res.lat, at.Sub(t0))
			}
		case <-time.After(10 * time.Second):
			return nil, nil, fmt.Errorf("command %s: no result in 10s", id)
		}
	}
	for i := 0; i < 100; i++ {
		if v, err := st.relay.CommandView(fmt.Sprintf("lat-%06d", i)); err != nil || v.State != "succeeded" {
			return nil, nil, fmt.Errorf("command lat-%06d did not succeed: %v %+v", i, err, v)
		}
	}

	// Throughput through the one stream.
	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			return nil, nil, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return nil, nil, err
		}
		defer pprof.StopCPUProfile()
	}
	sem := make(chan struct{}, 256)
	var wg sync.WaitGroup
	var done, failed atomic.Int64
	tctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	t0 := time.Now()
	for i := 0; i < tp && tctx.Err() == nil; i++ {
		select {
		case sem <- struct{}{}:
		case <-tctx.Done():
			continue
		}
		id := fmt.Sprintf("tp-%06d", i)
		ch := st.hook.expect(id)
		if _, err := st.relay.SubmitCommand(tctx, sendText(id, i%64)); err != nil {
			<-sem
			failed.Add(1)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			select {
			case <-ch:
				done.Add(1)
			case <-tctx.Done():
			}
		}()
	}
	wg.Wait()
	res.tpDur = time.Since(t0)
	res.tpTimeout = tctx.Err() != nil
	// Count the ones that failed at the agent (UNAVAILABLE when its queue is full).
	for i := 0; i < tp; i++ {
		if v, err := st.relay.CommandView(fmt.Sprintf("tp-%06d", i)); err == nil && v.State == "failed" {
			res.tpFailed++
		}
	}
	res.tpN = int(done.Load())
	res.tpPerSec = float64(res.tpN) / res.tpDur.Seconds()
	return res, echo, nil
}

// journalCost times the agent journal's two durable writes per command
// (Begin records it running, Finish records the result), one command at a
// time: the floor under the agent's per-command cost and, since SQLite has
// one writer, the ceiling on its commands per second.
func journalCost(ctx context.Context, dir string, n int) ([]time.Duration, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	j, err := agent.OpenJournal(dir, 0)
	if err != nil {
		return nil, err
	}
	defer j.Close()
	var d []time.Duration
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("j-%06d", i)
		t0 := time.Now()
		if _, err := j.Begin(ctx, sendText(id, i%16)); err != nil {
			return nil, err
		}
		if err := j.Finish(ctx, &linev1.CommandResult{CommandId: id, Outcome: &linev1.CommandResult_Snapshot{Snapshot: &linev1.Snapshot{MessageGuid: "G-" + id}}}); err != nil {
			return nil, err
		}
		d = append(d, time.Since(t0))
	}
	return d, nil
}
