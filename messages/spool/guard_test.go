package spool

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/line-agent/line-agent/command"
	"github.com/line-agent/line-agent/messages/bridge"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// This machine may reach loopback only: every test here that involves
// another address checks it through refusal itself, or through a Fetcher
// whose resolver and dial of a checked address are injected, the dial
// failing the test for anything but the test server.

// publicIP stands for a public address: a fake name resolves to it and the
// injected dial takes it to the test server on 127.0.0.1. (203.0.113.0/24
// is a documentation range the guard does not refuse; nothing is ever
// dialled there.)
const publicIP = "203.0.113.10"

// The secrets of issue 8 item 7: no error may repeat them.
const (
	secretSig = "SECRETSIG123"
	secretSeg = "SECRETPATHSEG"
)

func noSecret2(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	msg := err.Error()
	if me := command.AsError(err); me != nil {
		msg += " | " + me.Proto().GetMessage() + " | " + me.LastState
	}
	for _, s := range []string{secretSig, secretSeg, "sig="} {
		if strings.Contains(msg, s) {
			t.Errorf("error %q leaks %q", msg, s)
		}
	}
}

func TestRefusal(t *testing.T) {
	refusedAlways := []string{
		"0.0.0.0", "0.1.2.3", "10.0.0.1", "10.255.255.255", "100.64.0.1", "100.127.255.254",
		"169.254.0.1", "169.254.169.254", "172.16.0.1", "172.31.255.255", "192.168.0.1",
		"192.168.255.255", "192.0.0.8", "198.18.0.1", "224.0.0.1", "239.255.255.250", "240.0.0.1",
		"255.255.255.255",
		"::", "fe80::1", "fe80::1%en0", "febf:ffff::1", "fec0::1", "fc00::1", "fd12:3456::1",
		"ff02::1", "ff05::2", "100::1", "::7f00:1", "::a00:1",
		"::ffff:169.254.169.254", "::ffff:10.0.0.1", "::ffff:192.168.1.1", "::ffff:100.64.0.1",
		"::ffff:0.0.0.0", "::ffff:255.255.255.255", "::ffff:224.0.0.1",
		"64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "64:ff9b:1::1", "2002:7f00:1::1", "2002:a00:1::",
	}
	loopback := []string{"127.0.0.1", "127.1.2.3", "127.255.255.255", "::1", "::ffff:127.0.0.1", "::ffff:127.0.0.2"}
	public := []string{
		"8.8.8.8", "1.1.1.1", "203.0.113.10", "172.15.255.255", "172.32.0.1", "100.63.255.255",
		"100.128.0.1", "192.169.0.1", "169.255.0.1", "11.0.0.1", "223.255.255.255",
		"2606:4700:4700::1111", "2001:4860:4860::8888", "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1",
	}
	for _, s := range refusedAlways {
		ip := netip.MustParseAddr(s)
		for _, allow := range []bool{false, true} {
			if refusal(ip, allow) == "" {
				t.Errorf("%s accepted (allowLoopback %v)", s, allow)
			}
		}
	}
	for _, s := range loopback {
		ip := netip.MustParseAddr(s)
		if why := refusal(ip, false); why != "a loopback address" {
			t.Errorf("%s: %q, want a loopback refusal", s, why)
		}
		if why := refusal(ip, true); why != "" {
			t.Errorf("%s refused with the test-only allowance: %s", s, why)
		}
	}
	for _, s := range public {
		if why := refusal(netip.MustParseAddr(s), false); why != "" {
			t.Errorf("%s refused: %s", s, why)
		}
	}
	if refusal(netip.Addr{}, true) == "" {
		t.Error("the zero address accepted")
	}
	for s, want := range map[string]string{
		"169.254.169.254": "link-local", "fe80::1": "link-local", "10.0.0.1": "private", "fd00::1": "private",
		"100.64.0.1": "carrier-grade NAT", "224.0.0.1": "multicast", "255.255.255.255": "broadcast",
		"0.0.0.0": "unspecified", "::": "unspecified", "::ffff:127.0.0.1": "loopback",
	} {
		if why := refusal(netip.MustParseAddr(s), false); !strings.Contains(why, want) {
			t.Errorf("%s: %q lacks %q", s, why, want)
		}
	}
}

// fakeNet is an injected resolver and dial: names resolve from a table
// (never through real DNS) and only publicIP:443 is dialled, to the test
// server. Any other dial fails the test.
type fakeNet struct {
	t      *testing.T
	names  map[string][]string
	target string // the test server's 127.0.0.1:port
	dials  atomic.Int64
}

