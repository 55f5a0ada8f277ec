package relay

import (
	"slices"
	"sync"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// hub is the relay's in-memory view of who is connected right now: at most
// one live stream per agent, and each agent's health. Everything durable is
// in the store; after a restart the hub starts empty and agents reconnect.
type hub struct {
	mu     sync.Mutex
	agents map[string]*liveAgent
	// byLine is, for each line key, the live streams whose Hello announced
	// it (those that hold it are among them): a submit wakes those, not
	// every stream of the fleet.
	byLine map[string][]*session
	// headroom is the lines' quota headroom from the agents' reports, for
	// placing pool users.
	headroom *poolHeadroom
}

// liveAgent is the in-memory state of one agent across its streams.
type liveAgent struct {
	// dispatchMu serialises "pick commands for this agent" between its old
	// and new stream, so a command claimed by a dying stream is either seen
	// by the new stream's redelivery or not claimed at all.
	dispatchMu sync.Mutex

	// Guarded by hub.mu.
	session    *session
	healthy    bool
	missed     int
	lastHealth *linev1.HealthReport
	// held is what lastHealth's DOWN components leave unmet: the claim
	// holds back commands that need it (routing.go).
	held []heldNeed
}

func newHub() *hub {
	return &hub{agents: map[string]*liveAgent{}, byLine: map[string][]*session{}, headroom: newPoolHeadroom()}
}

func (h *hub) agent(id string) *liveAgent {
	a := h.agents[id]
	if a == nil {
		a = &liveAgent{}
		h.agents[id] = a
	}
	return a
}

// attach makes ss the agent's current stream and returns the one it
// replaces, if any. Health starts unknown (unhealthy) until a report.
func (h *hub) attach(ss *session) (old *session) {
	h.mu.Lock()
	defer h.mu.Unlock()
	a := h.agent(ss.agentID)
	old, a.session = a.session, ss
	a.healthy, a.missed = false, 0
	if old != nil {
		h.unindex(old)
	}
	for _, k := range ss.announced {
		h.byLine[k] = append(h.byLine[k], ss)
	}
	return old
}

// unindex takes ss out of byLine.
func (h *hub) unindex(ss *session) {
	for _, k := range ss.announced {
		rest := slices.DeleteFunc(h.byLine[k], func(o *session) bool { return o == ss })
		if len(rest) == 0 {
			delete(h.byLine, k)
		} else {
			h.byLine[k] = rest
		}
	}
}

// detach forgets ss if it is still current; an agent without a stream is
// unhealthy. It reports whether ss was current.
func (h *hub) detach(ss *session) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	a := h.agents[ss.agentID]
	if a == nil || a.session != ss {
		return false
	}
	a.session, a.healthy = nil, false
	h.unindex(ss)
	return true
}

// current reports whether ss is its agent's live stream.
func (h *hub) current(ss *session) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	a := h.agents[ss.agentID]
	return a != nil && a.session == ss
}

func (h *hub) dispatchLock(agentID string) *sync.Mutex {
	h.mu.Lock()
	defer h.mu.Unlock()
	return &h.agent(agentID).dispatchMu
}

// kickLine wakes every live stream serving lineKey so it claims new work.
func (h *hub) kickLine(lineKey string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, ss := range h.byLine[lineKey] {
		if ss.serves(lineKey) {
			ss.kickDispatch()
		}
	}
}

// kickAgent wakes the agent's live stream, if any (its in-flight count fell).
func (h *hub) kickAgent(agentID string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if a := h.agents[agentID]; a != nil && a.session != nil {
		a.session.kickDispatch()
	}
}

// kickAll wakes every live stream so it claims: announcements of other
// replicas may have been missed (replica_listen.go).
func (h *hub) kickAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, a := range h.agents {
		if a.session != nil {
			a.session.kickDispatch()
		}
	}
}

