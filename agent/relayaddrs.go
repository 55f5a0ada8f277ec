package agent

import (
	"errors"
	"fmt"
	"net"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
)

// ErrBadRelayAddr is a relay address that is not host:port.
var ErrBadRelayAddr = errors.New("relay address must be host:port")

// relayAddrs splits a relay setting into its addresses: one host:port, or
// several separated by commas (replicas of one relay behind no load
// balancer: LINE_AGENT_RELAY=a:443,b:443). Empty entries and repeats are
// refused, so a typo is an error at start, not a dial that never works.
func relayAddrs(s string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, a := range strings.Split(s, ",") {
		a = strings.TrimSpace(a)
		host, port, err := net.SplitHostPort(a)
		if err != nil || host == "" || port == "" {
			return nil, fmt.Errorf("%w: %q in %q", ErrBadRelayAddr, a, s)
		}
		if seen[a] {
			return nil, fmt.Errorf("%w: %q is listed twice in %q", ErrBadRelayAddr, a, s)
		}
		seen[a] = true
		out = append(out, a)
	}
	return out, nil
}

// relayTarget is how grpc.NewClient reaches addrs: one address directly;
// several through a fixed resolver, whose default pick_first policy
// connects to the first that answers, in order, and, when that connection
// fails, starts again from the first: a replica that died is left for the
// next one within the connection's own backoff, and the agent comes back
// to the first when it is up again. Each address keeps its own host name
// for TLS, so every replica presents a certificate for its own name.
func relayTarget(addrs []string) (string, []grpc.DialOption) {
	if len(addrs) == 1 {
		return addrs[0], nil
	}
	r := manual.NewBuilderWithScheme("line-relays")
	state := resolver.State{}
	for _, a := range addrs {
		host, _, _ := net.SplitHostPort(a)
		state.Addresses = append(state.Addresses, resolver.Address{Addr: a, ServerName: host})
	}
	r.InitialState(state)
	return r.Scheme() + ":///relays", []grpc.DialOption{grpc.WithResolvers(r)}
}
