// Package chaos is the fault-injection suite: real line-relay and
// line-agent processes on loopback with the simulated Messages, one fault at
// a time, and a table of what came out (docs/reliability.md).
//
//	make chaos                       # the full figures (LINE_CHAOS=full), prints the table
//	go test ./chaos/                 # a short run of each fault, as make test does
//
// Each test drives commands through the operator API (or writes incoming
// rows into the simulated chat.db, as Messages would) while it injects its
// fault, then counts what chat.db and the relay hold:
//
//   - lost: a command with no final result once the fault is over, or an
//     incoming row the relay never stored;
//   - duplicated: a command whose text is in chat.db more than once, or an
//     incoming row stored twice;
//   - false acknowledgements: a command reported succeeded that chat.db does
//     not show, or reported certainly-not-sent that chat.db does show;
//   - in-doubt: commands settled IN_DOUBT (honest, but an operator must
//     look).
//
// Lost, duplicated and false acknowledgements must be 0; a test fails
// otherwise.
package chaos
