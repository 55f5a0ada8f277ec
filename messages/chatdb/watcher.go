package chatdb

import (
	"context"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// watcher turns file events in the Messages folder into wake-ups. It watches
// the FOLDER, not the files: chat.db-wal is deleted and re-created by
// Messages (new inode), and a watch on the old file would go deaf. Events
// for other files in the folder are ignored.
type watcher struct {
	dir   string
	names map[string]bool // base names that matter: chat.db, chat.db-wal
	// wake is called for every relevant event; files reports a create,
	// remove or rename (the Reader should check file identities).
	wake func(files bool)
	// state is called when the watch is armed (err nil) or broken.
	state func(armed bool, err error)
	log   *slog.Logger
}

func newWatcher(dbPath string, wake func(bool), state func(bool, error), log *slog.Logger) *watcher {
	base := filepath.Base(dbPath)
	return &watcher{
		dir:   filepath.Dir(dbPath),
		names: map[string]bool{base: true, base + "-wal": true},
		wake:  wake, state: state, log: log,
	}
}

// run watches until ctx is done, re-arming whenever the watch breaks (the
// folder removed or renamed, an fsnotify error, a queue overflow).
func (w *watcher) run(ctx context.Context) {
	delay := 10 * time.Millisecond
	for ctx.Err() == nil {
		err := w.watchOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		w.state(false, err)
		w.log.Warn("chatdb: watcher broke, re-arming", "dir", w.dir, "err", err)
		w.wake(true) // something may have changed while deaf
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(delay*2, time.Second)
	}
}

type watchBroken string

func (e watchBroken) Error() string { return string(e) }

// watchOnce arms one fsnotify watch and serves it until it breaks.
func (w *watcher) watchOnce(ctx context.Context) error {
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	defer fw.Close()
	if err := fw.Add(w.dir); err != nil {
		return err
	}
	w.state(true, nil)
	w.wake(true) // catch up on anything that happened before the watch
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-fw.Events:
			if !ok {
				return watchBroken("fsnotify closed its event channel")
			}
			if filepath.Clean(ev.Name) == filepath.Clean(w.dir) && ev.Has(fsnotify.Remove|fsnotify.Rename) {
				return watchBroken("the Messages folder was removed or renamed")
			}
			if !w.names[filepath.Base(ev.Name)] {
				continue
			}
			w.wake(ev.Has(fsnotify.Create | fsnotify.Remove | fsnotify.Rename))
		case err, ok := <-fw.Errors:
			if !ok {
				return watchBroken("fsnotify closed its error channel")
			}
			return err
		}
	}
}
