package relay

import (
	"context"
	"encoding/json"
	"math"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/line-agent/line-agent/command"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// These types are the operator API's JSON, exported so in-process callers
// (tests, the demo) read exactly what HTTP clients read.

// CommandView is one command as GET /v1/commands/{id} shows it.
type CommandView struct {
	ID   string `json:"id"`
	Line string `json:"line"`
	// Kind is the command's oneof field name, e.g. "send_text".
	Kind string `json:"kind"`
	// State is queued, dispatched, accepted, in_progress, succeeded or failed.
	State string `json:"state"`
	// AgentID is the agent the command was dispatched to; empty while queued.
	AgentID string `json:"agent_id,omitempty"`
	// Detail is the last CommandUpdate's free-text detail.
	Detail   string        `json:"detail,omitempty"`
	Progress *ProgressView `json:"progress,omitempty"`
	// Result is the protojson Snapshot (proto field names) once succeeded.
	Result json.RawMessage `json:"result,omitempty"`
	// Error is set once failed.
	Error     *ErrorView `json:"error,omitempty"`
	Deadline  time.Time  `json:"deadline"`
	CreatedAt time.Time  `json:"created_at"`
	UpdatedAt time.Time  `json:"updated_at"`
}

// ProgressView is the last progress an agent reported for a command.
type ProgressView struct {
	Stage string `json:"stage"`
	Done  uint64 `json:"done"`
	Total uint64 `json:"total"`
}

// ErrorView is a failed command's typed error; Code is the short ErrorCode
// name ("DEADLINE_EXCEEDED") a caller can act on.
type ErrorView struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	// Capability names what is missing, for UNSUPPORTED ("send_text").
	Capability string `json:"capability,omitempty"`
	// RetryAfterSeconds says when to retry, for QUOTA_EXCEEDED (rounded up,
	// counted from now: see retryAfter).
	RetryAfterSeconds int64 `json:"retry_after_seconds,omitempty"`
	// RetryAt is when a quota slot frees, for QUOTA_EXCEEDED.
	RetryAt time.Time `json:"retry_at,omitzero"`
	// LastState is the last state seen before a timeout.
	LastState string `json:"last_state,omitempty"`
}

// AgentView is one agent as GET /v1/agents shows it.
type AgentView struct {
	ID        string `json:"id"`
	Hostname  string `json:"hostname"`
	Version   string `json:"version"`
	OSVersion string `json:"os_version,omitempty"`
	Driver    string `json:"driver"`
	// Lines are the lines the agent announced in its last Hello.
	Lines []string `json:"lines"`
	// HeldLines are the lines bound to this agent: the ones routed to it.
	HeldLines []string `json:"held_lines"`
	// RefusedLines are announced lines the relay would not route to this
	// agent, and why (bound to another agent, not allowed by its token).
	RefusedLines []RefusedLineView `json:"refused_lines,omitempty"`
	// Capabilities are short names ("send_text") from the last Hello.
	Capabilities []string `json:"capabilities"`
	Connected    bool     `json:"connected"`
	// Replica is the relay replica holding the agent's stream while it is
	// connected (docs/scaling.md): this one's ReplicaID or another's.
	Replica string `json:"replica,omitempty"`
	// Healthy is true only while connected, answering health checks in time
	// and reporting OK or DEGRADED.
	Healthy bool `json:"healthy"`
	// HeldBack is what the relay does not route to this agent now, and
	// why: commands needing a component its last report called DOWN wait,
	// queued, until it is back (docs/protocol.md, "Routing by health").
	HeldBack []HeldBackView `json:"held_back,omitempty"`
	// LastHeartbeat is when the relay last heard anything from the agent.
	LastHeartbeat *time.Time  `json:"last_heartbeat,omitempty"`
	LastHealth    *HealthView `json:"last_health,omitempty"`
	// LastDisconnect says how the last stream ended; absent while connected.
	LastDisconnect *DisconnectView `json:"last_disconnect,omitempty"`
}

