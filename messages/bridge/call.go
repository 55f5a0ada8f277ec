package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/line-agent/line-agent/command"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// Last states reported with a failure, so the caller knows whether the
// helper may have acted.
const (
	// StateNotSent: the request never reached the helper; retrying is safe.
	StateNotSent = "not_sent_to_helper"
	// StateSent: the helper has the request but did not answer; it may
	// have acted. Reconcile against chat.db before sending again.
	StateSent = "sent_to_helper_unanswered"
)

// do runs action on the current helper after checking it supports it (and
// feature, when not ""). Every failure is a *command.Error.
func (b *Bridge) do(ctx context.Context, action, feature string, data any, progress func(Progress)) (*answer, error) {
	// A background's answer comes only once its asset is distributable,
	// which can take a minute: its caller's deadline bounds it, not
	// RequestTimeout (which still bounds it when the caller has none).
	if _, has := ctx.Deadline(); !has || action != ActionSetBackground {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, b.opts.RequestTimeout)
		defer cancel()
	}
	hc, err := b.settled(ctx)
	if err != nil {
		return nil, err
	}
	capability := capabilityOf(action)
	if !hc.actions[action] {
		why := fmt.Sprintf("the connected helper does not implement %q", action)
		if !hc.lineAgent && !isBaseAction(action) {
			why += " (a line-agent extension; the connected helper is a plain BlueBubbles helper)"
		}
		return nil, command.Unsupported(capability, why)
	}
	if feature != "" && !hc.features[feature] {
		why, ok := featureWhy[feature]
		if !ok {
			why = fmt.Sprintf("the connected helper does not announce the %q feature of %q", feature, action)
		}
		return nil, command.Unsupported(capability, why)
	}
	return hc.roundTrip(ctx, action, data, progress)
}

// roundTrip writes one request and waits for its answer, the deadline or
// the connection's end, whichever comes first.
func (hc *helperConn) roundTrip(ctx context.Context, action string, data any, progress func(Progress)) (_ *answer, err error) {
	if o := hc.b.opts.Observer; o != nil {
		start := time.Now()
		defer func() { o.HelperRoundTrip(action, roundTripResult(err), time.Since(start)) }()
	}
	id := strconv.FormatUint(hc.b.nextTx.Add(1), 10)
	line, err := json.Marshal(request{Action: action, Data: data, TransactionID: id})
	if err != nil {
		return nil, &command.Error{Code: linev1.ErrorCode_ERROR_CODE_INTERNAL, Msg: "encoding the helper request: " + err.Error(), Err: err}
	}
	if len(line) > hc.b.opts.MaxLineBytes {
		return nil, command.Errorf(linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "the %s request is %d bytes, over the helper line limit of %d", action, len(line), hc.b.opts.MaxLineBytes)
	}
	line = append(line, '\n')
	c := &call{result: make(chan callResult, 1), answered: make(chan struct{}), progress: progress}
	if !hc.register(id, c) {
		return nil, unavailable("the helper disconnected: "+hc.closeReason(), StateNotSent)
	}
	defer hc.unregister(id)
	if err := hc.write(ctx, line, c.answered); err != nil {
		if errors.Is(err, errDisconnected) {
			return nil, unavailable("the helper disconnected: "+hc.closeReason(), StateNotSent)
		}
		return nil, ctxError(ctx, action, StateNotSent)
	}
	select {
	case r := <-c.result:
		if r.helperMsg != "" {
			return nil, helperError(action, r.helperMsg)
		}
		return r.ans, nil
	case <-hc.done:
		return nil, unavailable(fmt.Sprintf("the helper disconnected while %s was pending: %s", action, hc.closeReason()), StateSent)
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.DeadlineExceeded) && action != ActionHello {
			hc.b.stats.unanswered.Add(1)
		}
		return nil, ctxError(ctx, action, StateSent)
	}
}

// roundTripResult names a round trip's outcome for the observer: "ok",
// or the code of its *command.Error.
func roundTripResult(err error) string {
	if err == nil {
		return "ok"
	}
	return command.CodeName(command.AsError(err).Code)
}

