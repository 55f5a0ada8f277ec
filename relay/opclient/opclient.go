// Package opclient is a small client of line-relay's operator HTTP API, for
// the demo, end-to-end tests and benchmarks: the same requests an operator
// makes with curl.
package opclient

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
	"github.com/line-agent/line-agent/relay"
)

// Client talks to one relay's operator API.
type Client struct {
	// Base is the API's root, e.g. "http://127.0.0.1:8080".
	Base string
	HTTP *http.Client
}

// New returns a client for the API at addr (host:port, plain HTTP on
// loopback as line-relay serves it).
func New(addr string) *Client {
	return &Client{Base: "http://" + addr, HTTP: &http.Client{Timeout: 90 * time.Second}}
}

// APIError is a non-2xx answer.
type APIError struct {
	Status  int
	Code    string
	Message string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("relay API: %d %s: %s", e.Status, e.Code, e.Message)
}

func (c *Client) do(ctx context.Context, method, path string, body []byte, out any) (int, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return resp.StatusCode, err
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		_ = json.Unmarshal(b, &e)
		return resp.StatusCode, &APIError{Status: resp.StatusCode, Code: e.Error.Code, Message: e.Error.Message}
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return resp.StatusCode, fmt.Errorf("relay API: decode %s %s: %w", method, path, err)
		}
	}
	return resp.StatusCode, nil
}

// Submit posts a command; created is false when the id was already known.
func (c *Client) Submit(ctx context.Context, cmd *linev1.Command) (view *relay.CommandView, created bool, err error) {
	body, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(cmd)
	if err != nil {
		return nil, false, err
	}
	view = &relay.CommandView{}
	code, err := c.do(ctx, http.MethodPost, "/v1/commands", body, view)
	return view, code == http.StatusAccepted, err
}

// Command returns a command's current view.
func (c *Client) Command(ctx context.Context, id string) (*relay.CommandView, error) {
	v := &relay.CommandView{}
	_, err := c.do(ctx, http.MethodGet, "/v1/commands/"+url.PathEscape(id), nil, v)
	return v, err
}

// Final polls a command until it succeeded or failed, calling seen (if not
// nil) on every state change.
func (c *Client) Final(ctx context.Context, id string, seen func(*relay.CommandView)) (*relay.CommandView, error) {
	last := ""
	for {
		v, err := c.Command(ctx, id)
		if err != nil {
			return nil, err
		}
		key := v.State
		if v.Progress != nil {
			key += v.Progress.Stage + strconv.FormatUint(v.Progress.Done, 10)
		}
		if key != last && seen != nil {
			seen(v)
		}
		last = key
		if v.State == "succeeded" || v.State == "failed" {
			return v, nil
		}
		select {
		case <-ctx.Done():
			return v, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Events long-polls events after a cursor.
func (c *Client) Events(ctx context.Context, after int64, wait time.Duration) (*relay.EventsPage, error) {
	p := &relay.EventsPage{}
	q := fmt.Sprintf("/v1/events?after=%d&wait=%d", after, int(wait/time.Second))
	_, err := c.do(ctx, http.MethodGet, q, nil, p)
	return p, err
}

// Event decodes an event view's payload.
func Event(v relay.EventView) (*linev1.Event, error) {
	ev := &linev1.Event{}
	if err := protojson.Unmarshal(v.Event, ev); err != nil {
		return nil, err
	}
	return ev, nil
}

// Agents lists the relay's agents.
func (c *Client) Agents(ctx context.Context) ([]relay.AgentView, error) {
	var out struct {
		Agents []relay.AgentView `json:"agents"`
	}
	_, err := c.do(ctx, http.MethodGet, "/v1/agents", nil, &out)
	return out.Agents, err
}