// HeldBackView is one requirement an agent cannot meet now: the
// components it names ("helper", "helper|automation" for a plain send,
// either will do), the commands that need it, and the components' own
// words.
type HeldBackView struct {
	Needs    string `json:"needs"`
	Commands string `json:"commands"`
	Reason   string `json:"reason"`
}

// RefusedLineView is one announced line the relay refused, and the reason
// (which names the fix).
type RefusedLineView struct {
	Line   string `json:"line"`
	Reason string `json:"reason"`
}

// HealthView is the agent's last HealthReport.
type HealthView struct {
	// Status is OK, DEGRADED, DOWN or UNSPECIFIED.
	Status     string          `json:"status"`
	Components []ComponentView `json:"components"`
	At         *time.Time      `json:"at,omitempty"`
	// Headroom is what the quotas leave each line, as the relay places
	// pool users by it.
	Headroom []HeadroomView `json:"headroom,omitempty"`
}

// HeadroomView is one line's LineHeadroom; -1 means no limit.
type HeadroomView struct {
	Line                 string `json:"line"`
	NewConversationsLeft int    `json:"new_conversations_left"`
	SendsLeft            int    `json:"sends_left"`
}

// ComponentView is one part of the agent in a HealthReport.
type ComponentView struct {
	Name   string `json:"name"`
	Status string `json:"status"`
	Detail string `json:"detail,omitempty"`
	// Fix is what the operator should do, on its own so a dashboard or
	// alert need not cut it out of Detail (which still ends with it);
	// empty when there is nothing to do or the agent predates the field.
	Fix string `json:"fix,omitempty"`
}

// DisconnectView tells a drain (Goodbye) from a crash or network loss.
type DisconnectView struct {
	At       time.Time `json:"at"`
	Graceful bool      `json:"graceful"`
	Reason   string    `json:"reason,omitempty"`
}

// EventView is one stored event in GET /v1/events.
type EventView struct {
	// Seq is the relay's sequence, the cursor for ?after=.
	Seq     int64  `json:"seq"`
	AgentID string `json:"agent_id"`
	// Event is the protojson Event with proto field names.
	Event json.RawMessage `json:"event"`
}

var jsonOut = protojson.MarshalOptions{UseProtoNames: true}

func commandView(r *commandRow) *CommandView {
	v := &CommandView{
		ID: r.id, Line: r.line, Kind: r.kind, State: r.state, AgentID: r.agentID, Detail: r.detail,
		Deadline: r.deadline.UTC(), CreatedAt: r.created.UTC(), UpdatedAt: r.updated.UTC(),
	}
	if len(r.progress) > 0 {
		p := &linev1.Progress{}
		if proto.Unmarshal(r.progress, p) == nil {
			v.Progress = &ProgressView{Stage: p.GetStage(), Done: p.GetDone(), Total: p.GetTotal()}
		}
	}
	if r.state == stateSucceeded {
		snap := &linev1.Snapshot{}
		_ = proto.Unmarshal(r.result, snap)
		if b, err := jsonOut.Marshal(snap); err == nil {
			v.Result = b
		}
	}
	if r.state == stateFailed {
		e := &linev1.CommandError{}
		_ = proto.Unmarshal(r.errProto, e)
		v.Error = &ErrorView{Code: r.errCode, Message: r.errMessage, LastState: e.GetLastState()}
		if c := e.GetCapability(); c != linev1.Capability_CAPABILITY_UNSPECIFIED {
			v.Error.Capability = command.CapabilityName(c)
		}
		if secs, ok := retryAfter(e, time.Now()); ok {
			v.Error.RetryAfterSeconds = secs
		}
		if ra := e.GetRetryAt(); ra != nil {
			v.Error.RetryAt = ra.AsTime().UTC()
		}
	}
	return v
}

