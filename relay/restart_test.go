package relay

import (
	"context"
	"testing"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

func TestRestartKeepsEverything(t *testing.T) {
	dir := t.TempDir()
	srv1 := startRelay(t, dir, Options{})
	a := busyAgent(t, srv1)
	eventually(t, "health reported", func() bool { return agentView(t, srv1, a.id).LastHealth != nil })
	a.close()
	if err := srv1.Close(); err != nil {
		t.Fatal(err)
	}
	// A command for a line nobody serves yet waits across the restart too.
	srv2 := startRelay(t, dir, Options{})
	postCommand(t, srv2, sendText("queued", "+15550001"))

	if v := getCommand(t, srv2, "done"); v.State != "succeeded" || v.Result == nil {
		t.Fatalf("done after restart %+v", v)
	}
	if v := getCommand(t, srv2, "running"); v.State != "in_progress" || v.AgentID != a.id {
		t.Fatalf("running after restart %+v", v)
	}
	if p := getEvents(t, srv2, "after=0"); len(p.Events) != 3 {
		t.Fatalf("%d events after restart", len(p.Events))
	}
	v := agentView(t, srv2, a.id)
	if v.Connected || v.Healthy || v.Hostname != "mini-test" || v.LastHealth == nil || v.LastHealth.Status != "OK" || v.LastHeartbeat == nil || v.LastDisconnect == nil {
		t.Fatalf("agent after restart %+v", v)
	}

	// The same credentials work: the old access token and a refresh.
	a.redial(srv2)
	w := a.connect()
	if w.GetStoredEventSequence() != 3 {
		t.Fatalf("stored sequence %d after restart", w.GetStoredEventSequence())
	}
	got := map[string]bool{a.nextCommand().GetId(): true, a.nextCommand().GetId(): true}
	if !got["running"] || !got["queued"] {
		t.Fatalf("after restart got %v", got)
	}
	if _, err := a.client.Refresh(context.Background(), &linev1.RefreshRequest{AgentId: a.id, AgentSecret: a.secret}); err != nil {
		t.Fatalf("refresh after restart: %v", err)
	}
	a.succeed("running", "g-running")
	waitState(t, srv2, "running", "succeeded")
}
