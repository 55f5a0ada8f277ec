package spool

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// The address guard: the Fetcher dials public internet addresses only, on
// the first hop and on every redirect. A relay-supplied URL must not make
// the agent reach the Mac itself (127.0.0.1: the private-API helper's port,
// anything else listening locally), the cloud's metadata service
// (169.254.169.254), or the office network behind the Mac.
//
// The check is on the address actually dialled, not on the URL's host
// name: the guard resolves the name, refuses the host when any of its
// addresses is refused, and dials one of the checked addresses itself, so
// neither a name that resolves to 127.0.0.1, nor an IP written in an odd
// form, nor a DNS answer that changes between a check and the dial
// (rebinding) gets through.

// prefixRefusal is a range the guard refuses and why.
type prefixRefusal struct {
	p   netip.Prefix
	why string
}

func refused(prefix, why string) prefixRefusal {
	return prefixRefusal{netip.MustParsePrefix(prefix), why}
}

// refusedRanges are every range the guard refuses, IPv4 then IPv6.
// IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) are judged as the IPv4
// address they carry; NAT64 and 6to4 addresses by the IPv4 address they
// embed.
var refusedRanges = []prefixRefusal{
	refused("0.0.0.0/8", "an unspecified (this-network) address"),
	refused("10.0.0.0/8", "a private address"),
	refused("100.64.0.0/10", "a carrier-grade NAT (shared) address"),
	refused("127.0.0.0/8", "a loopback address"),
	refused("169.254.0.0/16", "a link-local address"),
	refused("172.16.0.0/12", "a private address"),
	refused("192.0.0.0/24", "an address reserved for IETF protocols"),
	refused("192.168.0.0/16", "a private address"),
	refused("198.18.0.0/15", "an address reserved for benchmarking"),
	refused("224.0.0.0/4", "a multicast address"),
	refused("240.0.0.0/4", "a reserved or broadcast address"),

	refused("::/128", "an unspecified address"),
	refused("::1/128", "a loopback address"),
	refused("::/96", "an IPv4-compatible (deprecated) address"),
	refused("100::/64", "a discard-only address"),
	refused("64:ff9b:1::/48", "a local-use NAT64 address"),
	refused("fc00::/7", "a private (unique local) address"),
	refused("fe80::/10", "a link-local address"),
	refused("fec0::/10", "a site-local (deprecated) address"),
	refused("ff00::/8", "a multicast address"),
}

var (
	nat64     = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour = netip.MustParsePrefix("2002::/16")
)

// refusal says why the guard will not dial ip, or "" when ip is a public
// unicast address. allowLoopback (tests only) accepts 127.0.0.0/8 and ::1,
// IPv4-mapped forms included, and nothing else.
func refusal(ip netip.Addr, allowLoopback bool) string {
	if !ip.IsValid() {
		return "not an IP address"
	}
	ip = ip.WithZone("").Unmap()
	if allowLoopback && ip.IsLoopback() {
		return ""
	}
	for _, r := range refusedRanges {
		if r.p.Contains(ip) {
			return r.why
		}
	}
	b := ip.As16()
	switch {
	case nat64.Contains(ip):
		if why := refusal(netip.AddrFrom4([4]byte(b[12:16])), false); why != "" {
			return "a NAT64 address of " + why
		}
	case sixToFour.Contains(ip):
		if why := refusal(netip.AddrFrom4([4]byte(b[2:6])), false); why != "" {
			return "a 6to4 address of " + why
		}
	}
	// Whatever the table misses (255.255.255.255 is in 240/4 already).
	if !ip.IsGlobalUnicast() {
		return "not a public unicast address"
	}
	return ""
}

// addressError is a dial the guard refused. It names the host as the URL
// (or the redirect) gave it, never the path, the query or the addresses it
// resolved to.
type addressError struct {
	host string
	why  string
}

func (e *addressError) Error() string {
	return fmt.Sprintf("%s has %s; only public internet addresses are fetched", e.host, e.why)
}

// guard is the Fetcher transport's only way to open a connection.
type guard struct {
	allowLoopback bool
	// lookup resolves a host name; default the system resolver.
	lookup func(ctx context.Context, host string) ([]netip.Addr, error)
	// dial opens a connection to an address the guard has checked;
	// default a net.Dialer.
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// defaultDialer is what DefaultTransport dials with.
var defaultDialer = &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}

func defaultLookup(ctx context.Context, host string) ([]netip.Addr, error) {
	return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
}

// DialContext resolves addr's host, refuses it when any of its addresses
// is refused, and dials the checked addresses in turn.
func (g guard) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	var ips []netip.Addr
	if ip, err := netip.ParseAddr(host); err == nil {
		ips = []netip.Addr{ip}
	} else {
		lookup := g.lookup
		if lookup == nil {
			lookup = defaultLookup
		}
		if ips, err = lookup(ctx, host); err != nil {
			return nil, err
		}
		if len(ips) == 0 {
			return nil, &net.DNSError{Err: "no addresses", Name: host, IsNotFound: true}
		}
	}
	checked := make([]netip.Addr, 0, len(ips))
	for _, ip := range ips {
		if why := refusal(ip, g.allowLoopback); why != "" {
			return nil, &addressError{host: host, why: why}
		}
		checked = append(checked, ip.WithZone("").Unmap())
	}
	dial := g.dial
	if dial == nil {
		dial = defaultDialer.DialContext
	}
	var first error
	for _, ip := range checked {
		c, err := dial(ctx, network, net.JoinHostPort(ip.String(), port))
		if err == nil {
			return c, nil
		}
		if first == nil {
			first = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, first
}
