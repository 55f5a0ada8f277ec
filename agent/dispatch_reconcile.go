package agent

import linev1 "github.com/line-agent/line-agent/proto/line/v1"

// reconciling answers a redelivery of id, a command an earlier process
// left running and the reconciler is still checking, with IN_PROGRESS and
// why, instead of running it again.
func (d *Dispatcher) reconciling(id, detail string) {
	d.mu.Lock()
	d.progress[id] = &linev1.CommandUpdate{CommandId: id, State: linev1.CommandState_COMMAND_STATE_IN_PROGRESS, Detail: detail}
	d.mu.Unlock()
}

// reconciled records and sends the result the reconciler decided, as a
// run's result is (answered from memory until durable).
func (d *Dispatcher) reconciled(res *linev1.CommandResult) {
	d.observeSettled(res)
	d.finish(res.GetCommandId(), res)
	d.mu.Lock()
	delete(d.progress, res.GetCommandId())
	d.mu.Unlock()
}
