// Package chatdb reads Apple's Messages database (~/Library/Messages/chat.db)
// and turns its changes into line.v1 events. It is the single inbound path of
// the agent: real Messages and the simulated one (package sim) both end in
// rows in a chat.db file, and the same code reads them.
//
// The pieces, by concern:
//
//   - Reader (reader.go): a strictly read-only connection pool that adapts
//     its queries to the columns this macOS version has and reopens itself
//     when the database or its WAL is replaced underneath it.
//   - Change detection (scan.go, window.go, cursor.go): a ROWID high-water
//     mark for new rows plus a window of recent rows whose update columns are
//     fingerprinted, so in-place updates (sent, delivered, read, edited,
//     unsent, failed) become events too. A step reads nothing when PRAGMA
//     data_version says no commit happened since the last one, and reads the
//     window at most once per WindowInterval during a burst. The position is
//     an opaque, serialisable cursor that the agent stores with the events.
//   - Rows to events (events.go): stable keys "<guid>/<kind>/<version>" so a
//     re-read never produces a different event for the same change.
//   - Tailer (tailer.go, watcher.go, health.go): an fsnotify watcher on the
//     Messages folder with a PRAGMA data_version backstop, feeding bounded
//     batches to a Sink and advancing only when the Sink committed them.
//
// The package never writes to chat.db.
package chatdb
