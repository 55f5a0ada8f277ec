// Command line-demo is what `make demo` runs: line-relay and line-agent as
// real processes with the simulated Messages, on loopback, in a temporary
// directory. It enrolls the agent, drives the relay through its operator
// HTTP API, prints what comes back, and leaves nothing running or on disk.
//
//	line-demo [--relay-bin PATH] [--agent-bin PATH] [--to HANDLE] [--keep]
//
// It is a separate binary so that line-agent, which runs on every Mac, links
// no relay code: only this command and the tests talk to the relay's API.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

func main() {
	// A signal cancels the context, so run still stops the children (they
	// are in their own process groups and do not see the terminal's ^C).
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errUsage):
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "line-demo:", err)
		os.Exit(1)
	}
}

// errUsage is a bad command line; the flag package has already said why.
var errUsage = errors.New("usage")

// run is the whole command, separated from main so a test drives it
// in-process.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("line-demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	relayBin := fs.String("relay-bin", "", "path of line-relay (default: beside this binary)")
	agentBin := fs.String("agent-bin", "", "path of line-agent (default: beside this binary)")
	keep := fs.Bool("keep", false, "keep the temporary directory (logs, databases) for a look")
	to := fs.String("to", "+15557654321", "the simulated person to text")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "line-demo: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return errUsage
	}
	for _, b := range []struct {
		path       *string
		name, flag string
	}{{relayBin, "line-relay", "--relay-bin"}, {agentBin, "line-agent", "--agent-bin"}} {
		if *b.path == "" {
			self, err := os.Executable()
			if err != nil {
				return err
			}
			*b.path = filepath.Join(filepath.Dir(self), b.name)
		}
		if _, err := os.Stat(*b.path); err != nil {
			return fmt.Errorf("%s not found at %s (build it with `make build` or pass %s): %w",
				b.name, *b.path, b.flag, err)
		}
	}
	dir, err := os.MkdirTemp("", "line-demo-")
	if err != nil {
		return err
	}
	if *keep {
		fmt.Fprintf(stdout, "keeping %s\n", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	d := &demo{dir: dir, out: stdout, agentBin: *agentBin, relayBin: *relayBin}
	defer d.stopAll()
	return d.run(ctx, *to)
}