// handshake asks the helper what it supports. A BlueBubbles helper ignores
// the unknown action (it logs "not implemented" and answers nothing), so
// silence, an error or an unusable answer all mean the base set.
func (hc *helperConn) handshake() {
	defer hc.b.wg.Done()
	ctx, cancel := context.WithTimeout(hc.b.ctx, hc.b.opts.HandshakeTimeout)
	defer cancel()
	data := map[string]any{"agent": "line-agent", "protocol": lineAgentProtocol}
	ans, err := hc.roundTrip(ctx, ActionHello, data, nil)
	hc.actions, hc.features = setOf(baseActions), map[string]bool{}
	switch {
	case err == nil && len(ans.list("actions")) > 0:
		hc.lineAgent = true
		hc.actions = setOf(ans.list("actions"))
		hc.features = setOf(ans.list("features"))
		hc.helperName = ans.str("helper")
	case err == nil:
		hc.b.log.Warn("the helper answered line-agent-hello without actions; assuming the BlueBubbles base set")
	}
	close(hc.hsDone)
	hc.b.handshakeDone(hc)
	hc.b.log.Info("helper handshake done", "line_agent", hc.lineAgent, "helper", hc.helperName,
		"capabilities", len(capabilitiesOf(hc.actions)))
}

func unavailable(msg, state string) *command.Error {
	return &command.Error{Code: linev1.ErrorCode_ERROR_CODE_HELPER_UNAVAILABLE, Msg: msg, LastState: state}
}

// ctxError turns the end of a request's context into DEADLINE_EXCEEDED (the
// caller's deadline or RequestTimeout) or UNAVAILABLE (cancelled).
func ctxError(ctx context.Context, action, state string) *command.Error {
	e := command.AsError(ctx.Err())
	if e.Code == linev1.ErrorCode_ERROR_CODE_DEADLINE_EXCEEDED {
		e = &command.Error{Code: e.Code, Msg: fmt.Sprintf("the helper did not answer %s in time", action), Err: ctx.Err()}
	}
	e.LastState = state
	return e
}

// helperError maps the helper's error text to a code. The BlueBubbles
// helper's texts are fixed strings ("Chat does not exist!", "Provide a
// chat GUID!", "Message not found: ..."), so matching words is reliable.
func helperError(action, text string) *command.Error {
	code := linev1.ErrorCode_ERROR_CODE_INTERNAL
	low := strings.ToLower(text)
	switch {
	case strings.Contains(low, "does not exist"), strings.Contains(low, "not found"), strings.Contains(low, "no such"):
		code = linev1.ErrorCode_ERROR_CODE_NOT_FOUND
	case strings.HasPrefix(low, "provide"), strings.Contains(low, "invalid"):
		code = linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT
	}
	return &command.Error{Code: code, Msg: fmt.Sprintf("the helper refused %s: %s", action, text)}
}

// Health describes the helper for the agent's health report.
func (b *Bridge) Health() *linev1.HealthComponent {
	b.mu.Lock()
	hc, since := b.cur, b.since
	b.mu.Unlock()
	h := &linev1.HealthComponent{Name: "helper", Status: linev1.HealthStatus_HEALTH_STATUS_DOWN}
	h.Since = timestamppb.New(since)
	switch {
	case hc == nil:
		h.Detail = "no private-API helper connected on " + b.Addr().String() +
			": typing, tapbacks, effects, replies, edits, unsends and read marks are unavailable"
	case !hc.handshaken():
		h.Status = linev1.HealthStatus_HEALTH_STATUS_DEGRADED
		h.Detail = "helper connected; handshake in progress"
	case b.stats.unanswered.Load() >= 3:
		h.Status = linev1.HealthStatus_HEALTH_STATUS_DEGRADED
		h.Detail = fmt.Sprintf("helper connected but its last %d requests went unanswered; restarting Messages usually helps", b.stats.unanswered.Load())
	default:
		h.Status = linev1.HealthStatus_HEALTH_STATUS_OK
		h.Detail = hc.describe()
	}
	if d, o, m, l := b.dropped.Load(), b.stats.oversized.Load(), b.stats.malformed.Load(), b.stats.lateAnswers.Load(); d+o+m+l > 0 {
		h.Detail += fmt.Sprintf(" (dropped events %d, oversized lines %d, malformed lines %d, late answers %d)", d, o, m, l)
	}
	if r := b.refused.describe(); r != "" {
		h.Detail += "; " + r
	}
	return h
}

func (hc *helperConn) describe() string {
	hc.mu.Lock()
	process, ready := hc.process, hc.ready
	hc.mu.Unlock()
	kind := "BlueBubbles helper (base actions; no chat backgrounds)"
	if hc.lineAgent {
		kind = "line-agent helper"
		if hc.helperName != "" {
			kind += " " + hc.helperName
		}
	}
	if process != "" {
		kind += " in " + process
	}
	if ready {
		kind += ", IMCore ready"
	}
	return fmt.Sprintf("%s, connected %s, %d capabilities", kind, time.Since(hc.connected).Round(time.Second), len(capabilitiesOf(hc.actions)))
}
