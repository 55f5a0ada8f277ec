package relay

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/line-agent/line-agent/command"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// Every secret the relay hands out is random and stored only as its SHA-256:
// a leaked relay.db does not let anyone enroll or connect.

// newSecret returns prefix + 32 random bytes, URL-safe. The prefix says what
// the secret is when one turns up in a config file or a bug report.
func newSecret(prefix string) string {
	var b [32]byte
	rand.Read(b[:])
	return prefix + base64.RawURLEncoding.EncodeToString(b[:])
}

// newAgentID is "agt_" and 16 lower-case base32 characters.
func newAgentID() string {
	var b [10]byte
	rand.Read(b[:])
	return agentIDPrefix + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
}

func hashSecret(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// CreateProjectToken creates a project token an operator hands to the Macs
// being enrolled. Agents enrolled with it may serve only the given lines,
// or, with none given, any line no other agent holds (the single-Mac
// default; docs/security.md). Only its hash is kept, so the returned value
// is the one chance to copy it.
func (s *Server) CreateProjectToken(ctx context.Context, lines ...string) (string, error) {
	return createProjectToken(ctx, s.store, lines, s.now())
}

// CreateProjectToken creates a project token in the relay's store without a
// running server (the "line-relay token create" command). It is safe while
// a relay serves the same store: SQLite WAL serialises the writers, and
// PostgreSQL's transactions are their own.
func CreateProjectToken(at Storage, lines ...string) (string, error) {
	st, err := at.open(true)
	if err != nil {
		return "", err
	}
	defer st.close()
	return createProjectToken(context.Background(), st, lines, time.Now())
}

func createProjectToken(ctx context.Context, st *store, lines []string, now time.Time) (string, error) {
	keys := lineKeys(lines)
	for _, k := range keys {
		if err := command.CheckLine(k); err != nil {
			return "", err
		}
	}
	tok := newSecret(projectTokenPrefix)
	if err := st.addProjectToken(ctx, hashSecret(tok), keys, now); err != nil {
		return "", err
	}
	return tok, nil
}

// issueCredential stores a new access token for agentID.
func (s *Server) issueCredential(ctx context.Context, agentID string) (*linev1.Credential, error) {
	tok := newSecret(accessTokenPrefix)
	now := s.now()
	exp := now.Add(s.opts.TokenTTL)
	if err := s.store.addAccessToken(ctx, hashSecret(tok), agentID, exp, now); err != nil {
		return nil, err
	}
	return &linev1.Credential{AccessToken: tok, ExpiresAt: timestamppb.New(exp)}, nil
}

// enroll implements Enroll. The messages never repeat what the caller sent.
func (s *Server) enroll(ctx context.Context, req *linev1.EnrollRequest) (*linev1.EnrollResponse, error) {
	if req.GetProjectToken() == "" {
		return nil, status.Error(codes.Unauthenticated, "a project token is required")
	}
	ok, allowed, err := s.store.projectToken(ctx, hashSecret(req.GetProjectToken()))
	if err != nil {
		s.log.Error("enroll: token lookup failed", "err", err)
		return nil, status.Error(codes.Internal, "the relay could not check the project token")
	}
	if !ok {
		s.log.Warn("enroll refused: unknown project token", "hostname", req.GetHostname())
		return nil, status.Error(codes.Unauthenticated, "the project token is not valid")
	}
	id := newAgentID()
	secret := newSecret(agentSecretPrefix)
	tok := newSecret(accessTokenPrefix)
	now := s.now()
	exp := now.Add(s.opts.TokenTTL)
	lines := make([]string, 0, len(req.GetLines()))
	for _, l := range req.GetLines() {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	refused, err := s.store.createAgent(ctx, id, hashSecret(secret), req.GetHostname(), req.GetVersion(), lines, allowed, hashSecret(tok), exp, now)
	if err != nil {
		s.log.Error("enroll: store agent failed", "err", err)
		return nil, status.Error(codes.Internal, "the relay could not record the agent")
	}
	s.log.Info("agent enrolled", "agent_id", id, "hostname", req.GetHostname(), "version", req.GetVersion())
	for _, r := range refused {
		s.log.Warn("enrolled agent may not serve a line it named", "agent_id", id, "line", lineKey(r.Line), "reason", r.Reason)
	}
	return &linev1.EnrollResponse{
		AgentId:     id,
		AgentSecret: secret,
		Credential:  &linev1.Credential{AccessToken: tok, ExpiresAt: timestamppb.New(exp)},
	}, nil
}

// refresh implements Refresh: the agent's long-lived secret buys a new
// access token. Unknown agent and wrong secret get the same answer.
func (s *Server) refresh(ctx context.Context, req *linev1.RefreshRequest) (*linev1.RefreshResponse, error) {
	const denied = "the agent id or secret is not valid"
	if req.GetAgentId() == "" || req.GetAgentSecret() == "" {
		return nil, status.Error(codes.Unauthenticated, denied)
	}
	stored, err := s.store.agentSecretHash(ctx, req.GetAgentId())
	if err != nil {
		s.log.Error("refresh: lookup failed", "err", err)
		return nil, status.Error(codes.Internal, "the relay could not check the agent")
	}
	got := hashSecret(req.GetAgentSecret())
	if stored == "" || subtle.ConstantTimeCompare([]byte(stored), []byte(got)) != 1 {
		s.log.Warn("refresh refused", "agent_id", req.GetAgentId())
		return nil, status.Error(codes.Unauthenticated, denied)
	}
	cred, err := s.issueCredential(ctx, req.GetAgentId())
	if err != nil {
		s.log.Error("refresh: store token failed", "err", err)
		return nil, status.Error(codes.Internal, "the relay could not issue a token")
	}
	return &linev1.RefreshResponse{Credential: cred}, nil
}

// bearerToken reads the call's "authorization: Bearer <token>" metadata,
// the one way agents and platform API callers present a token.
func bearerToken(ctx context.Context) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) == 0 {
		return "", status.Error(codes.Unauthenticated, `missing "authorization: Bearer <token>" metadata`)
	}
	scheme, tok, ok := strings.Cut(strings.TrimSpace(vals[0]), " ")
	tok = strings.TrimSpace(tok)
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return "", status.Error(codes.Unauthenticated, `the authorization metadata must be "Bearer <token>"`)
	}
	return tok, nil
}

// authenticate checks the stream's "authorization: Bearer <token>" metadata
// and returns the agent it belongs to.
func (s *Server) authenticate(ctx context.Context) (string, error) {
	tok, err := bearerToken(ctx)
	if err != nil {
		return "", err
	}
	agentID, exp, found, err := s.store.accessToken(ctx, hashSecret(tok))
	if err != nil {
		s.log.Error("connect: token lookup failed", "err", err)
		return "", status.Error(codes.Internal, "the relay could not check the access token")
	}
	if !found {
		return "", status.Error(codes.Unauthenticated, "the access token is not valid; enroll or refresh")
	}
	if !s.now().Before(exp) {
		return "", status.Error(codes.Unauthenticated, "the access token has expired; refresh it")
	}
	return agentID, nil
}
