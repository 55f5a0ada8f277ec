package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// resUsage is what one child agent used.
type resUsage struct {
	rssKB, hwmKB int64
	cpuPct       float64 // of one core, while idle
	idleFor      time.Duration
}

func buildAgent(ctx context.Context, goBin, out string) error {
	cmd := exec.CommandContext(ctx, goBin, "build", "-trimpath", "-o", out, "./cmd/agent")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %v\n%s", err, b)
	}
	return nil
}

// measureAgent runs `line-agent run --driver sim` as a child process against
// an in-process relay. When chatDB is set, it is hard-linked (or copied) in
// as the simulated Messages' chat.db, so both the sim and the tailer work on
// it. It waits for the connection and for settle, then reads VmRSS and
// samples utime+stime over idle.
func measureAgent(ctx context.Context, agentBin, dir, chatDB string, settle, idle time.Duration) (*resUsage, error) {
	s, err := startRelay(ctx, dir)
	if err != nil {
		return nil, err
	}
	defer s.close()
	dataDir := filepath.Join(dir, "agent")
	if err := s.enroll(ctx, dataDir); err != nil {
		return nil, err
	}
	if chatDB != "" {
		simDir := filepath.Join(dataDir, "sim")
		if err := os.MkdirAll(simDir, 0o700); err != nil {
			return nil, err
		}
		if err := os.Link(chatDB, filepath.Join(simDir, "chat.db")); err != nil {
			return nil, fmt.Errorf("link chat.db: %w", err)
		}
	}
	logf, err := os.Create(filepath.Join(dir, "agent.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(agentBin, "run", "--data", dataDir, "--driver", "sim")
	cmd.Env = append(os.Environ(), "LINE_AGENT_LOG_LEVEL=warn")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		select {
		case <-exited:
			return
		default:
		}
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}()
	if err := waitConnected(ctx, s.relay, 30*time.Second); err != nil {
		b, _ := os.ReadFile(logf.Name())
		return nil, fmt.Errorf("%w; agent log:\n%s", err, b)
	}
	select {
	case <-time.After(settle):
	case err := <-exited:
		return nil, fmt.Errorf("agent exited: %v", err)
	}
	pid := cmd.Process.Pid
	u := &resUsage{idleFor: idle}
	u.rssKB, u.hwmKB, err = procRSS(pid)
	if err != nil {
		return nil, err
	}
	c0, err := procCPU(pid)
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	select {
	case <-time.After(idle):
	case err := <-exited:
		return nil, fmt.Errorf("agent exited: %v", err)
	}
	c1, err := procCPU(pid)
	if err != nil {
		return nil, err
	}
	u.cpuPct = 100 * (c1 - c0) / time.Since(t0).Seconds()
	if r, h, err := procRSS(pid); err == nil {
		u.rssKB, u.hwmKB = max(u.rssKB, r), max(u.hwmKB, h)
	}
	return u, nil
}

// procRSS reads VmRSS and VmHWM (peak) in kB.
func procRSS(pid int) (rss, hwm int64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(fs[1], 10, 64)
		switch fs[0] {
		case "VmRSS:":
			rss = v
		case "VmHWM:":
			hwm = v
		}
	}
	return rss, hwm, sc.Err()
}

// procCPU returns utime+stime of pid in seconds (USER_HZ is 100 on Linux).
func procCPU(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	// Fields after the parenthesised command name; utime and stime are the
	// 14th and 15th fields overall.
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("bad /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("bad /proc/%d/stat", pid)
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100, nil
}
