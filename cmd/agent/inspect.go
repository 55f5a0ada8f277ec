package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os/signal"
	"syscall"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/line-agent/line-agent/messages/chatdb"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// runInspect prints chat.db changes as JSON lines: what the agent would send
// the relay, without a relay. Support's first tool on a Mac.
func runInspect(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("inspect", stderr)
	db := fs.String("db", "", "path of chat.db (required)")
	since := fs.Int64("since", -1, "print messages with ROWID above this (0: everything); default: everything, or with --follow only changes from now on")
	follow := fs.Bool("follow", false, "keep watching and print changes as they happen")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *db == "" {
		return usageError("--db PATH is required")
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if *since < 0 && !*follow {
		// A one-shot look with nothing to start after is a look at all
		// of it: "changes from now on" would always be nothing.
		*since = 0
	}
	var start []byte
	if *since >= 0 {
		start = chatdb.CursorAt(*since)
	}
	printed := 0
	enc := json.NewEncoder(stdout)
	enc.SetEscapeHTML(false)
	m := protojson.MarshalOptions{UseProtoNames: true}
	sink := chatdb.SinkFunc(func(_ context.Context, evs []*linev1.Event, _ []byte) error {
		for _, ev := range evs {
			b, err := m.Marshal(ev)
			if err != nil {
				return err
			}
			if err := enc.Encode(json.RawMessage(b)); err != nil {
				return err
			}
			printed++
		}
		return nil
	})
	t := chatdb.NewTailer(chatdb.TailerOptions{Path: *db, Logger: newLogger(stderr, "warn")})
	if !*follow {
		if _, err := t.CatchUp(ctx, start, sink); err != nil {
			return err
		}
		if printed == 0 {
			fmt.Fprintf(stderr, "inspect: nothing in %s after ROWID %d\n", *db, *since)
		}
		return nil
	}
	err := t.Run(ctx, start, sink)
	if ctx.Err() != nil {
		return nil
	}
	return err
}
