package relay

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
)

func TestDevPKICreatedOnceAndReused(t *testing.T) {
	dir := t.TempDir()
	srv := startRelay(t, dir, Options{ExtraSANs: []string{"relay.example.test", "10.9.8.7"}})
	for _, f := range []string{caCertFile, caKeyFile, serverCertFile, serverKeyFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
	}
	for _, f := range []string{caKeyFile, serverKeyFile} {
		fi, _ := os.Stat(filepath.Join(dir, f))
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", f, fi.Mode().Perm())
		}
	}
	if srv.CAFile() != filepath.Join(dir, caCertFile) {
		t.Errorf("CAFile %q", srv.CAFile())
	}
	leafPEM := mustRead(t, filepath.Join(dir, serverCertFile))
	pair, err := tls.X509KeyPair(leafPEM, mustRead(t, filepath.Join(dir, serverKeyFile)))
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(pair.Certificate[0])
	for _, name := range []string{"localhost", "127.0.0.1", "::1", "relay.example.test", "10.9.8.7"} {
		if err := leaf.VerifyHostname(name); err != nil {
			t.Errorf("server cert does not cover %s: %v", name, err)
		}
	}
	if h, err := os.Hostname(); err == nil {
		if err := leaf.VerifyHostname(h); err != nil {
			t.Errorf("server cert does not cover the hostname %s: %v", h, err)
		}
	}

	// Only TLS 1.3 is accepted.
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(mustRead(t, srv.CAFile()))
	c, err := tls.Dial("tcp", srv.GRPCAddr(), &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MaxVersion: tls.VersionTLS12, NextProtos: []string{"h2"}})
	if err == nil {
		c.Close()
		t.Fatal("a TLS 1.2 handshake succeeded")
	}
	c, err = tls.Dial("tcp", srv.GRPCAddr(), &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatalf("TLS 1.3 handshake: %v", err)
	}
	if v := c.ConnectionState().Version; v != tls.VersionTLS13 {
		t.Errorf("negotiated %x", v)
	}
	c.Close()

	caBefore := mustRead(t, filepath.Join(dir, caCertFile))
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	// A second start reuses the CA and the still-valid server certificate.
	srv2, err := New(Options{DataDir: dir, ExtraSANs: []string{"relay.example.test", "10.9.8.7"}, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer srv2.Close()
	if !bytes.Equal(caBefore, mustRead(t, filepath.Join(dir, caCertFile))) {
		t.Error("the CA was replaced on restart")
	}
	if !bytes.Equal(leafPEM, mustRead(t, filepath.Join(dir, serverCertFile))) {
		t.Error("the server certificate was reissued needlessly")
	}
	// A new SAN reissues the server certificate under the same CA.
	srv3, err := New(Options{DataDir: dir, ExtraSANs: []string{"other.example.test"}, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer srv3.Close()
	if bytes.Equal(leafPEM, mustRead(t, filepath.Join(dir, serverCertFile))) {
		t.Error("the server certificate was not reissued for a new SAN")
	}
	if !bytes.Equal(caBefore, mustRead(t, filepath.Join(dir, caCertFile))) {
		t.Error("the CA changed")
	}
}

func TestDevPKIRefusesHalfACA(t *testing.T) {
	dir := t.TempDir()
	if _, err := loadOrCreatePKI(dir, nil, nowUTC()); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(dir, caKeyFile))
	if _, err := New(Options{DataDir: dir, Logger: testLogger(t)}); err == nil {
		t.Fatal("New accepted a CA certificate without its key")
	}
}

func TestPackageCreateProjectToken(t *testing.T) {
	dir := t.TempDir()
	tok, err := CreateProjectToken(Storage{DataDir: dir, Store: testStoreFor(t, dir)})
	if err != nil {
		t.Fatal(err)
	}
	srv := startRelay(t, dir, Options{})
	cc := dial(t, srv)
	if _, err := newClient(cc).Enroll(context.Background(), enrollReq(tok)); err != nil {
		t.Fatalf("a token from CreateProjectToken(dir) does not enroll: %v", err)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
