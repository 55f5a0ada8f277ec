package chatdb

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
)

// formatImage writes rows as imageRecord's printf does, for the tests.
func formatImage(recs [][7]int64) string {
	var b strings.Builder
	for _, r := range recs {
		fmt.Fprintf(&b, "%d %d %d %d %d %d %d;", r[0], r[1], r[2], r[3], r[4], r[5], r[6])
	}
	return b.String()
}

func TestParseImage(t *testing.T) {
	recs := [][7]int64{
		{1, imgMessage | imgFromMe | imgSent | imgDelivered | imgRead, 0, 0, 0, 0, 0},
		{2, imgMessage, 22, 804_000_000_000_000_000, 805_000_000_000_000_000, 1234, 3},
		{3, 0, -7, 0, 0, 0, 9}, // not a message: no state, no pending
		{math.MaxInt64, imgMessage | imgRead, math.MinInt64, -1, math.MaxInt64, 0, 0},
	}
	got, err := parseImage(formatImage(recs), 0)
	if err != nil {
		t.Fatal(err)
	}
	want := []windowRow{
		{rowid: 1, fp: state{Flags: flagSent | flagDelivered | flagRead}},
		{rowid: 2, fp: state{Error: 22, Edited: 804_000_000_000_000_000, Retracted: 805_000_000_000_000_000, SumLen: 1234}, pending: 3},
		{rowid: 3},
		{rowid: math.MaxInt64, fp: state{Flags: flagRead, Error: math.MinInt64, Edited: -1, Retracted: math.MaxInt64}},
	}
	if !slices.Equal(got, want) {
		t.Errorf("parsed\n%+v\nwant\n%+v", got, want)
	}
	// Received rows are delivered by nature, sent flags need from_me: as
	// fingerprint does from the columns.
	got, _ = parseImage(formatImage([][7]int64{{5, imgMessage | imgSent | imgDelivered, 0, 0, 0, 0, 0}}), 1)
	if got[0].fp != (state{}) {
		t.Errorf("sent/delivered of a received row: %+v", got[0].fp)
	}
	if got, err := parseImage("", 0); err != nil || len(got) != 0 {
		t.Errorf("empty image: %v, %v", got, err)
	}

	for _, bad := range []string{
		"1 2 3 4 5 6;",                      // a field short
		"1 2 3 4 5 6 7 8;",                  // a field too many
		"1 2 3 4 5 6 7",                     // no terminator
		"1 2 3 4 5 6 7;1",                   // truncated record
		"1  2 3 4 5 6 7;",                   // two spaces
		"1 2 3 4 5 6 x;",                    // not a number
		"1 2 3 4 5 6 -;",                    // a sign alone
		"1 2 3 4 5 6 1.5;",                  // a real
		"9223372036854775808 0 0 0 0 0 0;",  // past MaxInt64
		"-9223372036854775809 0 0 0 0 0 0;", // past MinInt64
		" 1 2 3 4 5 6 7;",
	} {
		if _, err := parseImage(bad, 0); !errors.Is(err, ErrBadImage) {
			t.Errorf("parseImage(%q) = %v, want ErrBadImage", bad, err)
		}
	}
}

// FuzzParseImage: any record printf can write parses back to its fields.
func FuzzParseImage(f *testing.F) {
	f.Add(int64(1), int64(31), int64(0), int64(0), int64(0), int64(0), int64(0))
	f.Add(int64(math.MaxInt64), int64(1), int64(math.MinInt64), int64(-1), int64(7), int64(1<<40), int64(2))
	f.Fuzz(func(t *testing.T, id, flags, errCode, edited, retracted, sumLen, pending int64) {
		rec := [7]int64{id, flags, errCode, edited, retracted, sumLen, pending}
		got, err := parseImage(formatImage([][7]int64{rec, rec}), 2)
		if err != nil {
			t.Fatal(err)
		}
		if want := imageRow(rec); len(got) != 2 || got[0] != want || got[1] != want {
			t.Fatalf("parsed %+v, want twice %+v", got, want)
		}
	})
}
