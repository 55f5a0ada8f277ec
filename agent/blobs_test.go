package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// cutBlobServer serves FetchBlob: the first call sends half of data and
// then waits for the test to cut the agent's TCP connections; later calls
// send it all.
type cutBlobServer struct {
	linev1.UnimplementedLineRelayServer
	data  []byte
	calls atomic.Int32
	half  chan struct{} // closed once the first call sent its half
}

func (s *cutBlobServer) FetchBlob(_ *linev1.FetchBlobRequest, st grpc.ServerStreamingServer[linev1.BlobChunk]) error {
	if s.calls.Add(1) == 1 {
		if err := st.Send(&linev1.BlobChunk{Data: s.data[:len(s.data)/2]}); err != nil {
			return err
		}
		close(s.half)
		<-st.Context().Done()
		return st.Context().Err()
	}
	for i := 0; i < len(s.data); i += 64 << 10 {
		if err := st.Send(&linev1.BlobChunk{Data: s.data[i:min(i+64<<10, len(s.data))]}); err != nil {
			return err
		}
	}
	return nil
}

// A fetch whose TCP connection the session drops mid-way (its watchdog
// fired under load: transport.go), with the relay gone for a moment, is
// fetched again once the relay is back, instead of spending its attempts
// at once and failing the command UNAVAILABLE, as it did
// (TestLargePayloadsDoNotStallTheAgent under load).
func TestBlobFetchSurvivesADroppedConnection(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("line-agent "), 300<<10)
	srv := &cutBlobServer{data: data, half: make(chan struct{})}
	gs := grpc.NewServer()
	linev1.RegisterLineRelayServer(gs, srv)
	go func() { _ = gs.Serve(l) }()
	defer gs.Stop()
	tr := &Transport{}
	cc, err := Dial(DialOptions{Addr: l.Addr().String(), Plaintext: true, Transport: tr})
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	tokens := &tokenSource{creds: &Credentials{AccessToken: "tok", IssuedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)}}
	b := newBlobFetcher(linev1.NewLineRelayClient(cc), tokens)
	sum := sha256.Sum256(data)
	ref := &linev1.BlobRef{Id: "b1", Size: uint64(len(data)), Sha256: hex.EncodeToString(sum[:])}
	// The relay goes away with the connection and is back a moment later
	// on the same address: each retry must wait for it.
	addr := l.Addr().String()
	go func() {
		<-srv.half
		tr.Drop()
		gs.Stop()
		time.Sleep(1500 * time.Millisecond)
		l2, err := net.Listen("tcp", addr)
		if err != nil {
			t.Error(err)
			return
		}
		gs2 := grpc.NewServer()
		linev1.RegisterLineRelayServer(gs2, srv)
		go func() { _ = gs2.Serve(l2) }()
		t.Cleanup(gs2.Stop)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	got, err := b.fetch(ctx, "c1", ref)
	if err != nil {
		t.Fatalf("fetch after a dropped connection: %v", err)
	}
	if !bytes.Equal(got, data) || srv.calls.Load() < 2 {
		t.Fatalf("got %d bytes in %d calls; want all %d, fetched again", len(got), srv.calls.Load(), len(data))
	}
}