func (n *fakeNet) lookup(_ context.Context, host string) ([]netip.Addr, error) {
	ss, ok := n.names[host]
	if !ok {
		n.t.Errorf("resolved %q, which the test does not know", host)
		return nil, &net.DNSError{Err: "no such host (test)", Name: host, IsNotFound: true}
	}
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out, nil
}

func (n *fakeNet) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	n.dials.Add(1)
	if addr != net.JoinHostPort(publicIP, "443") || n.target == "" {
		n.t.Errorf("dialled %s %s: the guard let a refused address through", network, addr)
		return nil, errors.New("test: this address must never be dialled")
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", n.target)
}

func (n *fakeNet) fetcher(client *http.Client) *Fetcher {
	return &Fetcher{Client: client, MaxBytes: 64 << 10, Timeout: 2 * time.Second, Retries: 1,
		RetryWaitMin: 10 * time.Millisecond, RetryWaitMax: 20 * time.Millisecond,
		lookup: n.lookup, dial: n.dial}
}

// Refused addresses, as IP literals or names resolving to them (one bad
// address among good ones is enough), are INVALID_ARGUMENT without a dial,
// whatever client the caller supplies: its dialers and its proxy are not
// used.
func TestGuardRefusesWithoutDialling(t *testing.T) {
	var proxyHits atomic.Int64
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { proxyHits.Add(1) }))
	defer proxy.Close()
	proxyURL, _ := url.Parse(proxy.URL)
	var callerDials atomic.Int64
	callerDial := func(context.Context, string, string) (net.Conn, error) {
		callerDials.Add(1)
		return nil, errors.New("test: the caller's dialer must not be used")
	}
	clients := map[string]*http.Client{
		"no client": nil,
		"caller's transport": {Transport: &http.Transport{
			Proxy: http.ProxyURL(proxyURL), DialContext: callerDial, DialTLSContext: callerDial,
		}},
	}
	n := &fakeNet{t: t, names: map[string][]string{
		"localhost":             {"127.0.0.1", "::1"},
		"metadata.example.com":  {"169.254.169.254"},
		"intranet.example.com":  {"10.1.2.3"},
		"mixed.example.com":     {publicIP, "192.168.1.10"},
		"mapped.example.com":    {"::ffff:127.0.0.1"},
		"cgnat.example.com":     {"100.64.1.1"},
		"linklocal.example.com": {"fe80::1"},
	}}
	hosts := []string{
		"127.0.0.1", "127.0.0.1:8443", "[::1]", "[::ffff:127.0.0.1]", "169.254.169.254", "[fe80::1]",
		"10.0.0.1", "172.16.0.1", "192.168.0.1", "100.64.0.1", "[fc00::1]", "0.0.0.0", "[::]",
		"255.255.255.255", "224.0.0.1", "[ff02::1]", "[::ffff:169.254.169.254]",
		"localhost", "metadata.example.com", "intranet.example.com", "mixed.example.com",
		"mapped.example.com", "cgnat.example.com", "linklocal.example.com",
	}
	for cname, client := range clients {
		for _, host := range hosts {
			raw := "https://" + host + "/" + secretSeg + "/latest/meta-data?sig=" + secretSig
			_, err := n.fetcher(client).Fetch(context.Background(), raw)
			me := wantCode(t, err, linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT)
			if !strings.Contains(me.Msg, "only public internet addresses") {
				t.Errorf("%s %s: message %q", cname, host, me.Msg)
			}
			u, _ := url.Parse(raw)
			if !strings.Contains(me.Msg, u.Host) {
				t.Errorf("%s %s: message %q does not name the host", cname, host, me.Msg)
			}
			noSecret2(t, err)
		}
	}
	if d := n.dials.Load(); d != 0 {
		t.Fatalf("%d dials", d)
	}
	if c, p := callerDials.Load(), proxyHits.Load(); c != 0 || p != 0 {
		t.Fatalf("the caller's dialer ran %d times, its proxy was contacted %d times", c, p)
	}
}

