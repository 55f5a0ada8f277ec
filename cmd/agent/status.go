package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// runStatus asks the agent running on this data directory for its health,
// over its status socket (agent/localstatus.go), from another process. It
// exits 1 when the agent is not running or reports itself DOWN, so a
// script can act on the exit code alone.
func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := loadConfig()
	if err != nil {
		return err
	}
	fs := newFlagSet("status", stderr)
	apply := configFlags(fs, &cfg)
	asJSON := fs.Bool("json", false, "print the HealthReport as JSON (proto field names)")
	if err := parse(fs, args); err != nil {
		return err
	}
	apply()
	path := cfg.StatusSocketPath()
	if path == "" {
		return usageError("the status socket is turned off (LINE_AGENT_STATUS_SOCKET=-)")
	}
	// A unix socket only the user can open: no TLS, no token.
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	rep, err := linev1.NewAgentStatusClient(conn).Status(ctx, &linev1.StatusRequest{})
	if err != nil {
		return &exitError{code: 1, err: fmt.Errorf("no agent answers on %s (is line-agent run going for data directory %s?): %w", path, cfg.DataDir, err)}
	}
	if *asJSON {
		b, err := protojson.MarshalOptions{UseProtoNames: true, Multiline: true}.Marshal(rep)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s\n", b)
	} else {
		printStatus(stdout, rep)
	}
	if rep.GetStatus() == linev1.HealthStatus_HEALTH_STATUS_DOWN {
		return &exitError{code: 1, err: fmt.Errorf("the agent reports itself DOWN")}
	}
	return nil
}

// printStatus is the report for people: the verdict, then a line per
// component with why.
func printStatus(w io.Writer, rep *linev1.HealthReport) {
	fmt.Fprintf(w, "line-agent: %s (at %s)\n", statusWord(rep.GetStatus()), rep.GetAt().AsTime().Local().Format(time.RFC3339))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, c := range rep.GetComponents() {
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", c.GetName(), statusWord(c.GetStatus()), c.GetDetail())
	}
	tw.Flush()
	for _, h := range rep.GetHeadroom() {
		fmt.Fprintf(w, "  line %s: %s new conversations, %s sends left\n", h.GetLine(), left(h.GetNewConversationsLeft()), left(h.GetSendsLeft()))
	}
}

func statusWord(s linev1.HealthStatus) string {
	switch s {
	case linev1.HealthStatus_HEALTH_STATUS_OK:
		return "OK"
	case linev1.HealthStatus_HEALTH_STATUS_DEGRADED:
		return "DEGRADED"
	case linev1.HealthStatus_HEALTH_STATUS_DOWN:
		return "DOWN"
	}
	return "UNKNOWN"
}

func left(n int32) string {
	if n < 0 {
		return "unlimited"
	}
	return fmt.Sprint(n)
}