// Agents lists every enrolled agent with its live state, as GET /v1/agents.
func (s *Server) Agents(ctx context.Context) ([]AgentView, error) {
	// The live states first, the rows after: a stream is attached only
	// once its Hello is stored, so a row read later is at least as new as
	// any stream seen here. The other way round, an agent could be shown
	// connected and healthy with the lines of the row from before its
	// Hello (none, for a new agent).
	states := s.hub.states()
	rows, err := s.store.listAgents(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]AgentView, 0, len(rows))
	for _, r := range rows {
		live := states[r.id]
		if live.connected {
			live.replica = s.replica
		} else if rs, ok := s.remoteStream(r.stream, r.lastHealth, r.capabilities); ok {
			live = rs
		}
		v := AgentView{
			ID: r.id, Hostname: r.hostname, Version: r.version, OSVersion: r.osVersion, Driver: r.driver,
			Lines: nonNil(r.lines), HeldLines: nonNil(r.held), Capabilities: nonNil(r.capabilities),
			Connected: live.connected, Healthy: live.healthy, Replica: live.replica,
		}
		for _, h := range live.held {
			v.HeldBack = append(v.HeldBack, HeldBackView{Needs: h.need, Commands: needers[h.need], Reason: h.reason})
		}
		// last_seen is persisted at every heartbeat (session.persistSeen).
		if seen := r.lastSeen; !seen.IsZero() {
			t := seen.UTC()
			v.LastHeartbeat = &t
		}
		report := live.lastHealth
		if report == nil && len(r.lastHealth) > 0 {
			report = &linev1.HealthReport{}
			if proto.Unmarshal(r.lastHealth, report) != nil {
				report = nil
			}
		}
		if report != nil {
			v.LastHealth = healthView(report)
		}
		for _, rl := range r.refused {
			v.RefusedLines = append(v.RefusedLines, RefusedLineView(rl))
		}
		if !live.connected && !r.disconnectedAt.IsZero() {
			v.LastDisconnect = &DisconnectView{At: r.disconnectedAt.UTC(), Graceful: r.graceful, Reason: r.reason}
		}
		out = append(out, v)
	}
	return out, nil
}

func healthView(r *linev1.HealthReport) *HealthView {
	v := &HealthView{Status: healthStatusName(r.GetStatus()), Components: []ComponentView{}}
	for _, c := range r.GetComponents() {
		v.Components = append(v.Components, ComponentView{Name: c.GetName(), Status: healthStatusName(c.GetStatus()), Detail: c.GetDetail(), Fix: c.GetFix()})
	}
	if r.GetAt() != nil {
		t := r.GetAt().AsTime().UTC()
		v.At = &t
	}
	for _, h := range r.GetHeadroom() {
		v.Headroom = append(v.Headroom, HeadroomView{Line: h.GetLine(), NewConversationsLeft: int(h.GetNewConversationsLeft()), SendsLeft: int(h.GetSendsLeft())})
	}
	return v
}

// healthStatusName is "OK", "DEGRADED", "DOWN" or "UNSPECIFIED".
func healthStatusName(st linev1.HealthStatus) string {
	return strings.TrimPrefix(st.String(), "HEALTH_STATUS_")
}

// retryAfter is the wait, in whole seconds rounded up, before a refused
// command may be tried again: until retry_at when the agent named the
// moment (a result read again later still counts from now, and is 0 once
// the moment passed), else retry_after. ok is false when the error names
// neither.
func retryAfter(e *linev1.CommandError, now time.Time) (secs int64, ok bool) {
	var d time.Duration
	switch {
	case e.GetRetryAt() != nil:
		d = max(e.GetRetryAt().AsTime().Sub(now), 0)
	case e.GetRetryAfter().AsDuration() > 0:
		d = e.GetRetryAfter().AsDuration()
	default:
		return 0, false
	}
	return int64(math.Ceil(d.Seconds())), true
}
