package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"io/fs"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/line-agent/line-agent/agent"
	"github.com/line-agent/line-agent/component"
	"github.com/line-agent/line-agent/messages/sim"
	"github.com/line-agent/line-agent/relay"
)

// doctorJSON runs `line-agent doctor --json args...` in-process and
// returns its exit code and findings by name.
func doctorJSON(t *testing.T, args ...string) (int, map[string]finding, []finding) {
	t.Helper()
	code, out, errOut := run(t, append([]string{"doctor", "--json"}, args...)...)
	var list []finding
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("doctor --json printed no JSON list (%v); exit %d\n%s\n%s", err, code, out, errOut)
	}
	byName := map[string]finding{}
	for _, f := range list {
		if _, dup := byName[f.Name]; dup {
			t.Errorf("check %s listed twice", f.Name)
		}
		if !slices.Contains([]string{verdictPass, verdictWarn, verdictFail, verdictSkip}, f.Status) || f.Detail == "" {
			t.Errorf("finding %+v: bad status or no detail", f)
		}
		if (f.Status == verdictFail || f.Status == verdictWarn) && f.Fix == "" {
			t.Errorf("%s %s without a fix: %s", f.Status, f.Name, f.Detail)
		}
		byName[f.Name] = f
	}
	return code, byName, list
}

// want asserts a finding's verdict and that its detail and fix hold the
// given texts.
func want(t *testing.T, found map[string]finding, name, status, inDetail, inFix string) {
	t.Helper()
	f, ok := found[name]
	if !ok {
		t.Errorf("no %s check", name)
		return
	}
	if f.Status != status || !strings.Contains(f.Detail, inDetail) || !strings.Contains(f.Fix, inFix) {
		t.Errorf("%s: %s %q fix %q; want %s with %q, fix with %q", name, f.Status, f.Detail, f.Fix, status, inDetail, inFix)
	}
}

