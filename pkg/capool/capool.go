// Package capool reads a PEM file of CA certificates into a pool: how every
// client here (the agent, the load generator, the bench's API clients)
// trusts a relay's own CA instead of the system roots. One rule, so an
// empty or mistaken file is refused with the same message everywhere
// rather than becoming a pool that trusts nothing and fails later as a
// handshake error.
package capool

import (
	"crypto/x509"
	"fmt"
	"os"
)

// Load reads file and returns a pool of the certificates in it. A file
// without a PEM certificate is an error naming the file.
func Load(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA file %s holds no PEM certificate", file)
	}
	return pool, nil
}