// A client whose transport the guard cannot go into is refused, not used.
func TestGuardNeedsAnHTTPTransport(t *testing.T) {
	var used atomic.Int64
	rt := roundTripper(func(*http.Request) (*http.Response, error) {
		used.Add(1)
		return nil, errors.New("test: must not be used")
	})
	n := &fakeNet{t: t}
	_, err := n.fetcher(&http.Client{Transport: rt}).Fetch(context.Background(), "https://10.0.0.1/x")
	wantCode(t, err, linev1.ErrorCode_ERROR_CODE_INTERNAL)
	if used.Load() != 0 || n.dials.Load() != 0 {
		t.Fatal("the transport was used")
	}
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// A public-looking name (files.example.com, resolved by the injected
// resolver to a public address the injected dial takes to the test server)
// is fetched; each of its redirects to a refused address is
// INVALID_ARGUMENT, not retried, and never dialled: the redirect to the
// test server's own 127.0.0.1 address, which would answer, included.
func TestGuardOnEveryRedirect(t *testing.T) {
	var loopbackHits atomic.Int64
	mux := http.NewServeMux()
	var srvAddr string
	hops := map[string]string{}
	for path, target := range map[string]func() string{
		"/to-loopback":  func() string { return "https://" + srvAddr + "/" + secretSeg + "/ok?sig=" + secretSig },
		"/to-localhost": func() string { _, p, _ := net.SplitHostPort(srvAddr); return "https://localhost:" + p + "/ok" },
		"/to-mapped": func() string {
			_, p, _ := net.SplitHostPort(srvAddr)
			return "https://[::ffff:127.0.0.1]:" + p + "/" + secretSeg + "?sig=" + secretSig
		},
		"/to-metadata":  func() string { return "https://169.254.169.254/latest/meta-data/" + secretSeg + "?sig=" + secretSig },
		"/to-intranet":  func() string { return "https://intranet.example.com/" + secretSeg + "?sig=" + secretSig },
		"/to-linklocal": func() string { return "https://[fe80::1]/" + secretSeg },
		"/to-private":   func() string { return "https://10.0.0.1/" + secretSeg },
		"/second-hop":   func() string { return "/" + secretSeg + "/to-metadata?sig=" + secretSig },
	} {
		hops[path] = ""
		mux.HandleFunc("/"+secretSeg+path, func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, target(), http.StatusFound)
		})
	}
	var okHits atomic.Int64
	mux.HandleFunc("/"+secretSeg+"/ok", func(w http.ResponseWriter, r *http.Request) {
		okHits.Add(1)
		w.Write(body)
	})
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) { loopbackHits.Add(1); w.Write(body) })
	var redirects atomic.Int64
	mux.HandleFunc("/"+secretSeg+"/to-ok", func(w http.ResponseWriter, r *http.Request) {
		redirects.Add(1)
		http.Redirect(w, r, "https://files.example.com/"+secretSeg+"/ok?sig="+secretSig, http.StatusFound)
	})
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Host != "files.example.com" {
			loopbackHits.Add(1) // reached by its 127.0.0.1 address: the guard failed
		}
		mux.ServeHTTP(w, r)
	}))
	defer srv.Close()
	srvAddr = srv.Listener.Addr().String()
	n := &fakeNet{t: t, target: srvAddr, names: map[string][]string{
		"files.example.com":    {publicIP},
		"localhost":            {"127.0.0.1"},
		"intranet.example.com": {"10.20.30.40"},
	}}
	base := "https://files.example.com/" + secretSeg

	// The first hop and a redirect between public addresses work.
	for _, p := range []string{"/ok", "/to-ok"} {
		got, err := n.fetcher(srv.Client()).Fetch(context.Background(), base+p+"?sig="+secretSig)
		if err != nil || len(got) != len(body) {
			t.Fatalf("%s: %d bytes, %v", p, len(got), err)
		}
	}
	dialsOK := n.dials.Load()

	for path := range hops {
		t.Run(path, func(t *testing.T) {
			_, err := n.fetcher(srv.Client()).Fetch(context.Background(), base+path+"?sig="+secretSig)
			me := wantCode(t, err, linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT)
			if !strings.Contains(me.Msg, "files.example.com") || !strings.Contains(me.Msg, "redirected to") ||
				!strings.Contains(me.Msg, "only public internet addresses") {
				t.Errorf("message %q", me.Msg)
			}
			noSecret2(t, err)
		})
	}
	if h := loopbackHits.Load(); h != 0 {
		t.Fatalf("the server was reached by a refused address %d times", h)
	}
	// One connection per Fetch at most: the refused hops never dialled.
	if d := n.dials.Load() - dialsOK; d > int64(len(hops)) {
		t.Fatalf("%d dials for %d fetches", d, len(hops))
	}
}

