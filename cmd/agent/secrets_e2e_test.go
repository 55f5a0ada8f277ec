package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/line-agent/line-agent/logging"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
	photonv1 "github.com/line-agent/line-agent/proto/photon/imessage/v1"
	"github.com/line-agent/line-agent/relay/opclient"
)

// storedCredentials is what the test reads from credentials.json: the
// secrets the relay issued the agent.
type storedCredentials struct {
	AgentSecret string `json:"agent_secret"`
	AccessToken string `json:"access_token"`
}

func readCredentials(t *testing.T, dir string) storedCredentials {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "credentials.json"))
	if err != nil {
		t.Fatal(err)
	}
	var c storedCredentials
	if err := json.Unmarshal(b, &c); err != nil || c.AgentSecret == "" || c.AccessToken == "" {
		t.Fatalf("credentials.json: %v %+v", err, c != storedCredentials{})
	}
	return c
}

// output runs a command and returns what it wrote to each stream.
func output(t *testing.T, cmd *exec.Cmd) (stdout, stderr string) {
	t.Helper()
	var o, e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\n%s%s", strings.Join(cmd.Args, " "), err, o.String(), e.String())
	}
	return o.String(), e.String()
}

// No secret the platform issues ever reaches a log, an output or an argv:
// a real line-relay (debug level, access tokens living 8 s) and a real
// line-agent (debug level, its log a file, so JSON lines) through
// enrollment, sends, access-token renewals, a refused enrollment and
// platform API calls with a good and a refused token; then every byte of
// both logs, of every command's output and of the agent's argv is searched
// for the project token, the agent secret, every access token
// credentials.json held, the API token and the refused ones.
func TestNoSecretInAnyLogThroughEnrollmentAndRenewal(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs real processes")
	}
	agentBin, relayBin := buildBinaries(t)
	dir := t.TempDir()
	relayDir, agentDir := filepath.Join(dir, "relay"), filepath.Join(dir, "agent")
	grpcAddr, httpAddr, apiAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	ctx := context.Background()
	var said strings.Builder // every command's output
	secrets := map[string]string{}

	// The token commands print the token they make (that is their job):
	// what else they say is searched.
	tok, errOut := output(t, exec.Command(relayBin, "token", "create", "--data", relayDir))
	said.WriteString(errOut)
	secrets["project token"] = strings.TrimSpace(tok)
	relay := startProc(t, filepath.Join(dir, "relay.log"), relayBin, "serve", "--data", relayDir, "--grpc-addr", grpcAddr,
		"--http-addr", httpAddr, "--api-addr", apiAddr, "--token-ttl", "8s", "--log-level", "debug")
	api := opclient.New(httpAddr)
	deadline := time.Now().Add(20 * time.Second)
	for _, err := api.Agents(ctx); err != nil; _, err = api.Agents(ctx) {
		if time.Now().After(deadline) {
			t.Fatalf("relay not up:\n%s", relay.logText())
		}
		time.Sleep(50 * time.Millisecond)
	}
	apiTok, errOut := output(t, exec.Command(relayBin, "api-token", "create", "--data", relayDir, "--line", e2eLine))
	said.WriteString(errOut)
	secrets["API token"] = strings.TrimSpace(apiTok)

	// A refused enrollment: the token it was given is not repeated.
	secrets["refused project token"] = "lrp_notissued_" + strconv.FormatInt(time.Now().UnixNano(), 36)
	bad := exec.Command(agentBin, "enroll", "--relay", grpcAddr, "--ca", filepath.Join(relayDir, "ca.pem"), "--token-file", "-", "--data", filepath.Join(dir, "refused"))
	bad.Stdin = strings.NewReader(secrets["refused project token"] + "\n")
	out, err := bad.CombinedOutput()
	if err == nil {
		t.Fatalf("an enrollment with a token the relay never issued succeeded: %s", out)
	}
	said.Write(out)

	enroll := exec.Command(agentBin, "enroll", "--relay", grpcAddr, "--ca", filepath.Join(relayDir, "ca.pem"), "--token-file", "-", "--data", agentDir, "--log-level", "debug")
	enroll.Stdin = strings.NewReader(secrets["project token"] + "\n")
	o, e := output(t, enroll)
	said.WriteString(o + e)
	first := readCredentials(t, agentDir)
	secrets["agent secret"] = first.AgentSecret
	secrets["access token 1"] = first.AccessToken

	a := startProc(t, filepath.Join(dir, "agent.log"), agentBin, "run", "--data", agentDir, "--driver", "sim", "--sim-reply-delay", "1h", "--log-level", "debug")
	waitHealthy(t, api, 20*time.Second, a, relay)
	send := func(id string) {
		t.Helper()
		cmd := &linev1.Command{Id: id, Line: e2eLine,
			Target:   &linev1.Command_Participants{Participants: &linev1.Participants{Handles: []string{e2ePeer}}},
			Deadline: timestamppb.New(time.Now().Add(20 * time.Second)),
			Kind:     &linev1.Command_SendText{SendText: &linev1.SendText{Text: "text " + id}}}
		if _, _, err := api.Submit(ctx, cmd); err != nil {
			t.Fatal(err)
		}
		cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		if v, err := api.Final(cctx, id, nil); err != nil || v.State != "succeeded" {
			t.Fatalf("%s: %v %+v\n%s", id, err, v, a.logText())
		}
	}
	send("secret-before-renewal")

	// A renewal: credentials.json's access token changes (the relay's
	// tokens live 8 s; the agent renews at 80%, 6.4 s, beyond its 5 s
	// throttle between renewals).
	seen := map[string]bool{first.AccessToken: true}
	for end := time.Now().Add(30 * time.Second); len(seen) < 2; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("the access token was not renewed in 30 s\n%s", a.logText())
		}
		if c := readCredentials(t, agentDir); !seen[c.AccessToken] {
			seen[c.AccessToken] = true
			secrets["access token "+strconv.Itoa(len(seen))] = c.AccessToken
		}
	}
	send("secret-after-renewal")

	// The platform API with the token it was given, and with one refused.
	conn, err := grpc.NewClient(apiAddr, grpc.WithTransportCredentials(mustTLS(t, filepath.Join(relayDir, "ca.pem"))))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	chats := photonv1.NewChatServiceClient(conn)
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := chats.GetChat(metadata.AppendToOutgoingContext(cctx, "authorization", "Bearer "+secrets["API token"]), &photonv1.GetChatRequest{ChatGuid: e2eChat}); err != nil {
		t.Fatalf("the platform API's GetChat with its token: %v", err)
	}
	secrets["refused API token"] = secrets["API token"] + "x"
	if _, err := chats.GetChat(metadata.AppendToOutgoingContext(cctx, "authorization", "Bearer "+secrets["refused API token"]), &photonv1.GetChatRequest{ChatGuid: e2eChat}); err == nil {
		t.Fatal("the platform API took a token it never issued")
	} else if strings.Contains(err.Error(), secrets["refused API token"]) {
		t.Error("the refusal repeated the token")
	}

	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(a.cmd.Process.Pid) + "/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	status, errOut := output(t, exec.Command(agentBin, "status", "--data", agentDir, "--json"))
	said.WriteString(status + errOut)
	if !strings.Contains(status, `"status"`) {
		t.Errorf("status --json: %s", status)
	}
	a.kill()
	relay.kill()

	agentLog := a.logText()
	for where, text := range map[string]string{"relay.log": relay.logText(), "agent.log": agentLog, "command output": said.String(), "the agent's argv": string(cmdline)} {
		for what, secret := range secrets {
			if secret == "" {
				t.Fatalf("%s is empty", what)
			}
			if strings.Contains(text, secret) {
				t.Errorf("%s holds the %s", where, what)
			}
		}
	}
	// Off a terminal the agent's log is JSON lines (format auto), and
	// each line about a command names it under "command".
	commandLines := 0
	for _, l := range strings.Split(strings.TrimSpace(agentLog), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("agent.log line is not JSON: %q", l)
		}
		if strings.Contains(l, "secret-before-renewal") || strings.Contains(l, "secret-after-renewal") {
			commandLines++
			if id, _ := m[logging.CommandKey].(string); !strings.HasPrefix(id, "secret-") {
				t.Errorf("a line about a command without %q: %s", logging.CommandKey, l)
			}
		}
	}
	if commandLines < 2 {
		t.Errorf("%d agent log lines about the two commands, want at least 2:\n%s", commandLines, agentLog)
	}
}

func mustTLS(t *testing.T, caFile string) credentials.TransportCredentials {
	t.Helper()
	c, err := credentials.NewClientTLSFromFile(caFile, "localhost")
	if err != nil {
		t.Fatal(err)
	}
	return c
}
