package spool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/line-agent/line-agent/command"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// secretQuery stands for a signed token in a URL's query: no error may
// quote it, nor the path before it.
const (
	secretQuery = "sig=TOPSECRET-TOKEN&exp=1"
	secretPath  = "/private-bucket-path"
)

// wantCode asserts err is a *command.Error with code c and returns it.
func wantCode(t *testing.T, err error, c linev1.ErrorCode) *command.Error {
	t.Helper()
	if err == nil {
		t.Fatalf("want %s, got success", command.CodeName(c))
	}
	var me *command.Error
	if !errors.As(err, &me) {
		t.Fatalf("want *command.Error, got %T: %v", err, err)
	}
	if me.Code != c {
		t.Fatalf("want %s, got %v", command.CodeName(c), me)
	}
	return me
}

// noSecret asserts err quotes neither the query nor the path.
func noSecret(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	msg := err.Error()
	if me := command.AsError(err); me != nil {
		msg += " | " + me.Proto().GetMessage() + " | " + me.LastState
	}
	for _, s := range []string{"TOPSECRET", "private-bucket", "sig="} {
		if strings.Contains(msg, s) {
			t.Fatalf("error %q leaks %q", msg, s)
		}
	}
}

// tlsServer is an httptest TLS server on 127.0.0.1 (httptest's default)
// that counts the hits of every path.
type tlsServer struct {
	*httptest.Server
	hits map[string]*atomic.Int64
}

func newTLSServer(t *testing.T, routes map[string]http.HandlerFunc) *tlsServer {
	t.Helper()
	s := &tlsServer{hits: map[string]*atomic.Int64{}}
	mux := http.NewServeMux()
	for path, h := range routes {
		n := new(atomic.Int64)
		s.hits[path] = n
		mux.HandleFunc(secretPath+path, func(w http.ResponseWriter, r *http.Request) {
			n.Add(1)
			h(w, r)
		})
	}
	s.Server = httptest.NewTLSServer(mux)
	if host, _, _ := net.SplitHostPort(s.Listener.Addr().String()); host != "127.0.0.1" {
		t.Fatalf("test server on %s, want 127.0.0.1", host)
	}
	t.Cleanup(s.Close)
	return s
}

// url is the server's URL for path, with the secret path and query.
func (s *tlsServer) url(path string) string {
	return s.URL + secretPath + path + "?" + secretQuery
}

// fetcher fetches from the server: loopback is allowed, for this test only.
func (s *tlsServer) fetcher() *Fetcher {
	return &Fetcher{Client: s.Client(), MaxBytes: 64 << 10, Timeout: 2 * time.Second,
		RetryWaitMin: 10 * time.Millisecond, RetryWaitMax: 50 * time.Millisecond, AllowLoopbackForTests: true}
}

// bounded runs f and fails the test if it takes longer than limit.
func bounded(t *testing.T, limit time.Duration, f func()) {
	t.Helper()
	start := time.Now()
	f()
	if el := time.Since(start); el > limit {
		t.Fatalf("took %v, over %v", el, limit)
	}
}

var body = bytes.Repeat([]byte("0123456789abcdef"), 1024) // 16 KiB

func TestFetchOK(t *testing.T) {
	s := newTLSServer(t, map[string]http.HandlerFunc{
		"/ok": func(w http.ResponseWriter, r *http.Request) {
			if r.URL.RawQuery != secretQuery {
				http.Error(w, "query lost", http.StatusBadRequest)
				return
			}
			w.Write(body)
		},
		"/hop": func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, secretPath+"/ok?"+secretQuery, http.StatusFound)
		},
	})
	for _, p := range []string{"/ok", "/hop"} {
		got, err := s.fetcher().Fetch(context.Background(), s.url(p))
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if !bytes.Equal(got, body) {
			t.Fatalf("%s: got %d bytes", p, len(got))
		}
	}
	// Exactly the cap is fine.
	f := s.fetcher()
	f.MaxBytes = int64(len(body))
	if _, err := f.Fetch(context.Background(), s.url("/ok")); err != nil {
		t.Fatalf("at the cap: %v", err)
	}
}

