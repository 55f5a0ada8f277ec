package relay

import (
	"context"
	"database/sql/driver"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/stdlib"
)

// pgConnector opens PostgreSQL connections (pgx's database/sql driver) that
// take the SQL and the arguments the relay writes for SQLite, so a query is
// written once for both (store_dialect.go):
//
//   - ? placeholders become $1, $2, ... when a statement is prepared or
//     run (rebind);
//   - a bool argument is bound as 0 or 1, as SQLite's driver binds it: the
//     relay's flags are integer columns;
//   - a string argument's NUL characters, which PostgreSQL text cannot
//     hold, become U+FFFD (SQLite keeps them): text an agent sends, a
//     command's detail say, is stored rather than failing the write
//     whenever it holds one.
type pgConnector struct{ driver.Connector }

func (c pgConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return &pgConn{conn.(*stdlib.Conn)}, nil
}

// pgConn is one connection of a pgConnector: pgx's, with the statement text
// rebound and the arguments checked on the way in.
type pgConn struct{ c *stdlib.Conn }

// The interfaces database/sql looks for on a connection, all of which pgx's
// has: none may be lost by wrapping it.
var (
	_ driver.ConnPrepareContext = (*pgConn)(nil)
	_ driver.ConnBeginTx        = (*pgConn)(nil)
	_ driver.ExecerContext      = (*pgConn)(nil)
	_ driver.QueryerContext     = (*pgConn)(nil)
	_ driver.Pinger             = (*pgConn)(nil)
	_ driver.SessionResetter    = (*pgConn)(nil)
	_ driver.NamedValueChecker  = (*pgConn)(nil)
)

func (p *pgConn) Prepare(query string) (driver.Stmt, error) { return p.c.Prepare(rebind(query)) }
func (p *pgConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	return p.c.PrepareContext(ctx, rebind(query))
}
func (p *pgConn) Close() error { return p.c.Close() }
func (p *pgConn) Begin() (driver.Tx, error) {
	return p.c.BeginTx(context.Background(), driver.TxOptions{})
}
func (p *pgConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	return p.c.BeginTx(ctx, opts)
}
func (p *pgConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	return p.c.ExecContext(ctx, rebind(query), args)
}
func (p *pgConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	return p.c.QueryContext(ctx, rebind(query), args)
}
func (p *pgConn) Ping(ctx context.Context) error         { return p.c.Ping(ctx) }
func (p *pgConn) ResetSession(ctx context.Context) error { return p.c.ResetSession(ctx) }

// CheckNamedValue binds bools as integers and keeps NUL out of text (see
// pgConnector); everything else goes to pgx as it is.
func (p *pgConn) CheckNamedValue(nv *driver.NamedValue) error {
	switch v := nv.Value.(type) {
	case bool:
		nv.Value = int64(0)
		if v {
			nv.Value = int64(1)
		}
	case string:
		if strings.IndexByte(v, 0) >= 0 {
			nv.Value = strings.ReplaceAll(v, "\x00", "\uFFFD")
		}
	}
	return p.c.CheckNamedValue(nv)
}

// rebind turns the ? placeholders of query into PostgreSQL's $1, $2, ...,
// leaving alone a ? inside a quoted string or identifier or a comment. The
// relay's statements use no PostgreSQL operator spelled with ? (jsonb's ?,
// ?| and ?&), which would be taken for placeholders.
func rebind(query string) string {
	if strings.IndexByte(query, '?') < 0 {
		return query
	}
	var b strings.Builder
	b.Grow(len(query) + 8)
	n := 0
	for i := 0; i < len(query); i++ {
		c := query[i]
		switch {
		case c == '\'' || c == '"':
			// Up to the closing quote; a doubled quote inside is the quote
			// itself and the scan simply goes on past it.
			j := i + 1
			for j < len(query) && query[j] != c {
				j++
			}
			b.WriteString(query[i:min(j+1, len(query))])
			i = j
		case c == '-' && i+1 < len(query) && query[i+1] == '-':
			j := strings.IndexByte(query[i:], '\n')
			if j < 0 {
				j = len(query) - i
			}
			b.WriteString(query[i : i+j])
			i += j - 1
		case c == '/' && i+1 < len(query) && query[i+1] == '*':
			j := strings.Index(query[i+2:], "*/")
			end := len(query)
			if j >= 0 {
				end = i + 2 + j + 2
			}
			b.WriteString(query[i:end])
			i = end - 1
		case c == '?':
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}
