package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// scanResult is one sub-benchmark of BenchmarkScanStep.
type scanResult struct {
	nsOp, p50, p99 time.Duration
}

// buildChatdbTest compiles messages/chatdb's test binary, which holds
// BenchmarkScanStep (scan_bench_test.go): Tailer internals are reachable only
// from inside the package.
func buildChatdbTest(ctx context.Context, goBin, out string) error {
	cmd := exec.CommandContext(ctx, goBin, "test", "-c", "-o", out, "./messages/chatdb")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go test -c: %v\n%s", err, b)
	}
	return nil
}

// runScanBench runs BenchmarkScanStep against the chat.db at path.
func runScanBench(ctx context.Context, testBin, path string, iters int) (map[string]scanResult, error) {
	cmd := exec.CommandContext(ctx, testBin, "-test.run", "^$", "-test.bench", "^BenchmarkScanStep$",
		"-test.benchtime", strconv.Itoa(iters)+"x", "-test.count", "1")
	cmd.Env = append(os.Environ(), "LINE_AGENT_BENCH_CHATDB="+path)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("scan benchmark: %v\n%s", err, out.String())
	}
	res := map[string]scanResult{}
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], "BenchmarkScanStep/") {
			continue
		}
		name := strings.TrimPrefix(f[0], "BenchmarkScanStep/")
		if i := strings.LastIndex(name, "-"); i > 0 {
			name = name[:i]
		}
		var r scanResult
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				continue
			}
			switch f[i+1] {
			case "ns/op":
				r.nsOp = time.Duration(v)
			case "p50-µs":
				r.p50 = time.Duration(v * 1e3)
			case "p99-µs":
				r.p99 = time.Duration(v * 1e3)
			}
		}
		res[name] = r
	}
	if len(res) != 2 {
		return nil, fmt.Errorf("scan benchmark: unexpected output:\n%s", out.String())
	}
	return res, nil
}