// fence ends the agent's live stream here when its epoch is older than
// epoch: the agent has a newer stream, on another replica (the newest
// connection wins). It reports whether it ended one.
func (h *hub) fence(agentID string, epoch int64) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	a := h.agents[agentID]
	if a == nil || a.session == nil || a.session.epoch >= epoch {
		return false
	}
	a.session.cancel(errReplaced)
	return true
}

// endAll ends every live stream with cause (the replica lost its store:
// the agents should go to a replica that has it).
func (h *hub) endAll(cause error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, a := range h.agents {
		if a.session != nil {
			a.session.cancel(cause)
		}
	}
}

// liveStream is one live stream of this replica, as the replica poll
// checks it (replica.go).
type liveStream struct {
	agentID string
	epoch   int64
	lines   []string
}

// streams lists the live streams.
func (h *hub) streams() []liveStream {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]liveStream, 0, len(h.agents))
	for id, a := range h.agents {
		if a.session != nil {
			out = append(out, liveStream{agentID: id, epoch: a.session.epoch, lines: a.session.heldKeys()})
		}
	}
	return out
}

// checkSent records that a new health check went out while the previous one
// was still unanswered (missed), and returns the misses in a row. Past the
// limit the agent is unhealthy.
func (h *hub) checkMissed(ss *session, limit int) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	a := h.agents[ss.agentID]
	if a == nil || a.session != ss {
		return 0
	}
	a.missed++
	if a.missed >= limit {
		a.healthy = false
	}
	return a.missed
}

// report records a HealthReport, with its lines' headroom. answered says it
// answered the outstanding check in time, which resets the miss count; the
// agent is healthy when it is within the miss limit and says OK or
// DEGRADED.
func (h *hub) report(ss *session, r *linev1.HealthReport, answered bool, limit int) (healthy bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	a := h.agents[ss.agentID]
	if a == nil || a.session != ss {
		return false
	}
	a.lastHealth = r
	held := unmetRequirements(r, ss.offered)
	if !slices.EqualFunc(held, a.held, func(x, y heldNeed) bool { return x.need == y.need }) {
		// Commands held back may go now (or others must wait): claim
		// again under the new set. A reason alone changing (a DOWN
		// component's detail counts what waits, say) changes nothing the
		// claim decides on, so it claims nothing again.
		ss.kickDispatch()
	}
	a.held = held
	h.headroom.report(ss.agentID, ss.serves, r.GetHeadroom(), !meets([]string{needJournal, needChatDB, needSender}, held))
	if answered {
		a.missed = 0
	}
	st := r.GetStatus()
	a.healthy = a.missed < limit && (st == linev1.HealthStatus_HEALTH_STATUS_OK || st == linev1.HealthStatus_HEALTH_STATUS_DEGRADED)
	return a.healthy
}

// heldNeeds is what the agent's last report leaves unmet (routing.go).
func (h *hub) heldNeeds(agentID string) []heldNeed {
	h.mu.Lock()
	defer h.mu.Unlock()
	if a := h.agents[agentID]; a != nil {
		return a.held
	}
	return nil
}

// liveState is a snapshot of one agent for the HTTP API.
type liveState struct {
	connected, healthy bool
	lastHealth         *linev1.HealthReport
	held               []heldNeed
	// replica is the replica holding the stream: another one's
	// (Server.remoteStream), or this one's own id (view.go).
	replica string
}

func (h *hub) state(agentID string) liveState {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.agents[agentID].live()
}

// states is every agent's liveState at one moment (an agent absent from
// it has none: not connected here).
func (h *hub) states() map[string]liveState {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[string]liveState, len(h.agents))
	for id, a := range h.agents {
		out[id] = a.live()
	}
	return out
}

// live is a's liveState; a may be nil. The hub's lock is held.
func (a *liveAgent) live() liveState {
	if a == nil {
		return liveState{}
	}
	return liveState{connected: a.session != nil, healthy: a.session != nil && a.healthy, lastHealth: a.lastHealth, held: a.held}
}