// Without the test-only allowance, loopback is refused however the
// Fetcher is reached: directly with the caller's client, or through the
// Spool's Stage and Image. The server is never contacted.
func TestLoopbackRefusedByDefault(t *testing.T) {
	s := newTLSServer(t, map[string]http.HandlerFunc{"/ok": func(w http.ResponseWriter, r *http.Request) { w.Write(pngImg) }})
	_, err := (&Fetcher{Client: s.Client()}).Fetch(context.Background(), s.url("/ok"))
	me := wantCode(t, err, linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT)
	if !strings.Contains(me.Msg, s.Listener.Addr().String()) || !strings.Contains(me.Msg, "loopback") {
		t.Errorf("message %q", me.Msg)
	}
	noSecret(t, err)
	sp := New(Options{Dir: t.TempDir(), HTTPClient: s.Client()})
	if _, release, err := sp.Stage(context.Background(), bridge.Asset{URL: s.url("/ok")}); err == nil {
		release()
		t.Error("Stage fetched from loopback")
	} else {
		wantCode(t, err, linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT)
	}
	if _, _, err := sp.Image(context.Background(), ImageSource{URL: s.url("/ok")}, ImageLimits{}); err == nil {
		t.Error("Image fetched from loopback")
	} else {
		wantCode(t, err, linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT)
	}
	if n := s.hits["/ok"].Load(); n != 0 {
		t.Fatalf("the loopback server was contacted %d times", n)
	}
	// The allowance lets exactly this through.
	sp = New(Options{Dir: t.TempDir(), HTTPClient: s.Client(), AllowLoopbackForTests: true})
	img, cleanup, err := sp.Image(context.Background(), ImageSource{URL: s.url("/ok")}, ImageLimits{})
	if err != nil {
		t.Fatal(err)
	}
	cleanup()
	if img.Format != FormatPNG {
		t.Fatalf("format %s", img.Format)
	}
}

// Every error about a URL (refused, failed, too large, redirected, not
// found, too slow) names the host only: neither the secret path segment
// nor the signed query reaches the error, hence neither the log nor the
// relay.
func TestURLErrorsNameTheHostOnly(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/"+secretSeg+"/big", func(w http.ResponseWriter, r *http.Request) {
		w.Write(make([]byte, 128<<10))
	})
	mux.HandleFunc("/"+secretSeg+"/down", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusBadGateway)
	})
	mux.HandleFunc("/"+secretSeg+"/to-http", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://files.example.com/"+secretSeg+"?sig="+secretSig, http.StatusFound)
	})
	mux.HandleFunc("/"+secretSeg+"/to-metadata", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "https://169.254.169.254/"+secretSeg+"?sig="+secretSig, http.StatusFound)
	})
	mux.HandleFunc("/"+secretSeg+"/slow", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte{1})
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	mux.HandleFunc("/"+secretSeg+"/files/", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("echo hi\n")) })
	srv := httptest.NewTLSServer(mux)
	defer srv.Close()
	n := &fakeNet{t: t, target: srv.Listener.Addr().String(), names: map[string][]string{"files.example.com": {publicIP}}}
	f := n.fetcher(srv.Client())
	f.Timeout = 300 * time.Millisecond
	q := "?sig=" + secretSig
	for _, raw := range []string{
		"https://files.example.com/" + secretSeg + "/missing" + q,
		"https://files.example.com/" + secretSeg + "/big" + q,
		"https://files.example.com/" + secretSeg + "/down" + q,
		"https://files.example.com/" + secretSeg + "/to-http" + q,
		"https://files.example.com/" + secretSeg + "/to-metadata" + q,
		"https://files.example.com/" + secretSeg + "/slow" + q,
		"https://169.254.169.254/" + secretSeg + q,
		"https://127.0.0.1/" + secretSeg + q,
		"http://files.example.com/" + secretSeg + q,
		"https://user:" + secretSeg + "@files.example.com/x" + q,
		"https://files.example.com/" + secretSeg + "%zz" + q,
	} {
		_, err := f.Fetch(context.Background(), raw)
		if err == nil {
			t.Errorf("fetched")
			continue
		}
		noSecret2(t, err)
	}
	// The Spool's own errors too: a name taken from the URL is never
	// repeated (here a program's name, as the path's last segment).
	sp := New(Options{Dir: t.TempDir()})
	sp.fetch = *n.fetcher(srv.Client())
	for _, last := range []string{"run.command", "run.sh%00", "run.sh%5C", "tool.app%0A", "run.command%2F", secretSeg + ".sh"} {
		_, release, err := sp.Stage(context.Background(), bridge.Asset{URL: "https://files.example.com/" + secretSeg + "/files/" + last + q})
		if err == nil {
			release()
			t.Errorf("%s: staged", last)
			continue
		}
		wantCode(t, err, linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT)
		noSecret2(t, err)
	}
}
