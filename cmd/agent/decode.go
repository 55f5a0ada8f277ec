package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/line-agent/line-agent/pkg/typedstream"
)

// runDecode decodes an attributedBody archive copied out of chat.db, the
// first thing support needs when a message "arrived empty".
func runDecode(_ context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) != 2 || args[0] != "attributed-body" {
		fmt.Fprintln(stderr, "usage: line-agent decode attributed-body FILE   (FILE - reads standard input)")
		return &exitError{code: 2, err: errors.New("expected: decode attributed-body FILE")}
	}
	var b []byte
	var err error
	if args[1] == "-" {
		b, err = io.ReadAll(io.LimitReader(os.Stdin, 64<<20))
	} else {
		b, err = os.ReadFile(args[1])
	}
	if err != nil {
		return err
	}
	as, err := typedstream.Decode(b)
	if errors.Is(err, typedstream.ErrNoText) {
		return fmt.Errorf("%s holds no text: %w", args[1], err)
	}
	if err != nil && as == nil {
		return fmt.Errorf("%s is not a readable attributedBody archive: %w", args[1], err)
	}
	if err != nil {
		fmt.Fprintf(stderr, "warning: archive damaged after the text: %v\n", err)
	}
	if as.Runs == nil {
		as.Runs = []typedstream.Run{}
	}
	enc := json.NewEncoder(stdout)
	enc.SetEscapeHTML(false)
	return enc.Encode(struct {
		Text string            `json:"text"`
		Runs []typedstream.Run `json:"runs"`
	}{as.Text, as.Runs})
}