// 404 is INVALID_ARGUMENT (the URL points at nothing) and is not retried;
// other 4xx likewise.
func TestFetch4xxNotRetried(t *testing.T) {
	s := newTLSServer(t, map[string]http.HandlerFunc{
		"/missing":   http.NotFound,
		"/forbidden": func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusForbidden) },
	})
	for path, code := range map[string]string{"/missing": "HTTP 404 Not Found", "/forbidden": "HTTP 403"} {
		_, err := s.fetcher().Fetch(context.Background(), s.url(path))
		me := wantCode(t, err, linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT)
		if !strings.Contains(me.Error(), code) {
			t.Fatalf("%s: %q lacks %q", path, me.Error(), code)
		}
		noSecret(t, err)
		if n := s.hits[path].Load(); n != 1 {
			t.Fatalf("%s fetched %d times", path, n)
		}
	}
}

// 500 then 200: retried, and the body of the success returned. A server
// that keeps failing is UNAVAILABLE after 1+Retries attempts. A 503 with a
// Retry-After of an hour waits only RetryWaitMax.
func TestFetch5xxRetried(t *testing.T) {
	var flaky, unavailable atomic.Int64
	s := newTLSServer(t, map[string]http.HandlerFunc{
		"/flaky": func(w http.ResponseWriter, r *http.Request) {
			if flaky.Add(1) == 1 {
				http.Error(w, "oops", http.StatusInternalServerError)
				return
			}
			w.Write(body)
		},
		"/down": func(w http.ResponseWriter, r *http.Request) { http.Error(w, "down", http.StatusBadGateway) },
		"/later": func(w http.ResponseWriter, r *http.Request) {
			if unavailable.Add(1) == 1 {
				w.Header().Set("Retry-After", "3600")
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
			w.Write(body)
		},
	})
	got, err := s.fetcher().Fetch(context.Background(), s.url("/flaky"))
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("flaky: %d bytes, %v", len(got), err)
	}
	if n := s.hits["/flaky"].Load(); n != 2 {
		t.Fatalf("flaky fetched %d times, want 2", n)
	}

	f := s.fetcher()
	f.Retries = 3
	_, err = f.Fetch(context.Background(), s.url("/down"))
	me := wantCode(t, err, linev1.ErrorCode_ERROR_CODE_UNAVAILABLE)
	if !strings.Contains(me.Error(), "502") {
		t.Fatalf("error %q", me.Error())
	}
	noSecret(t, err)
	if n := s.hits["/down"].Load(); n != 4 {
		t.Fatalf("down fetched %d times, want 4", n)
	}

	f = s.fetcher()
	f.Retries = -1
	s.hits["/down"].Store(0)
	_, err = f.Fetch(context.Background(), s.url("/down"))
	wantCode(t, err, linev1.ErrorCode_ERROR_CODE_UNAVAILABLE)
	if n := s.hits["/down"].Load(); n != 1 {
		t.Fatalf("no retries: fetched %d times", n)
	}

	bounded(t, time.Second, func() {
		if _, err := s.fetcher().Fetch(context.Background(), s.url("/later")); err != nil {
			t.Fatalf("later: %v", err)
		}
	})
}

