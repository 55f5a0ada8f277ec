package replicas

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/line-agent/line-agent/pkg/capool"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// rawAgent is an enrolled agent spoken for by the test itself, frame by
// frame, so it can hold two streams at once as line-agent never does.
type rawAgent struct {
	id, token string
	lines     []string
	ca        *x509.CertPool
}

// enrollRaw enrolls an agent for line through r with a new project token.
func enrollRaw(ctx context.Context, t *testing.T, f *fleet, r *replica, line string) *rawAgent {
	t.Helper()
	tok, err := f.relayCommand(ctx, "token", "create", "--store", f.store)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := capool.Load(filepath.Join(f.replicas[0].dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	ag := &rawAgent{lines: []string{line}, ca: pool}
	cc := ag.dial(t, r)
	resp, err := linev1.NewLineRelayClient(cc).Enroll(ctx, &linev1.EnrollRequest{ProjectToken: tok, Hostname: "raw", Version: "test", Lines: ag.lines})
	if err != nil {
		t.Fatalf("Enroll: %v", err)
	}
	ag.id, ag.token = resp.GetAgentId(), resp.GetCredential().GetAccessToken()
	return ag
}

func (ag *rawAgent) dial(t *testing.T, r *replica) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+r.grpc, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		RootCAs: ag.ca, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13,
	})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// rawStream is one Connect stream of a rawAgent.
type rawStream struct {
	via      *replica
	stream   linev1.LineRelay_ConnectClient
	sendMu   sync.Mutex
	commands chan string
	done     chan struct{}
	recvErr  error // set before done is closed
}

// connect opens a stream to r, says Hello and waits for Welcome; health
// checks are answered OK from then on.
func (ag *rawAgent) connect(ctx context.Context, t *testing.T, r *replica) *rawStream {
	sctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+ag.token))
	t.Cleanup(cancel)
	st, err := linev1.NewLineRelayClient(ag.dial(t, r)).Connect(sctx)
	if err != nil {
		t.Errorf("Connect to %s: %v", r.name, err)
		return nil
	}
	s := &rawStream{via: r, stream: st, commands: make(chan string, 64), done: make(chan struct{})}
	s.send(&linev1.AgentFrame{Frame: &linev1.AgentFrame_Hello{Hello: &linev1.Hello{
		AgentId: ag.id, Version: "test", Lines: ag.lines, Hostname: "raw", Driver: "sim",
		Capabilities: []linev1.Capability{linev1.Capability_CAPABILITY_SEND_TEXT, linev1.Capability_CAPABILITY_TYPING},
	}}})
	welcome := make(chan struct{})
	go func() {
		defer close(s.done)
		for {
			fr, err := st.Recv()
			if err != nil {
				s.recvErr = err
				return
			}
			switch x := fr.GetFrame().(type) {
			case *linev1.RelayFrame_Welcome:
				close(welcome)
			case *linev1.RelayFrame_Command:
				s.commands <- x.Command.GetId()
			case *linev1.RelayFrame_HealthCheck:
				s.send(&linev1.AgentFrame{Frame: &linev1.AgentFrame_Health{Health: &linev1.HealthReport{
					CheckId: x.HealthCheck.GetId(), Status: linev1.HealthStatus_HEALTH_STATUS_OK,
				}}})
			}
		}
	}()
	select {
	case <-welcome:
	case <-s.done:
		t.Errorf("the stream to %s ended before Welcome: %v", r.name, s.recvErr)
		return nil
	case <-time.After(30 * time.Second):
		t.Errorf("no Welcome from %s", r.name)
		return nil
	}
	return s
}

func (s *rawStream) send(f *linev1.AgentFrame) {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	_ = s.stream.Send(f) // a send on an ended stream is what a loser may do
}

func (s *rawStream) ended() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

func (s *rawStream) err() error {
	<-s.done
	return s.recvErr
}

// command waits (within limit) for the next command's id.
func (s *rawStream) command(t *testing.T, limit time.Duration) string {
	t.Helper()
	select {
	case id := <-s.commands:
		return id
	case <-time.After(limit):
		t.Fatalf("no command on the stream to %s within %s", s.via.name, limit)
	}
	return ""
}

// result sends a successful result for id whose message guid is guid.
func (s *rawStream) result(id, guid string) {
	s.send(&linev1.AgentFrame{Frame: &linev1.AgentFrame_Result{Result: &linev1.CommandResult{
		CommandId: id, Outcome: &linev1.CommandResult_Snapshot{Snapshot: &linev1.Snapshot{MessageGuid: guid, Sent: true}},
		FinishedAt: timestamppb.Now(),
	}}})
}
