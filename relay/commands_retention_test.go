package relay

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// A finished command is pruned once Options.CommandRetention has passed
// since its deadline, and its id is free again; one whose deadline is
// within the retention stays, finished or not.
func TestFinishedCommandsArePrunedAfterTheRetention(t *testing.T) {
	clock := &testClock{}
	srv := startRelay(t, "", Options{Now: clock.Now, CommandRetention: time.Hour})
	a := enrollAgent(t, srv, "+15550001")
	a.connect()
	submit := func(id string, deadline time.Duration) {
		t.Helper()
		if _, err := srv.SubmitCommand(context.Background(), &linev1.Command{Id: id, Line: "+15550001", Target: &linev1.Command_ChatGuid{ChatGuid: "iMessage;-;+15557654321"},
			Deadline: timestamppb.New(clock.Now().Add(deadline)), Kind: &linev1.Command_SendText{SendText: &linev1.SendText{Text: id}}}); err != nil {
			t.Fatal(err)
		}
	}
	submit("old", time.Minute)
	submit("far", 6*24*time.Hour)
	submit("open", 6*24*time.Hour)
	for range 3 {
		if id := a.nextCommand().GetId(); id != "open" {
			a.succeed(id, "G-"+id)
			waitState(t, srv, id, stateSucceeded)
		}
	}

	clock.Advance(2 * time.Hour)
	eventually(t, "old to be pruned", func() bool {
		_, err := srv.CommandView("old")
		return errors.Is(err, ErrNotFound)
	})
	for id, state := range map[string]string{"far": stateSucceeded, "open": stateDispatched} {
		if v, err := srv.CommandView(id); err != nil || v.State != state {
			t.Errorf("%s within the retention: %+v, %v; want it kept, %s", id, v, err, state)
		}
	}
	code, b := httpDo(t, srv, http.MethodGet, "/v1/commands/old", "")
	if code != http.StatusNotFound || !strings.Contains(string(b), "NOT_FOUND") {
		t.Fatalf("GET a pruned command: %d %s", code, b)
	}
	// The id is free: the same id is a new command.
	created, err := srv.SubmitCommand(context.Background(), &linev1.Command{Id: "old", Line: "+15550001", Target: &linev1.Command_ChatGuid{ChatGuid: "iMessage;-;+15557654321"},
		Deadline: timestamppb.New(clock.Now().Add(time.Minute)), Kind: &linev1.Command_SendText{SendText: &linev1.SendText{Text: "again"}}})
	if err != nil || !created {
		t.Fatalf("the pruned id again: created %v, %v", created, err)
	}
}

// The prune's look reads the finished commands past the cutoff through
// the (state, deadline) index, not every finished command: it runs at
// every retention pass.
func TestPruneCommandsReadsByTheDeadlineIndex(t *testing.T) {
	srv := startRelay(t, "", Options{})
	if srv.store.d != sqliteDialect {
		t.Skip("PostgreSQL plans by statistics; this checks SQLite's plan")
	}
	due, args := commandsDue(time.Now())
	var id, parent, unused int
	var detail string
	if err := srv.store.db.QueryRow(`EXPLAIN QUERY PLAN SELECT 1 FROM commands WHERE `+due+` LIMIT 1`, args...).Scan(&id, &parent, &unused, &detail); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(detail, "commands_deadline (state=? AND deadline<?)") {
		t.Fatalf("plan %q, want a search of commands_deadline", detail)
	}
}
