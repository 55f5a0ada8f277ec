package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/line-agent/line-agent/messages/sim"
)

// genChatDB writes a chat.db at dir/chat.db holding n messages in 50
// one-to-one chats, in transactions of 20,000 rows. The last 2,000 rows are
// dated within the past day and older rows are spread over five years, so
// every size has the same recent "update window" and only the history grows:
// the scan cost can then only grow with the size of the table itself.
func genChatDB(ctx context.Context, dir string, n int) (string, time.Duration, error) {
	start := time.Now()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", 0, err
	}
	path := filepath.Join(dir, "chat.db")
	st, err := sim.Create(path, sim.WithSeed(7))
	if err != nil {
		return "", 0, err
	}
	defer st.Close()
	const nChats = 50
	chats := make([]string, nChats)
	for i := range chats {
		c, err := st.EnsureChat(ctx, sim.ChatSpec{Participants: []string{"+1555100" + fmt.Sprintf("%04d", i)}})
		if err != nil {
			return "", 0, err
		}
		chats[i] = c.GUID
	}
	now := time.Now()
	const recent = 2000
	span := 5 * 365 * 24 * time.Hour
	dateOf := func(i int) time.Time {
		if i >= n-recent {
			// the newest rows: one every ~40 s over the last day
			return now.Add(-time.Duration(n-i) * 40 * time.Second)
		}
		old := n - recent
		return now.Add(-24*time.Hour - span + time.Duration(float64(span)*float64(i)/float64(old)))
	}
	const batch = 20_000
	msgs := make([]sim.Msg, 0, batch)
	for i := 0; i < n; i += batch {
		msgs = msgs[:0]
		for j := i; j < min(n, i+batch); j++ {
			msgs = append(msgs, sim.Msg{
				Chat:   chats[j%nChats],
				FromMe: j%3 == 0, Sent: j%3 == 0, Delivered: j%3 == 0, Read: true,
				Text: "benchmark message number " + strconv.Itoa(j) + ", with a little text in it",
				Date: dateOf(j),
			})
		}
		if _, err := st.InsertBatch(ctx, msgs); err != nil {
			return "", 0, err
		}
	}
	if err := st.Checkpoint(ctx, sim.CheckpointTruncate); err != nil {
		return "", 0, err
	}
	return path, time.Since(start), nil
}
