package relay

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/line-agent/line-agent/command"
)

// Platform API tokens. The SDK (spectrum-ts) never sends the phone: the
// bearer token decides the line. A dedicated token names one line (all of a
// project's end users see one number); a pool token names several, and the
// relay gives each end user one line of the pool and keeps it (sticky,
// recorded in pool_assignments). Tokens are stored as SHA-256 only, looked
// up by it, and never logged; a revoked token is refused on every call.

// apiTokenPrefix marks a platform API token in a config file or a report.
const apiTokenPrefix = "lrk_"

// APIToken is one platform API token as line-relay api-token list shows it
// (never the secret itself).
type APIToken struct {
	ID        string    `json:"id"`
	Lines     []string  `json:"lines"`
	Pool      bool      `json:"pool"`
	CreatedAt time.Time `json:"created_at"`
	RevokedAt time.Time `json:"revoked_at,omitzero"`
}

// ErrAPITokenNotFound is returned by RevokeAPIToken for an unknown id.
var ErrAPITokenNotFound = errors.New("relay: no such API token")

// CreateAPIToken makes a platform API token for lines in the relay's
// store: one line is a dedicated token, several with pool set a shared
// pool. It returns the token (shown once) and its id.
func CreateAPIToken(at Storage, lines []string, pool bool) (token, id string, err error) {
	st, err := at.open(true)
	if err != nil {
		return "", "", err
	}
	defer st.close()
	return createAPIToken(context.Background(), st, lines, pool, time.Now())
}

// CreateAPIToken is the package function on a running server (tests).
func (s *Server) CreateAPIToken(ctx context.Context, lines []string, pool bool) (token, id string, err error) {
	return createAPIToken(ctx, s.store, lines, pool, s.now())
}

func createAPIToken(ctx context.Context, st *store, lines []string, pool bool, now time.Time) (string, string, error) {
	keys := lineKeys(lines)
	switch {
	case len(keys) == 0:
		return "", "", errors.New("an API token needs a line (--line) or a pool of lines (--pool)")
	case !pool && len(keys) > 1:
		return "", "", errors.New("a dedicated token names one line; use --pool for several")
	}
	for _, k := range keys {
		if err := command.CheckLine(k); err != nil {
			return "", "", err
		}
	}
	tok := newSecret(apiTokenPrefix)
	id := "apt_" + newAgentID()[len(agentIDPrefix):]
	lj, _ := json.Marshal(keys)
	if _, err := st.exec(ctx, `INSERT INTO api_tokens(id, hash, lines, pool, created_at) VALUES(?, ?, ?, ?, ?)`,
		id, hashSecret(tok), string(lj), pool, now.UnixNano()); err != nil {
		return "", "", err
	}
	return tok, id, nil
}

// ListAPITokens lists every API token of the relay's store.
func ListAPITokens(at Storage) ([]APIToken, error) {
	st, err := at.open(false)
	if err != nil {
		return nil, err
	}
	defer st.close()
	return st.listAPITokens(context.Background())
}

func (st *store) listAPITokens(ctx context.Context) ([]APIToken, error) {
	rows, err := st.db.QueryContext(ctx, `SELECT id, lines, pool, created_at, revoked_at FROM api_tokens ORDER BY created_at, id`)
	if err != nil {
		return nil, err
	}
	return collect(rows, func(rows *sql.Rows) (t APIToken, err error) {
		var lj string
		var cr, rv int64
		if err := rows.Scan(&t.ID, &lj, &t.Pool, &cr, &rv); err != nil {
			return t, err
		}
		_ = json.Unmarshal([]byte(lj), &t.Lines)
		t.CreatedAt = time.Unix(0, cr).UTC()
		if rv > 0 {
			t.RevokedAt = time.Unix(0, rv).UTC()
		}
		return t, nil
	})
}

// RevokeAPIToken refuses the token from now on, streams included (a running
// relay checks it on every call and at every stream heartbeat).
func RevokeAPIToken(at Storage, id string) error {
	st, err := at.open(false)
	if err != nil {
		return err
	}
	defer st.close()
	return st.revokeAPIToken(context.Background(), id, time.Now())
}

func (st *store) revokeAPIToken(ctx context.Context, id string, now time.Time) error {
	n, err := st.exec(ctx, `UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at = 0`, now.UnixNano(), id)
	if err != nil {
		return err
	}
	if n == 0 {
		var one int
		if err := st.db.QueryRowContext(ctx, `SELECT 1 FROM api_tokens WHERE id = ?`, id).Scan(&one); errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("API token %q: %w", id, ErrAPITokenNotFound)
		}
	}
	return nil
}

// apiCaller is who a platform API call comes from: the token's id and lines.
type apiCaller struct {
	tokenID string
	lines   []string // line keys
	pool    bool
}

// apiCaller looks a bearer token up: nil (and no error) for an unknown or
// revoked one. It is found by its SHA-256, as agents' access tokens are:
// no comparison ever touches the token itself, so timing tells a guesser
// nothing about it.
func (st *store) apiCaller(ctx context.Context, token string) (*apiCaller, error) {
	h := hashSecret(token)
	var c apiCaller
	var lj string
	var revoked int64
	err := st.queryRow(ctx, sqlAPICaller, h).Scan(&c.tokenID, &lj, &c.pool, &revoked)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if revoked != 0 {
		return nil, nil
	}
	_ = json.Unmarshal([]byte(lj), &c.lines)
	return &c, nil
}