// A connection the server drops before answering is retried.
func TestFetchConnectionErrorRetried(t *testing.T) {
	var n atomic.Int64
	s := newTLSServer(t, map[string]http.HandlerFunc{
		"/drop": func(w http.ResponseWriter, r *http.Request) {
			if n.Add(1) == 1 {
				c, _, err := w.(http.Hijacker).Hijack()
				if err == nil {
					c.Close()
				}
				return
			}
			w.Write(body)
		},
	})
	got, err := s.fetcher().Fetch(context.Background(), s.url("/drop"))
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("drop: %d bytes, %v", len(got), err)
	}
	if n.Load() < 2 {
		t.Fatal("not retried")
	}

	// Nobody listening: UNAVAILABLE after the retries, no URL in the error.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, err = s.fetcher().Fetch(context.Background(), "https://"+addr+secretPath+"?"+secretQuery)
	wantCode(t, err, linev1.ErrorCode_ERROR_CODE_UNAVAILABLE)
	noSecret(t, err)
}

// The cap holds while streaming: an endless body is cut at MaxBytes+1, the
// connection dropped, and the server stops well before "everything" (it
// would never end). A declared Content-Length over the cap is refused
// before the body is read.
func TestFetchOverCapWhileStreaming(t *testing.T) {
	var sent atomic.Int64
	done := make(chan struct{})
	s := newTLSServer(t, map[string]http.HandlerFunc{
		"/endless": func(w http.ResponseWriter, r *http.Request) {
			defer close(done)
			chunk := make([]byte, 16<<10)
			for sent.Load() < 1<<30 { // 1 GiB: a failed test still ends
				n, err := w.Write(chunk)
				sent.Add(int64(n))
				if err != nil {
					return
				}
				w.(http.Flusher).Flush()
			}
		},
		"/declared": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", fmt.Sprint(1<<30))
			w.Write(body)
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		},
	})
	bounded(t, 5*time.Second, func() {
		_, err := s.fetcher().Fetch(context.Background(), s.url("/endless"))
		me := wantCode(t, err, linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT)
		if !strings.Contains(me.Error(), "limit") {
			t.Fatalf("error %q", me.Error())
		}
		noSecret(t, err)
	})
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the server is still sending after the client gave up")
	}
	if n := sent.Load(); n >= 64<<20 {
		t.Fatalf("the server sent %d bytes for a 64 KiB cap", n)
	}
	t.Logf("the server wrote %d bytes before the connection dropped (cap 64 KiB)", sent.Load())

	bounded(t, 2*time.Second, func() {
		_, err := s.fetcher().Fetch(context.Background(), s.url("/declared"))
		me := wantCode(t, err, linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT)
		if !strings.Contains(me.Error(), "1073741824 bytes, over the 65536-byte limit") {
			t.Fatalf("error %q", me.Error())
		}
	})
}

// A server that trickles forever hits the Fetcher's Timeout:
// INVALID_ARGUMENT "did not finish". The caller's own shorter deadline is
// DEADLINE_EXCEEDED instead.
func TestFetchTrickleTimesOut(t *testing.T) {
	s := newTLSServer(t, map[string]http.HandlerFunc{
		"/trickle": func(w http.ResponseWriter, r *http.Request) {
			for i := 0; i < 600; i++ { // a minute at most
				if _, err := w.Write([]byte{0}); err != nil {
					return
				}
				w.(http.Flusher).Flush()
				select {
				case <-r.Context().Done():
					return
				case <-time.After(50 * time.Millisecond):
				}
			}
		},
	})
	f := s.fetcher()
	f.Timeout = 400 * time.Millisecond
	bounded(t, 3*time.Second, func() {
		_, err := f.Fetch(context.Background(), s.url("/trickle"))
		me := wantCode(t, err, linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT)
		if !strings.Contains(me.Error(), "did not finish within 400ms") {
			t.Fatalf("error %q", me.Error())
		}
		noSecret(t, err)
	})

	f.Timeout = 10 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	bounded(t, 3*time.Second, func() {
		_, err := f.Fetch(ctx, s.url("/trickle"))
		me := wantCode(t, err, linev1.ErrorCode_ERROR_CODE_DEADLINE_EXCEEDED)
		if !strings.Contains(me.LastState, "fetching") {
			t.Fatalf("last state %q", me.LastState)
		}
		noSecret(t, err)
	})
}

