package relay

import (
	"database/sql/driver"
	"errors"
	"io"
	"net"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// storeUnreachable reports whether err says the store could not be reached
// (a PostgreSQL server down, restarting, or cut off), rather than that it
// refused or failed the request: the operator API answers the first 503
// UNAVAILABLE, to be retried (a command with the same id is never a second
// one), and the rest 500.
func storeUnreachable(err error) bool {
	if err == nil {
		return false
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		// Class 08 is a connection exception; 57P01-57P03 a server shutting
		// down, crashed or starting; 53300 out of connections.
		return strings.HasPrefix(pe.Code, "08") || pe.Code == "57P01" || pe.Code == "57P02" || pe.Code == "57P03" || pe.Code == "53300"
	}
	var ce *pgconn.ConnectError
	var ne net.Error
	return errors.As(err, &ce) || errors.As(err, &ne) || errors.Is(err, driver.ErrBadConn) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || pgconn.SafeToRetry(err) ||
		// pgx's error for a connection it closed after a failure is not
		// exported.
		strings.Contains(err.Error(), "conn closed")
}