// startRelay starts a real line-relay on 127.0.0.1 with TLS and enrolls a
// data directory with it.
func startRelay(t *testing.T) (srv *relay.Server, dataDir string) {
	t.Helper()
	ctx := context.Background()
	srv, err := relay.New(relay.Options{DataDir: t.TempDir(), GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	tok, err := srv.CreateProjectToken(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dataDir = t.TempDir()
	if _, err := agent.Enroll(ctx, agent.EnrollOptions{DialOptions: agent.DialOptions{Addr: srv.GRPCAddr(), CAFile: srv.CAFile()}, Token: tok, DataDir: dataDir}); err != nil {
		t.Fatal(err)
	}
	return srv, dataDir
}

// No agent runs; this Linux machine stands in for a Mac with every
// trouble at once, through fakes of ps, osascript, csrutil and launchctl
// (real processes): chat.db missing, Messages not running and BlueBubbles
// Server holding the helper's port, Automation denied (-1743), SIP on, no
// LaunchAgent. Each is FAIL or WARN with its own fix; the relay (real,
// TLS, 127.0.0.1) verifies against the enrolled CA, the clock agrees with
// it, the disk has room; doctor exits 1; the text output says the same.
func TestDoctorFindsWhatIsWrong(t *testing.T) {
	_, dataDir := startRelay(t)
	fakes := t.TempDir()
	t.Setenv("HOME", fakes) // no MobileMeAccounts.plist: iCloud signed out
	t.Setenv("LINE_AGENT_DATA_DIR", dataDir)
	t.Setenv("LINE_AGENT_PS", writeFake(t, fakes, "ps", `printf '    1 /sbin/launchd\n   88 /Applications/BlueBubbles.app/Contents/MacOS/BlueBubbles\n'`))
	t.Setenv("LINE_AGENT_OSASCRIPT", writeFake(t, fakes, "osascript", `cat >/dev/null; echo "-:1:2: execution error: Not authorized to send Apple events to Messages. (-1743)" >&2; exit 1`))
	t.Setenv("LINE_AGENT_CSRUTIL", writeFake(t, fakes, "csrutil", `echo "System Integrity Protection status: enabled."`))
	t.Setenv("LINE_AGENT_LAUNCHCTL", writeFake(t, fakes, "launchctl", `echo "Could not find service \"$2\" in domain for port" >&2; exit 113`))
	taken, err := net.Listen("tcp", "127.0.0.1:0") // BlueBubbles Server, as far as doctor can tell
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	t.Setenv("LINE_AGENT_HELPER_ADDR", taken.Addr().String())
	missing := filepath.Join(fakes, "Library", "Messages", "chat.db")

	code, found, list := doctorJSON(t, "--chat-db", missing)
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	var names []string
	for _, f := range list {
		names = append(names, f.Name)
	}
	wantNames := []string{checkAgent, checkLaunchd, component.ChatDB, component.Messages, component.Automation, component.ICloud,
		component.Helper, checkSIP, checkHelperPort, component.Relay, checkClock, component.Disk}
	if !slices.Equal(names, wantNames) {
		t.Errorf("checks %v, want %v", names, wantNames)
	}
	want(t, found, checkAgent, verdictWarn, "no agent answers", "line-agent run")
	want(t, found, checkLaunchd, verdictWarn, "no LaunchAgent dev.line-agent.agent", "line-agent install")
	want(t, found, component.ChatDB, verdictFail, "no chat.db at "+missing, "sign in once")
	if strings.Contains(found[component.ChatDB].Fix, "Full Disk Access") {
		t.Errorf("a missing chat.db is not a Full Disk Access problem: %q", found[component.ChatDB].Fix)
	}
	want(t, found, component.Messages, verdictFail, "not running", "open -a Messages")
	want(t, found, component.Automation, verdictFail, "-1743", "Privacy & Security > Automation")
	want(t, found, component.ICloud, verdictFail, "iCloud for chat backgrounds: not signed in", "Automation")
	want(t, found, component.Helper, verdictSkip, "agent is not running", "")
	want(t, found, checkSIP, verdictFail, "status: enabled", "csrutil disable")
	want(t, found, checkHelperPort, verdictFail, "taken by BlueBubbles Server (pid 88", "quit BlueBubbles Server")
	want(t, found, component.Relay, verdictPass, "verified against", "")
	want(t, found, checkClock, verdictPass, "the relay's clock is", "")
	want(t, found, component.Disk, verdictPass, "free of", "")

	// The same, for people: a verdict a line, the fix under it, a count.
	code, out, errOut := run(t, "doctor", "--chat-db", missing)
	if code != 1 || !strings.Contains(errOut, "checks failed") {
		t.Errorf("text: exit %d, %q", code, errOut)
	}
	for _, s := range []string{"FAIL  sip", "fix: start up in Recovery", "PASS  relay", "3 passed, 6 failed, 2 warned, 1 skipped"} {
		if !strings.Contains(out, s) {
			t.Errorf("text output lacks %q:\n%s", s, out)
		}
	}

	// --no-helper: the helper and SIP are not wanted.
	_, found, _ = doctorJSON(t, "--chat-db", missing, "--no-helper")
	want(t, found, checkSIP, verdictSkip, "--no-helper", "")
	want(t, found, component.Helper, verdictSkip, "--no-helper", "")
}

// Without fakes configured, what only a Mac has is SKIP on Linux, never a
// crash; what Linux can check runs.
func TestDoctorOnLinuxSkipsTheMac(t *testing.T) {
	_, dataDir := startRelay(t)
	t.Setenv("LINE_AGENT_DATA_DIR", dataDir)
	t.Setenv("LINE_AGENT_HELPER_ADDR", freeAddr(t))
	code, found, _ := doctorJSON(t)
	for _, n := range []string{checkLaunchd, component.ChatDB, component.Messages, component.Automation, component.ICloud, checkSIP} {
		want(t, found, n, verdictSkip, "not checkable on linux", "")
	}
	for _, n := range []string{component.Relay, checkClock, component.Disk, checkHelperPort} {
		want(t, found, n, verdictPass, "", "")
	}
	if code != 0 {
		t.Errorf("exit %d with nothing failed", code)
	}
}

// chat.db: readable is PASS; missing, not SQLite, and unreadable are FAIL
// with different fixes: macOS's privacy refusal (EPERM) is Full Disk
// Access, a file mode (EACCES) says to look at the mode first.
func TestDoctorChatDB(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "chat.db")
	st, err := sim.Create(good)
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	if f := checkChatDBFile(good); f.Status != verdictPass {
		t.Errorf("a real chat.db: %+v", f)
	}
	junk := filepath.Join(dir, "junk.db")
	os.WriteFile(junk, []byte("not a database at all"), 0o600)
	if f := checkChatDBFile(junk); f.Status != verdictFail || !strings.Contains(f.Detail, "not a SQLite database") {
		t.Errorf("junk: %+v", f)
	}
	if f := checkChatDBFile(filepath.Join(dir, "none.db")); f.Status != verdictFail || !strings.Contains(f.Fix, "sign in once") {
		t.Errorf("missing: %+v", f)
	}
	eperm := chatDBOpenFailure(good, &fs.PathError{Op: "open", Path: good, Err: syscall.EPERM})
	if eperm.Status != verdictFail || !strings.Contains(eperm.Detail, "no Full Disk Access") || !strings.HasPrefix(eperm.Fix, "System Settings > Privacy & Security > Full Disk Access") {
		t.Errorf("EPERM: %+v", eperm)
	}
	eacces := chatDBOpenFailure(good, &fs.PathError{Op: "open", Path: good, Err: syscall.EACCES})
	if eacces.Status != verdictFail || !strings.Contains(eacces.Detail, "mode or owner") || !strings.Contains(eacces.Fix, "ls -l") || !strings.Contains(eacces.Fix, "Full Disk Access") {
		t.Errorf("EACCES: %+v", eacces)
	}
	// A real mode-000 file, where this user cannot read it.
	locked := filepath.Join(dir, "locked.db")
	os.WriteFile(locked, []byte(sqliteMagic), 0o000)
	if os.Geteuid() == 0 {
		t.Log("running as root, which reads a mode-000 file: the real EACCES is not checked")
		return
	}
	if f := checkChatDBFile(locked); f.Status != verdictFail || !strings.Contains(f.Detail, "permission denied") {
		t.Errorf("mode 000: %+v", f)
	}
	// Through the command, with --chat-db.
	t.Setenv("LINE_AGENT_DATA_DIR", dir)
	_, found, _ := doctorJSON(t, "--chat-db", locked, "--relay", freeAddr(t))
	want(t, found, component.ChatDB, verdictFail, "permission denied", "chmod")
}

// Certificate and connection failures are said plainly: a CA that did not
// sign the certificate, a certificate for another name, an expired one, a
// server that does not speak TLS, nobody listening.
func TestDoctorRelayFailures(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("LINE_AGENT_DATA_DIR", dir) // not enrolled: --relay and --ca say where
	t.Setenv("LINE_AGENT_HELPER_ADDR", freeAddr(t))
	ca, caKey, caPEM := newCA(t)
	caFile := filepath.Join(dir, "ca.pem")
	os.WriteFile(caFile, caPEM, 0o600)
	_, _, otherPEM := newCA(t)
	otherFile := filepath.Join(dir, "other.pem")
	os.WriteFile(otherFile, otherPEM, 0o600)

	good := tlsServer(t, leafCert(t, ca, caKey, []string{"relay.test"}, []net.IP{net.ParseIP("127.0.0.1")}, time.Now().Add(time.Hour)))
	otherName := tlsServer(t, leafCert(t, ca, caKey, []string{"relay.example.com"}, nil, time.Now().Add(time.Hour)))
	expired := tlsServer(t, leafCert(t, ca, caKey, nil, []net.IP{net.ParseIP("127.0.0.1")}, time.Now().Add(-time.Hour)))
	plain, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	go func() {
		for {
			c, err := plain.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("HTTP/1.0 400 Bad Request\r\n\r\nnot tls at all, nothing like it\r\n"))
			c.Close()
		}
	}()
	for _, c := range []struct {
		name, addr, ca, status, inDetail, inFix string
	}{
		{"verified", good, caFile, verdictPass, "verified against " + caFile, ""},
		{"wrong CA", good, otherFile, verdictFail, "did not sign", "enroll again"},
		{"wrong name", otherName, caFile, verdictFail, "relay.example.com", "name its certificate holds"},
		{"expired", expired, caFile, verdictFail, "not valid now", "Date & Time"},
		{"not TLS", plain.Addr().String(), caFile, verdictFail, "not with TLS", "relay address"},
		{"nobody", freeAddr(t), caFile, verdictFail, "cannot reach", "the relay runs"},
		// Replicas: each is checked, one down fails the check and says which.
		{"replicas", good + "," + otherName, caFile, verdictFail, "verified against " + caFile + " (certificate for [relay.test 127.0.0.1]", "name its certificate holds"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, found, _ := doctorJSON(t, "--relay", c.addr, "--ca", c.ca)
			want(t, found, component.Relay, c.status, c.inDetail, c.inFix)
			// A TLS server that is no line-relay tells no time.
			if f := found[checkClock]; f.Status != verdictSkip {
				t.Errorf("clock against a plain TLS server: %+v", f)
			}
		})
	}
}

