package sim

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestChatDBFilesArePrivate: the simulated chat.db holds message text, so
// it and its -wal and -shm are 0600 whatever the umask lets SQLite choose,
// also after a WAL re-creation and a wholesale replacement.
func TestChatDBFilesArePrivate(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "chat.db")
	st, err := Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	insert := func() {
		t.Helper()
		chat, err := st.EnsureChat(ctx, ChatSpec{Participants: []string{"+15557654321"}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Insert(ctx, Msg{Chat: chat.GUID, FromMe: true, Text: "private"}); err != nil {
			t.Fatal(err)
		}
	}
	check := func(when string) {
		t.Helper()
		for _, p := range []string{path, path + "-wal", path + "-shm"} {
			fi, err := os.Stat(p)
			if err != nil {
				t.Errorf("%s: %s: %v", when, filepath.Base(p), err)
			} else if fi.Mode().Perm() != 0o600 {
				t.Errorf("%s: %s has mode %v, want 0600", when, filepath.Base(p), fi.Mode().Perm())
			}
		}
	}
	insert()
	check("created")
	if err := st.RecreateWAL(ctx); err != nil {
		t.Fatal(err)
	}
	insert()
	check("after RecreateWAL")
	if err := st.ReplaceDatabase(ctx, true, nil); err != nil {
		t.Fatal(err)
	}
	insert()
	check("after ReplaceDatabase")
}
