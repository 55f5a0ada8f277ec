package spectrum

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/line-agent/line-agent/pkg/localstack"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// TestEchoExample runs examples/spectrum-echo as its README says, with the
// SDK this folder installed: it greets the simulated person, answers their
// reply with an echo, and does not answer the echo of its echo.
func TestEchoExample(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes and a Node app")
	}
	node := nodeModules(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st := startStack(ctx, t, "--sim-reply-delay", "200ms")
	token, err := st.APIToken(ctx, "--line", line)
	if err != nil {
		t.Fatal(err)
	}

	// The example as a user has it, beside the SDK (Node resolves
	// spectrum-ts from the node_modules next to the script).
	dir := t.TempDir()
	src, err := os.ReadFile("../../examples/spectrum-echo/echo.mjs")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "echo.mjs"), src, 0o600); err != nil {
		t.Fatal(err)
	}
	mods, err := filepath.Abs("node_modules")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(mods, filepath.Join(dir, "node_modules")); err != nil {
		t.Fatal(err)
	}
	var out lockedBuffer
	app := exec.CommandContext(ctx, node, "echo.mjs")
	app.Dir = dir
	app.Stdout, app.Stderr = &out, &out
	app.Env = append(os.Environ(),
		"GRPC_DEFAULT_SSL_ROOTS_FILE_PATH="+st.CA(),
		"SPECTRUM_ADDRESS="+apiAddress(st),
		"SPECTRUM_TOKEN="+token,
		"SPECTRUM_PHONE="+line,
		"ECHO_GREET="+peer,
	)
	if err := app.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = app.Process.Signal(os.Interrupt)
		_ = app.Wait()
		if t.Failed() {
			t.Logf("echo.mjs output:\n%s", out.String())
		}
	}()

	greeting := "hello from spectrum-echo"
	reply := "got it: " + greeting
	echo := "echo: " + reply
	sent := func(evs []*linev1.Event, text string) int {
		n := 0
		for _, e := range evs {
			if m := e.GetMessage(); m.GetFromMe() && m.GetText() == text {
				n++
			}
		}
		return n
	}
	// The person answers the echo too ("got it: echo: ..."); the app must
	// leave that one alone.
	echoOfEcho := "got it: " + echo
	if err := localstack.WaitFor(ctx, 60*time.Second, func() error {
		evs := allEvents(ctx, t, st.Operator)
		switch {
		case sent(evs, greeting) != 1:
			return fmt.Errorf("no greeting yet")
		case sent(evs, echo) != 1:
			return fmt.Errorf("no echo of %q yet", reply)
		}
		for _, e := range evs {
			if m := e.GetMessage(); !m.GetFromMe() && m.GetText() == echoOfEcho {
				return nil
			}
		}
		return fmt.Errorf("the person has not answered the echo yet")
	}); err != nil {
		t.Fatal(err)
	}
	// Long enough for an answer to the echo of the echo to have been sent
	// and stored (replies here take 200 ms; a send some tens of ms).
	time.Sleep(2 * time.Second)
	evs := allEvents(ctx, t, st.Operator)
	if n := sent(evs, "echo: "+echoOfEcho); n != 0 {
		t.Errorf("the app answered the echo of its own echo (%d times): two bots would loop", n)
	}
	if n := sent(evs, echo); n != 1 {
		t.Errorf("the app echoed %q %d times, want once", reply, n)
	}
}
