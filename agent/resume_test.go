package agent

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/line-agent/line-agent/messages"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// uploadDriver stands in for a driver with a long, resumable command (a
// background upload): Execute checkpoints and then waits; Resume finishes.
type uploadDriver struct {
	countingDriver
	mu      sync.Mutex
	resumed [][]byte
}

func (d *uploadDriver) Execute(ctx context.Context, cmd *linev1.Command, report func(*linev1.CommandUpdate)) (*linev1.Snapshot, error) {
	messages.SaveCheckpoint(ctx, []byte("uploading:asset-1"))
	return d.countingDriver.Execute(ctx, cmd, report)
}

func (d *uploadDriver) Resume(ctx context.Context, cmd *linev1.Command, checkpoint []byte, report func(*linev1.CommandUpdate)) (*linev1.Snapshot, error) {
	d.mu.Lock()
	d.resumed = append(d.resumed, checkpoint)
	d.mu.Unlock()
	return &linev1.Snapshot{ChatGuid: cmd.GetChatGuid(), AssetId: "asset-1"}, nil
}

var _ messages.Resumable = (*uploadDriver)(nil)

func TestCheckpointedCommandResumesAfterRestartWithoutRerun(t *testing.T) {
	r := startRelay(t, t.TempDir(), "127.0.0.1:0")
	defer r.Close()
	dataDir := t.TempDir()
	drv := &uploadDriver{countingDriver: countingDriver{gate: make(chan struct{})}}
	a := enrolledAgent(t, r, dataDir, drv, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, nil) }()
	waitConnected(t, r, true, 10*time.Second) // the relay refuses a line no agent holds yet
	r.SubmitCommand(ctx, sendText("bg-1"))
	// Execute saves the checkpoint (a durable journal write) before it
	// counts the run, so once the run shows the checkpoint is on disk.
	drv.waitRun(t, "bg-1", 10*time.Second)
	cancel() // crash-like stop mid-upload
	<-done

	drv2 := &uploadDriver{}
	a2 := enrolledAgent(t, r, dataDir, drv2, nil)
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	go func() { done <- a2.Run(ctx2, nil) }()
	v := waitFinal(t, r, "bg-1", 10*time.Second)
	if v.State != "succeeded" || !strings.Contains(string(v.Result), "asset-1") {
		t.Fatalf("resumed command: %s %+v %s", v.State, v.Error, v.Result)
	}
	drv2.mu.Lock()
	resumed := drv2.resumed
	drv2.mu.Unlock()
	if len(resumed) != 1 || string(resumed[0]) != "uploading:asset-1" || drv2.count("bg-1") != 0 {
		t.Fatalf("resumed %q, re-executed %d times; want one resume from the checkpoint and no second run", resumed, drv2.count("bg-1"))
	}
	cancel2()
	<-done
}
