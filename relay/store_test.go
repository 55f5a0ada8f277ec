package relay

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/line-agent/line-agent/pkg/groupcommit"
)

// TestStoreWritesAfterCloseFail: the writes queued before close are
// committed; one after close fails with groupcommit.ErrClosed and writes
// nothing.
func TestStoreWritesAfterCloseFail(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := openStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if err := st.addProjectToken(ctx, "before", nil, now); err != nil {
		t.Fatal(err)
	}
	if err := st.close(); err != nil {
		t.Fatal(err)
	}
	if err := st.addProjectToken(ctx, "after", nil, now); !errors.Is(err, groupcommit.ErrClosed) {
		t.Fatalf("write after close: %v; want groupcommit.ErrClosed", err)
	}
	st, err = openStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	for hash, want := range map[string]bool{"before": true, "after": false} {
		if found, _, err := st.projectToken(ctx, hash); err != nil || found != want {
			t.Fatalf("token %q found %v, %v; want %v", hash, found, err, want)
		}
	}
}
