package bridge

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
)

// readBufferBytes is the socket read buffer; lines longer than it are
// assembled in lineReader.buf up to the limit.
const readBufferBytes = 64 << 10

// lineTooLongError reports a line that exceeded the limit. The line was read
// to its end and thrown away, so the stream stays usable.
type lineTooLongError struct{ size, limit int }

func (e *lineTooLongError) Error() string {
	return fmt.Sprintf("line of %d+ bytes exceeds the %d-byte limit", e.size, e.limit)
}

// lineReader splits a stream on '\n' holding at most limit bytes of one line
// (plus the read buffer) however long the line really is.
type lineReader struct {
	r     *bufio.Reader
	limit int
	buf   []byte
	// peak is the largest len(buf) seen, for tests of the memory bound.
	peak int
}

func newLineReader(r io.Reader, limit int) *lineReader {
	return &lineReader{r: bufio.NewReaderSize(r, readBufferBytes), limit: limit}
}

// next returns the next line without "\n" or "\r\n". The slice is valid until
// the following call. A line over the limit returns *lineTooLongError after
// it has been skipped; a stream error (EOF included) ends the reader.
func (lr *lineReader) next() ([]byte, error) {
	lr.buf = lr.buf[:0]
	if cap(lr.buf) > readBufferBytes {
		lr.buf = nil // do not keep a large line's memory for the idle case
	}
	skipped := 0
	for {
		chunk, err := lr.r.ReadSlice('\n')
		switch {
		case skipped > 0:
			skipped += len(chunk)
		case len(lr.buf)+len(chunk) > lr.limit+2: // +2: the "\r\n"
			skipped = len(lr.buf) + len(chunk)
			lr.buf = lr.buf[:0]
		default:
			lr.buf = append(lr.buf, chunk...)
			lr.peak = max(lr.peak, len(lr.buf))
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			return nil, err
		}
		if skipped > 0 {
			return nil, &lineTooLongError{size: skipped, limit: lr.limit}
		}
		line := bytes.TrimRight(lr.buf, "\r\n")
		if len(line) > lr.limit {
			return nil, &lineTooLongError{size: len(line), limit: lr.limit}
		}
		return line, nil
	}
}
