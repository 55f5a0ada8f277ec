package procid

import (
	"errors"
	"os"
	"os/exec"
	"runtime"
	"testing"
	"time"
)

// A real child: alive while it runs, gone once reaped, and an ID with the
// same pid but another start (pid reuse) is never taken for it.
func TestAliveFollowsARealProcess(t *testing.T) {
	if runtime.GOOS != "linux" && runtime.GOOS != "darwin" {
		t.Skip("no process table reader here")
	}
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	id, err := Of(cmd.Process.Pid)
	if err != nil || id.Pid != cmd.Process.Pid || id.Start == "" {
		t.Fatalf("Of = %+v, %v", id, err)
	}
	if alive, err := Alive(id); !alive || err != nil {
		t.Fatalf("Alive of a running child = %v, %v", alive, err)
	}
	if alive, err := Alive(ID{Pid: id.Pid, Start: id.Start + "0"}); alive || err != nil {
		t.Fatalf("Alive of another start on the same pid = %v, %v; want false", alive, err)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	// Before Wait the child is a zombie: it can no longer act.
	for i := 0; ; i++ {
		if alive, _ := Alive(id); !alive {
			break
		}
		if i == 400 {
			t.Fatal("a killed child is still alive after 2 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	_ = cmd.Wait()
	if alive, err := Alive(id); alive || err != nil {
		t.Fatalf("Alive after the child was reaped = %v, %v", alive, err)
	}
	if _, err := Of(id.Pid); !errors.Is(err, ErrGone) {
		t.Fatalf("Of a reaped pid = %v, want ErrGone", err)
	}
	if _, err := Of(os.Getpid()); err != nil {
		t.Fatalf("Of self: %v", err)
	}
}
