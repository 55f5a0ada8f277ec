package relay

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"strconv"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/line-agent/line-agent/command"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// The operator API: JSON in and out, no authentication (bind it to
// loopback), errors as {"error":{"code":"INVALID_ARGUMENT","message":"..."}}
// with the same codes agents use, so one vocabulary covers both.

func (s *Server) httpHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/commands", s.handlePostCommand)
	mux.HandleFunc("GET /v1/commands/{id}", s.handleGetCommand)
	mux.HandleFunc("GET /v1/events", s.handleEvents)
	mux.HandleFunc("GET /v1/agents", s.handleAgents)
	mux.HandleFunc("GET /v1/lines", s.handleLines)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "NOT_FOUND", "no such endpoint: "+r.Method+" "+r.URL.Path)
	})
	return s.metrics.httpCounted(mux)
}

// commandJSON reads the protojson form of a Command. Unknown fields are an
// error rather than silently dropped: a misspelt field must not turn into a
// different command.
var commandJSON = protojson.UnmarshalOptions{DiscardUnknown: false}

func (s *Server) handlePostCommand(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxCommandBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, "INVALID_ARGUMENT", "the command is larger than the relay accepts")
			return
		}
		writeError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "could not read the request body")
		return
	}
	cmd := &linev1.Command{}
	if err := commandJSON.Unmarshal(body, cmd); err != nil {
		writeError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "the body is not a valid line.v1.Command in JSON: "+err.Error())
		return
	}
	created, err := s.SubmitCommand(r.Context(), cmd)
	if errors.Is(err, ErrIDConflict) {
		v, verr := s.CommandView(cmd.GetId())
		if verr != nil {
			s.log.Error("read command", "err", verr)
			writeFault(w, verr, "the relay could not read the command")
			return
		}
		writeJSON(w, http.StatusConflict, conflictBody{Error: errorDetail{Code: "ALREADY_EXISTS",
			Message: "this id is already used by a different command; use a new id for a new command"}, Command: v})
		return
	}
	if err != nil {
		var me *command.Error
		if errors.As(err, &me) {
			code := http.StatusBadRequest
			if me.Code == linev1.ErrorCode_ERROR_CODE_NOT_FOUND {
				code = http.StatusNotFound
			}
			writeError(w, code, command.CodeName(me.Code), me.Msg)
			return
		}
		s.log.Error("submit command", "err", err)
		writeFault(w, err, "the relay could not store the command")
		return
	}
	if created {
		writeJSON(w, http.StatusAccepted, map[string]string{"id": cmd.GetId(), "state": stateQueued})
		return
	}
	v, err := s.CommandView(cmd.GetId())
	if err != nil {
		s.log.Error("read command", "err", err)
		writeFault(w, err, "the relay could not read the command")
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func (s *Server) handleGetCommand(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	v, err := s.CommandView(id)
	switch {
	case errors.Is(err, ErrNotFound):
		writeError(w, http.StatusNotFound, "NOT_FOUND", "no command with this id")
	case err != nil:
		s.log.Error("read command", "err", err)
		writeFault(w, err, "the relay could not read the command")
	default:
		writeJSON(w, http.StatusOK, v)
	}
}

// EventsPage is the body of GET /v1/events: a page of events in relay
// order and the cursor for the next page.
type EventsPage struct {
	Events []EventView `json:"events"`
	// Next is the cursor to pass as ?after= for the following page.
	Next int64 `json:"next"`
}

// handleEvents long-polls: it answers at once when events exist after the
// cursor, otherwise waits up to ?wait= seconds (at most 60) for new ones.
func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	after, err := intParam(q.Get("after"), 0)
	if err != nil || after < 0 {
		writeError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "after must be a non-negative integer")
		return
	}
	limit, err := intParam(q.Get("limit"), defaultEventsPerPoll)
	if err != nil || limit < 1 {
		writeError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "limit must be a positive integer")
		return
	}
	limit = min(limit, maxEventsPerPoll)
	waitSecs, err := strconv.ParseFloat(orDefault(q.Get("wait"), "0"), 64)
	if err != nil || waitSecs < 0 || math.IsNaN(waitSecs) {
		writeError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "wait must be a non-negative number of seconds")
		return
	}
	// Clamp in seconds before converting: 1e300 s has no Duration.
	wait := time.Duration(min(waitSecs, maxPollWait.Seconds()) * float64(time.Second))

	page, err := s.Events(r.Context(), after, int(limit), wait)
	if err != nil && !errors.Is(err, context.Canceled) {
		s.log.Error("read events", "err", err)
		writeFault(w, err, "the relay could not read events")
		return
	}
	if err != nil {
		return // the client went away or the relay is stopping
	}
	writeJSON(w, http.StatusOK, page)
}

