// Package fleetload is a load generator that is a fleet: many simulated
// agents at once, each speaking the real agent protocol (proto/line/v1)
// to a relay over its own TLS connection, with its own enrollment, stream
// and lines; a bounded pool of operator API clients submitting commands
// to them over HTTP and timing each to its result; and long-poll
// subscribers of GET /v1/events timing each event from the agent's send to
// its arrival. cmd/bench uses it for the fleet rows (docs/benchmarks.md).
//
// Why simulated agents rather than line-agent processes: a real agent
// carries a journal, a chat.db tailer and a driver, which on one machine
// would measure 500 SQLite databases rather than the relay. A simulated
// agent does on the stream exactly what line-agent does (Hello, Welcome,
// health reports, heartbeats, an accepted update and a result per command,
// events numbered within the relay's window, Goodbye), and answers every
// command at once, as the bench's instant driver does behind a real agent.
package fleetload

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/line-agent/line-agent/pkg/capool"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// Version is what the simulated agents report in Enroll and Hello, so an
// operator looking at GET /v1/agents tells them from real Macs.
const Version = "fleetload"

// Target is one relay: where agents dial, the CA they trust, and the
// operator API commands are submitted to.
type Target struct {
	// GRPCAddr is the agents' listener, host:port.
	GRPCAddr string
	// CAFile is the relay's ca.pem.
	CAFile string
	// HTTPAddr is the operator API, host:port.
	HTTPAddr string
}

// Options configure a fleet.
type Options struct {
	// Targets are the relays; agent i dials Targets[i % len(Targets)], so
	// a fleet over two replicas is split evenly between them.
	Targets []Target
	// Agents is how many simulated agents to run.
	Agents int
	// ProjectToken enrolls every agent (one project token may enroll a
	// whole fleet; each agent still gets its own id, secret and access
	// token).
	ProjectToken string
	// LineBase numbers the lines: agent i serves +1 LineBase+i (E.164,
	// eleven digits), so fleets on one store do not collide. Default
	// 5551000000.
	LineBase int64
	// Parallel bounds how many agents enroll and connect at once.
	// Default 16.
	Parallel int
}

// Fleet is a running set of simulated agents.
type Fleet struct {
	agents []*Agent
	conns  []*grpc.ClientConn
	cancel context.CancelFunc
}

// Start enrolls every agent with the relay of its target, opens its
// stream and waits until each has been welcomed and has answered its first
// health check (the relay routes to it from then on; it records the report
// a moment later). ctx bounds the start; the agents run until Close.
func Start(ctx context.Context, o Options) (*Fleet, error) {
	if len(o.Targets) == 0 || o.Agents <= 0 || o.ProjectToken == "" {
		return nil, errors.New("fleetload: Options needs Targets, Agents and ProjectToken")
	}
	if o.LineBase == 0 {
		o.LineBase = 5551000000
	}
	if o.Parallel <= 0 {
		o.Parallel = 16
	}
	runCtx, cancel := context.WithCancel(context.Background())
	f := &Fleet{cancel: cancel}
	pools := make([]*x509.CertPool, len(o.Targets))
	for i, t := range o.Targets {
		p, err := capool.Load(t.CAFile)
		if err != nil {
			cancel()
			return nil, fmt.Errorf("fleetload: the relay's CA: %w", err)
		}
		pools[i] = p
	}
	for i := range o.Agents {
		ti := i % len(o.Targets)
		cc, err := dial(o.Targets[ti].GRPCAddr, pools[ti])
		if err != nil {
			f.Close()
			return nil, err
		}
		f.conns = append(f.conns, cc)
		f.agents = append(f.agents, &Agent{
			index: i, target: o.Targets[ti], lines: []string{fmt.Sprintf("+1%d", o.LineBase+int64(i))},
			epoch: "fleetload-" + randomHex(6), cc: cc, client: linev1.NewLineRelayClient(cc),
			emit: make(chan *linev1.Event, emitQueue), ready: make(chan struct{}), done: make(chan struct{}),
		})
	}
	sem := make(chan struct{}, o.Parallel)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	for _, a := range f.agents {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			close(a.done) // never ran; Close does not wait for it
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			err := a.enroll(ctx, o.ProjectToken)
			if err == nil {
				go a.run(runCtx)
				err = a.waitReady(ctx)
			} else {
				close(a.done) // never ran
			}
			if err != nil {
				mu.Lock()
				firstErr = cmp(firstErr, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if err := cmp(firstErr, ctx.Err()); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// cmp keeps the first error.
func cmp(first, next error) error {
	if first != nil {
		return first
	}
	return next
}

func (a *Agent) waitReady(ctx context.Context) error {
	t := time.NewTimer(welcomeWait + 5*time.Second)
	defer t.Stop()
	select {
	case <-a.ready:
		return nil
	case <-a.done:
		return fmt.Errorf("fleetload: agent %d (%s): %w", a.index, a.id, a.err)
	case <-t.C:
		return fmt.Errorf("fleetload: agent %d (%s): no health check within %s of connecting", a.index, a.id, welcomeWait+5*time.Second)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Agents are the fleet's agents, in order.
func (f *Fleet) Agents() []*Agent { return f.agents }

// Lines are the agents' first lines, in the agents' order, each with the
// relay its agent is connected to: what a Load addresses.
func (f *Fleet) Lines() []Line {
	ls := make([]Line, len(f.agents))
	for i, a := range f.agents {
		ls[i] = a.Addr()
	}
	return ls
}

// Answered is how many commands the whole fleet has answered.
func (f *Fleet) Answered() int64 {
	var n int64
	for _, a := range f.agents {
		n += a.Answered()
	}
	return n
}

// Lost is how many agents' streams have ended before Close, with the
// first reason: under load that is a finding, not something to retry.
func (f *Fleet) Lost() (int, error) {
	n, first := 0, error(nil)
	for _, a := range f.agents {
		select {
		case <-a.done:
			n++
			first = cmp(first, a.err)
		default:
		}
	}
	return n, first
}

// Close says Goodbye on every stream, waits (bounded) for the streams to
// end and closes the connections.
func (f *Fleet) Close() {
	f.cancel()
	limit := time.After(2 * goodbyeWait)
	for _, a := range f.agents {
		select {
		case <-a.done:
		case <-limit:
		}
	}
	for _, cc := range f.conns {
		cc.Close()
	}
}

// dial is one Mac's connection: TLS 1.3 trusting only the relay's CA, and
// the real agent's keepalive (30 s, 10 s timeout, also without a stream).
func dial(addr string, pool *x509.CertPool) (*grpc.ClientConn, error) {
	cc, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13})),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}))
	if err != nil {
		return nil, fmt.Errorf("fleetload: dial %s: %w", addr, err)
	}
	return cc, nil
}
