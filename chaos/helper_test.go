package chaos

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/line-agent/line-agent/pkg/localstack"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// TestHelperCrashesMidTransaction makes the private-API helper inside
// (simulated) Messages act on a request and then drop its connection
// without answering, every few requests: the effect is in chat.db, the
// answer is lost. The agent must not call such a send failed (the caller
// would send it again) nor succeeded without chat.db's word.
func TestHelperCrashesMidTransaction(t *testing.T) {
	if testing.Short() {
		t.Skip("real processes")
	}
	n, every := scale(20, 200), 5
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	st := startWith(ctx, t, localstack.Options{
		AgentArgs: []string{"--sim-reply-delay", "30s"},
		AgentEnv:  []string{fmt.Sprint("LINE_AGENT_FAULT_HELPER_DROP_EVERY=", every)},
	})
	line := st.Agent.Lines[0]
	cmds := make([]*linev1.Command, n)
	for i := range cmds {
		cmds[i] = sendText("helpercrash", i, line)
	}
	submitAll(ctx, t, st, cmds, 20*time.Millisecond)
	fin := finals(ctx, st, cmds, 3*time.Minute)
	r := judge(t, cmds, fin, outgoingTexts(ctx, t, st.ChatDB()))
	r.fault, r.runs = "helper crashes after acting, before answering", n/every
	r.note = fmt.Sprintf("every %dth request; failures by code: %s", every, failureCodes(fin))
	record(t, r)
}