// Events returns up to limit stored events after the relay sequence after,
// waiting up to wait for the first one to arrive. Next is the cursor for the
// following call. It returns early when ctx ends or the relay closes.
func (s *Server) Events(ctx context.Context, after int64, limit int, wait time.Duration) (EventsPage, error) {
	var timeout <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		timeout = t.C
	}
	for {
		woken := s.feed.wait() // taken before the read, so no store is missed
		rows, err := s.store.eventsAfter(ctx, after, limit)
		if err != nil {
			return EventsPage{}, err
		}
		if len(rows) > 0 || timeout == nil {
			page := EventsPage{Events: make([]EventView, 0, len(rows)), Next: after}
			for _, row := range rows {
				page.Events = append(page.Events, eventView(row))
				page.Next = row.relaySeq
			}
			return page, nil
		}
		select {
		case <-woken:
		case <-timeout:
			timeout = nil // one last read, then answer
		case <-ctx.Done():
			return EventsPage{}, ctx.Err()
		case <-s.ctx.Done():
			return EventsPage{Events: []EventView{}, Next: after}, nil
		}
	}
}

func eventView(row eventRow) EventView {
	ev := &linev1.Event{}
	v := EventView{Seq: row.relaySeq, AgentID: row.agentID, Event: json.RawMessage("{}")}
	if err := proto.Unmarshal(row.event, ev); err == nil {
		if b, err := jsonOut.Marshal(ev); err == nil {
			v.Event = b
		}
	}
	return v
}

func (s *Server) handleAgents(w http.ResponseWriter, r *http.Request) {
	agents, err := s.Agents(r.Context())
	if err != nil {
		s.log.Error("list agents", "err", err)
		writeFault(w, err, "the relay could not list agents")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"agents": agents})
}

func (s *Server) handleLines(w http.ResponseWriter, r *http.Request) {
	lines, err := s.Lines(r.Context())
	if err != nil {
		s.log.Error("list lines", "err", err)
		writeFault(w, err, "the relay could not list lines")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"lines": lines})
}

func intParam(v string, def int64) (int64, error) {
	if v == "" {
		return def, nil
	}
	return strconv.ParseInt(v, 10, 64)
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	_ = enc.Encode(v)
}

// errorBody is {"error":{"code":...,"message":...}}.
type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// conflictBody answers a reused id (409): the error and the command that
// holds the id.
type conflictBody struct {
	Error   errorDetail  `json:"error"`
	Command *CommandView `json:"command"`
}

func writeError(w http.ResponseWriter, code int, errCode, msg string) {
	writeJSON(w, code, errorBody{Error: errorDetail{Code: errCode, Message: msg}})
}

// writeFault answers a failure of the relay itself: 503 UNAVAILABLE when
// its store could not be reached (a PostgreSQL restart, say: retry, with
// the same command id), else 500 INTERNAL. Never a success: a command
// whose commit was cut off may be stored, and its retry finds it.
func writeFault(w http.ResponseWriter, err error, msg string) {
	if storeUnreachable(err) {
		writeError(w, http.StatusServiceUnavailable, "UNAVAILABLE", msg+": its store cannot be reached; retry (the same command id is never a second command)")
		return
	}
	writeError(w, http.StatusInternalServerError, "INTERNAL", msg)
}
