//go:build !linux && !darwin

package procid

// startOf cannot read a process table here.
func startOf(int) (string, error) { return "", ErrUnsupported }
