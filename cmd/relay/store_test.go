package main

import (
	"bytes"
	"context"
	"errors"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/line-agent/line-agent/pkg/pgtest"
)

// TestMain stops the PostgreSQL cluster the store tests start, if any.
func TestMain(m *testing.M) { os.Exit(pgtest.Main(m).Run()) }

// TestCommandsOnPostgres: every command that opens the relay's store works
// on a PostgreSQL database named by --store or LINE_RELAY_STORE, without a
// data directory, and serve keeps only its dev CA in --data; nothing
// printed, on stdout or in the logs, holds the URL's password, nor does
// the error of a wrong one.
func TestCommandsOnPostgres(t *testing.T) {
	dsn := pgtest.Database(t)
	u, _ := url.Parse(dsn)
	password, _ := u.User.Password()
	ctx := context.Background()
	var out, errOut bytes.Buffer
	noSecret := func(what string) {
		t.Helper()
		if strings.Contains(out.String(), password) || strings.Contains(errOut.String(), password) {
			t.Fatalf("%s printed the store's password:\nstdout %s\nstderr %s", what, out.String(), errOut.String())
		}
	}
	if err := run(ctx, []string{"token", "create", "--store", dsn, "--lines", "+15550000001"}, &out, &errOut); err != nil || !strings.HasPrefix(out.String(), "lrp_") {
		t.Fatalf("token create --store: %v %q %s", err, out.String(), errOut.String())
	}
	noSecret("token create")
	out.Reset()
	if err := run(ctx, []string{"api-token", "create", "--store", dsn, "--line", "+15550000001"}, &out, &errOut); err != nil || !strings.HasPrefix(out.String(), "lrk_") {
		t.Fatalf("api-token create --store: %v %q %s", err, out.String(), errOut.String())
	}
	id := strings.TrimSpace(strings.TrimPrefix(errOut.String(), "created API token "))
	noSecret("api-token create")
	t.Setenv("LINE_RELAY_STORE", dsn)
	out.Reset()
	if err := run(ctx, []string{"api-token", "revoke", id}, &out, &errOut); err != nil {
		t.Fatalf("api-token revoke with LINE_RELAY_STORE: %v", err)
	}
	out.Reset()
	if err := run(ctx, []string{"api-token", "list"}, &out, &errOut); err != nil || !strings.Contains(out.String(), id) || !strings.Contains(out.String(), "revoked") {
		t.Fatalf("api-token list with LINE_RELAY_STORE: %v %q", err, out.String())
	}
	out.Reset()
	if err := run(ctx, []string{"line", "list"}, &out, &errOut); err != nil || out.Len() != 0 {
		t.Fatalf("line list: %v %q", err, out.String())
	}
	if err := run(ctx, []string{"line", "move", "+15550000001", "agt_nosuch"}, &out, &errOut); err == nil || !strings.Contains(err.Error(), "no such agent") {
		t.Fatalf("line move to an unknown agent: %v", err)
	}
	noSecret("the commands")

	dir := t.TempDir()
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	sout, serr := &syncBuffer{}, &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(sctx, []string{"serve", "--data", dir, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--store", dsn}, sout, serr)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(serr.String(), "relay started") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve --store: %v\n%s", err, serr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("serve did not stop")
	}
	logs := serr.String()
	if !strings.Contains(logs, "relay started") || !strings.Contains(logs, "xxxxx@127.0.0.1") || strings.Contains(logs+sout.String(), password) {
		t.Fatalf("serve's logs should name the store without its password:\n%s", logs)
	}
	if _, err := os.Stat(dir + "/relay.db"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("serve --store made relay.db in --data: %v", err)
	}

	u.User = url.UserPassword(u.User.Username(), "n0t-the-pa55word")
	err := run(ctx, []string{"token", "create", "--store", u.String()}, &out, &errOut)
	if err == nil || strings.Contains(err.Error(), "n0t-the-pa55word") || !strings.Contains(err.Error(), "password authentication failed") {
		t.Fatalf("a wrong password: %v; want the server's refusal without the password", err)
	}
	var code exitCode
	t.Setenv("LINE_RELAY_STORE", "")
	if err := run(ctx, []string{"token", "create"}, &out, &errOut); !errors.As(err, &code) || code != 2 {
		t.Fatalf("token create with neither --data nor --store: %v", err)
	}
}

// TestStoreCopyCommand: store copy moves a relay.db into a new PostgreSQL
// database, says what it copied without printing the URL's password, and
// refuses a second copy into the same database and a missing --to.
func TestStoreCopyCommand(t *testing.T) {
	dsn := pgtest.Database(t)
	u, _ := url.Parse(dsn)
	password, _ := u.User.Password()
	ctx := context.Background()
	dir := t.TempDir()
	var out, errOut bytes.Buffer
	if err := run(ctx, []string{"token", "create", "--data", dir}, &out, &errOut); err != nil {
		t.Fatalf("token create: %v %s", err, errOut.String())
	}
	out.Reset()
	if err := run(ctx, []string{"store", "copy", "--data", dir}, &out, &errOut); !errors.Is(err, exitCode(2)) || !strings.Contains(errOut.String(), "--to is required") {
		t.Fatalf("store copy without --to: %v %q", err, errOut.String())
	}
	errOut.Reset()
	if err := run(ctx, []string{"store", "copy", "--data", dir, "--to", dsn}, &out, &errOut); err != nil {
		t.Fatalf("store copy: %v %s", err, errOut.String())
	}
	if !strings.Contains(out.String(), "project_tokens    1 rows") || !strings.Contains(out.String(), "committed: copied to ") {
		t.Fatalf("store copy said %q", out.String())
	}
	if strings.Contains(out.String()+errOut.String(), password) {
		t.Fatalf("store copy printed the password: %q %q", out.String(), errOut.String())
	}
	out.Reset()
	err := run(ctx, []string{"store", "copy", "--data", dir, "--to", dsn}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "not empty") || strings.Contains(err.Error(), password) || !strings.Contains(out.String(), "nothing copied") {
		t.Fatalf("a second store copy into the same database: %v", err)
	}
	out.Reset()
	if err := run(ctx, []string{"api-token", "list", "--store", dsn}, &out, &errOut); err != nil {
		t.Fatalf("the copy does not open: %v", err)
	}
}
