// Command line-agent is the per-Mac edge worker: it runs commands against
// Messages for the relay and streams back everything that happens there.
//
//	line-agent enroll --relay HOST:PORT --ca FILE --token-file FILE|- --data DIR
//	line-agent run --data DIR --driver sim|macos
//	line-agent status [--data DIR] [--json]
//	line-agent doctor [--data DIR] [--json] [--relay HOST:PORT] [--ca FILE] [--no-helper]
//	line-agent install [--data DIR] [--binary PATH] [--print] | uninstall [--purge] [--print]
//	line-agent selftest --to HANDLE [--data DIR] [--driver macos|sim] [--timeout 60s] [--helper-wait 15s] [--json] [--allow-running]
//	line-agent config | version | inspect | decode
//
// The demo that `make demo` runs is a separate command, cmd/demo
// (line-demo), so that this binary links no relay code.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
)

// exitError carries an exit code out of a subcommand.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// usageError is a bad command line: exit code 2.
func usageError(format string, args ...any) error {
	return &exitError{code: 2, err: fmt.Errorf(format, args...)}
}

type subcommand struct {
	name, summary string
	run           func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

func commands() []subcommand {
	return []subcommand{
		{"enroll", "enroll this Mac with a relay using a project token", runEnroll},
		{"run", "run the agent (connect to the relay, serve commands, stream events)", runRun},
		{"config", "print the effective configuration (secrets redacted)", runConfig},
		{"status", "print the running agent's health, as the relay sees it (--json for scripts)", runStatus},
		{"doctor", "check what this Mac needs (permissions, Messages, helper, relay, clock, disk, launchd) and say the fix", runDoctor},
		{"selftest", "send a real message to --to HANDLE, wait for chat.db to show it sent and delivered, tapback it; a pass/fail table", runSelftest},
		{"install", "run the agent as a LaunchAgent in this user's session (--print shows what it would do)", runInstall},
		{"uninstall", "stop the LaunchAgent and remove its plist; the data directory stays unless --purge", runUninstall},
		{"version", "print the version", runVersion},
		{"inspect", "print chat.db changes as JSON event lines", runInspect},
		{"decode", "decode an attributedBody archive: decode attributed-body FILE", runDecode},
	}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: line-agent <command> [flags]")
	fmt.Fprintln(w, "\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nA flag that has an environment variable names it in -h, as (env LINE_AGENT_<NAME>); a flag given wins.")
	fmt.Fprintln(w, "Run 'line-agent <command> -h' for a command's flags.")
}

func main() {
	os.Exit(realMain(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

func realMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, args[1:], stdout, stderr)
		if err == nil {
			return 0
		}
		var ee *exitError
		code := 1
		if errors.As(err, &ee) {
			code = ee.code
		}
		if code != 0 {
			fmt.Fprintf(stderr, "line-agent %s: %v\n", c.name, err)
		}
		return code
	}
	fmt.Fprintf(stderr, "line-agent: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}
