package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// The agent's own health on the Mac: the same HealthReport the relay's
// health check gets (Agent.health, the one source), served on a unix
// socket in the data directory as grpc.health.v1 (for an orchestrator or
// grpc-health-probe) and as AgentStatus (for `line-agent status`). The
// socket is the user's alone (0600): it tells what the Mac is doing.

// statusRefresh is how often grpc.health.v1's statuses are set again from
// the report.
const statusRefresh = 2 * time.Second

// ServiceName is the grpc.health.v1 service name of a component; the
// empty service name is the agent as a whole.
func ServiceName(component string) string { return "line-agent." + component }

// statusServer answers AgentStatus.Status with the report now.
type statusServer struct {
	linev1.UnimplementedAgentStatusServer
	report func(checkID string) *linev1.HealthReport
}

func (s statusServer) Status(context.Context, *linev1.StatusRequest) (*linev1.HealthReport, error) {
	return s.report(""), nil
}

// serveStatus serves the status socket at path until ctx ends. It returns
// once the socket listens; the error is the listener's.
func serveStatus(ctx context.Context, path string, report func(string) *linev1.HealthReport) error {
	// A socket left by a killed agent is stale; anything else at the path
	// is not ours to remove.
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&fs.ModeSocket == 0 {
			return fmt.Errorf("status socket %s: the path exists and is not a socket", path)
		}
		if err := os.Remove(path); err != nil {
			return fmt.Errorf("status socket: %w", err)
		}
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("status socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return fmt.Errorf("status socket: %w", err)
	}
	srv := grpc.NewServer()
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	linev1.RegisterAgentStatusServer(srv, statusServer{report: report})
	set := func() {
		r := report("")
		hs.SetServingStatus("", servingStatus(r.GetStatus()))
		for _, c := range r.GetComponents() {
			hs.SetServingStatus(ServiceName(c.GetName()), servingStatus(c.GetStatus()))
		}
	}
	set()
	go func() {
		t := time.NewTicker(statusRefresh)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				hs.Shutdown()
				srv.Stop()
				_ = os.Remove(path)
				return
			case <-t.C:
				set()
			}
		}
	}()
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			_ = err // the listener closed with the agent; nothing to tell
		}
	}()
	return nil
}

// servingStatus is a component's health as grpc.health.v1 says it: a
// DEGRADED component still serves.
func servingStatus(s linev1.HealthStatus) healthpb.HealthCheckResponse_ServingStatus {
	switch s {
	case linev1.HealthStatus_HEALTH_STATUS_OK, linev1.HealthStatus_HEALTH_STATUS_DEGRADED:
		return healthpb.HealthCheckResponse_SERVING
	case linev1.HealthStatus_HEALTH_STATUS_DOWN:
		return healthpb.HealthCheckResponse_NOT_SERVING
	}
	return healthpb.HealthCheckResponse_UNKNOWN
}