// A redirect to plain HTTP is refused without contacting the HTTP server,
// and not retried.
func TestFetchRedirectToHTTPRefused(t *testing.T) {
	var plainHits atomic.Int64
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		plainHits.Add(1)
		w.Write(body)
	}))
	defer plain.Close()
	s := newTLSServer(t, map[string]http.HandlerFunc{
		"/to-http": func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, plain.URL+secretPath+"?"+secretQuery, http.StatusFound)
		},
		"/to-ftp": func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "ftp://127.0.0.1"+secretPath, http.StatusFound)
		},
		"/loop": func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, secretPath+"/loop?"+secretQuery, http.StatusFound)
		},
	})
	for path, want := range map[string]string{"/to-http": "non-HTTPS", "/to-ftp": "non-HTTPS", "/loop": "more than 5"} {
		_, err := s.fetcher().Fetch(context.Background(), s.url(path))
		me := wantCode(t, err, linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT)
		if !strings.Contains(me.Error(), want) {
			t.Fatalf("%s: %q lacks %q", path, me.Error(), want)
		}
		noSecret(t, err)
	}
	if n := plainHits.Load(); n != 0 {
		t.Fatalf("the plain HTTP server was contacted %d times", n)
	}
	if n := s.hits["/to-http"].Load(); n != 1 {
		t.Fatalf("redirect to http retried: %d hits", n)
	}
	if n := s.hits["/loop"].Load(); n != MaxRedirects+1 {
		t.Fatalf("loop followed %d times", n)
	}
}

// Only https URLs with a host and no credentials are fetched; nothing else
// reaches the network.
func TestFetchRefusesBadURLs(t *testing.T) {
	var hits atomic.Int64
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	defer plain.Close()
	f := &Fetcher{Timeout: time.Second}
	for _, raw := range []string{
		"",
		plain.URL + secretPath + "?" + secretQuery,
		"HTTP://127.0.0.1/x",
		"file:///etc/passwd",
		"/etc/passwd",
		"clear",
		"https:///no-host",
		"https:opaque",
		"https://user:pass@127.0.0.1/x?" + secretQuery,
		"https://token@127.0.0.1/x",
		"ftp://127.0.0.1/x",
		"javascript:alert(1)",
		"https://127.0.0.1:99999/x%zz?" + secretQuery,
	} {
		_, err := f.Fetch(context.Background(), raw)
		wantCode(t, err, linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT)
		noSecret(t, err)
		if strings.Contains(err.Error(), "pass") {
			t.Fatalf("%q: error %q leaks the password", raw, err)
		}
	}
	if hits.Load() != 0 {
		t.Fatal("a refused URL was fetched")
	}
}

// An empty 200 is INVALID_ARGUMENT: no asset is empty.
func TestFetchEmptyBody(t *testing.T) {
	s := newTLSServer(t, map[string]http.HandlerFunc{"/empty": func(w http.ResponseWriter, r *http.Request) {}})
	_, err := s.fetcher().Fetch(context.Background(), s.url("/empty"))
	me := wantCode(t, err, linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT)
	if !strings.Contains(me.Error(), "empty") {
		t.Fatalf("error %q", me.Error())
	}
}

// stripURL hides the path and query even when an inner error quotes them.
func TestStripURL(t *testing.T) {
	u, _ := CheckURL("https://h.example" + secretPath + "?" + secretQuery)
	inner := fmt.Errorf("proxy said no to GET %s?%s", secretPath, secretQuery)
	err := stripURL(&urlError{inner}, u)
	noSecret(t, err)
	if !errors.Is(err, inner) {
		t.Fatal("cause lost")
	}
}

type urlError struct{ err error }

func (e *urlError) Error() string {
	return "GET https://h.example" + secretPath + "?" + secretQuery + ": " + e.err.Error()
}
func (e *urlError) Unwrap() error { return e.err }
