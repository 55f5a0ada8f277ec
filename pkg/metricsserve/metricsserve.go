// Package metricsserve is the one HTTP server both binaries put their
// Prometheus registry behind: GET /metrics only (404 for any other path,
// 405 for another method), with timeouts, so a scraper that stalls or a
// client that trickles its headers holds nothing for long. Where it
// listens, and who may reach it, is each binary's decision.
package metricsserve

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// The server's timeouts: a scrape is one small request and answer.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	writeTimeout      = 10 * time.Second
	idleTimeout       = time.Minute
)

// Server returns the metrics server for reg; the caller serves it on its
// listener and shuts it down. Errors of the handler and the server go to
// log at WARN; a metric that fails to collect leaves the rest served.
func Server(reg *prometheus.Registry, log *slog.Logger) *http.Server {
	errs := slog.NewLogLogger(log.Handler(), slog.LevelWarn)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: errs, ErrorHandling: promhttp.ContinueOnError}))
	return &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		ErrorLog:          errs,
	}
}
