package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/line-agent/line-agent/agent"
)

func loadConfig() (agent.Config, error) {
	cfg, err := agent.LoadConfig()
	if err != nil {
		return cfg, usageError("%v", err)
	}
	return cfg, nil
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return &exitError{code: 0, err: err}
		}
		return &exitError{code: 2, err: err}
	}
	if fs.NArg() > 0 {
		return usageError("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	return nil
}

func runVersion(_ context.Context, _ []string, stdout, _ io.Writer) error {
	fmt.Fprintf(stdout, "line-agent %s\n", agent.Version)
	return nil
}

func runConfig(_ context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := loadConfig()
	if err != nil {
		return err
	}
	fs := newFlagSet("config", stderr)
	apply := configFlags(fs, &cfg)
	if err := parse(fs, args); err != nil {
		return err
	}
	apply()
	return cfg.Print(stdout)
}

func runEnroll(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := loadConfig()
	if err != nil {
		return err
	}
	fs := newFlagSet("enroll", stderr)
	apply := configFlags(fs, &cfg)
	tokenFile := fs.String("token-file", "", "file holding the project token, or - for standard input (else env LINE_AGENT_TOKEN)")
	if err := parse(fs, args); err != nil {
		return err
	}
	apply()
	if cfg.Relay == "" {
		return usageError("--relay HOST:PORT is required")
	}
	token := cfg.Token
	switch *tokenFile {
	case "":
	case "-":
		line, err := bufio.NewReader(os.Stdin).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("read token from stdin: %w", err)
		}
		token = line
	default:
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			return fmt.Errorf("read token file: %w", err)
		}
		token = string(b)
	}
	token = strings.TrimSpace(token)
	if token == "" {
		return usageError("no project token: give --token-file FILE|- or set LINE_AGENT_TOKEN")
	}
	host, _ := os.Hostname()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	c, err := agent.Enroll(ctx, agent.EnrollOptions{
		DialOptions: agent.DialOptions{Addr: cfg.Relay, CAFile: cfg.CAFile, Plaintext: cfg.Plaintext},
		Token:       token, DataDir: cfg.DataDir, Hostname: host, Version: agent.Version, Lines: cfg.Lines,
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "enrolled as %s with %s; credentials in %s\n", c.AgentID, c.Relay, cfg.DataDir)
	return nil
}

func runRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := loadConfig()
	if err != nil {
		return err
	}
	fs := newFlagSet("run", stderr)
	apply := configFlags(fs, &cfg)
	if err := parse(fs, args); err != nil {
		return err
	}
	apply()
	agent.EnrolledLines(&cfg)
	log, err := configLogger(stderr, cfg)
	if err != nil {
		return err
	}

	// Staged shutdown: the first SIGTERM/SIGINT drains, the second cancels.
	hard, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := make(chan struct{})
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	go func() {
		n := 0
		for {
			select {
			case s := <-sigs:
				n++
				if n == 1 {
					log.Info("signal: draining (send again to stop at once)", "signal", s.String())
					close(stop)
				} else {
					log.Warn("second signal: stopping now", "signal", s.String())
					cancel()
					return
				}
			case <-hard.Done():
				return
			}
		}
	}()

	metrics := agent.NewMetrics()
	backend, err := openObservedBackend(hard, cfg, log, metrics)
	if err != nil {
		return err
	}
	a, err := agent.New(agent.Options{Config: cfg, Backend: backend, Logger: log, Metrics: metrics})
	if err != nil {
		if backend.Close != nil {
			backend.Close()
		}
		return err
	}
	return a.Run(hard, stop)
}