// A skew is judged by size, ahead or behind.
func TestDoctorJudgesSkew(t *testing.T) {
	for _, c := range []struct {
		skew   time.Duration
		status string
		in     string
	}{
		{300 * time.Millisecond, verdictPass, "ahead of"},
		{-5 * time.Second, verdictWarn, "5s behind"},
		{2 * time.Minute, verdictFail, "misfire"},
		{-time.Hour, verdictFail, "1h0m0s behind"},
	} {
		f := judgeSkew(c.skew, 10*time.Millisecond)
		if f.Status != c.status || !strings.Contains(f.Detail, c.in) || (c.status != verdictPass && !strings.Contains(f.Fix, "Date & Time")) {
			t.Errorf("skew %v: %+v", c.skew, f)
		}
	}
}

// With the agent running, doctor takes what the agent's report knows (its
// own permissions, its stream, its helper) instead of probing from here,
// and every check passes; the report carries the Mac's new components
// under the names of package component.
func TestDoctorUsesTheRunningAgent(t *testing.T) {
	h := startE2E(t, simSetup{})
	sock := filepath.Join(h.dataDir, "status.sock")
	t.Setenv("LINE_AGENT_DATA_DIR", h.dataDir)
	var found map[string]finding
	var code int
	for end := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		code, found, _ = doctorJSON(t)
		if code == 0 && strings.Contains(found[component.Relay].Detail, "from the running agent") {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("doctor with the agent running: exit %d, %+v", code, found)
		}
	}
	want(t, found, checkAgent, verdictPass, "running", "")
	for _, n := range []string{component.ChatDB, component.Messages, component.Automation, component.ICloud, component.Helper, component.Relay} {
		want(t, found, n, verdictPass, "(from the running agent)", "")
	}
	want(t, found, checkHelperPort, verdictPass, "the agent runs", "")
	want(t, found, checkClock, verdictPass, "the relay's clock is", "")
	if code, out, _ := run(t, "doctor"); code != 0 || !strings.Contains(out, "0 failed") {
		t.Errorf("text: exit %d\n%s", code, out)
	} else {
		t.Log(out)
	}

	rep, err := askAgent(context.Background(), sock)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, c := range rep.GetComponents() {
		if !slices.Contains(component.All, c.GetName()) {
			t.Errorf("component %q is not named in package component", c.GetName())
		}
		if slices.Contains([]string{component.Messages, component.Automation, component.ICloud, component.Disk, component.Outbox}, c.GetName()) && c.GetSince() == nil {
			t.Errorf("component %q has no Since", c.GetName())
		}
		got[c.GetName()] = true
	}
	for _, n := range []string{component.Relay, component.Journal, component.Quota, component.ChatDB, component.Helper,
		component.Messages, component.Automation, component.ICloud, component.Disk, component.Outbox} {
		if !got[n] {
			t.Errorf("the sim agent's report lacks %q: %v", n, got)
		}
	}
}

func newCA(t *testing.T) (*x509.Certificate, *ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "doctor test CA"},
		NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return cert, key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func leafCert(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey, dns []string, ips []net.IP, notAfter time.Time) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "relay"},
		NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: notAfter, DNSNames: dns, IPAddresses: ips,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// tlsServer accepts TLS on 127.0.0.1 with cert and completes handshakes.
func tlsServer(t *testing.T, cert tls.Certificate) string {
	t.Helper()
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				_ = c.(*tls.Conn).Handshake()
				io.Copy(io.Discard, c)
			}()
		}
	}()
	return l.Addr().String()
}
