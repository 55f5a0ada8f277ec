// Package replicas is the fault suite of several line-relay replicas on
// one PostgreSQL database (docs/scaling.md): real line-relay processes on
// a throwaway cluster (pkg/pgtest) and a real line-agent on the simulated
// Messages, dialing the replicas in order (--relay A,B).
//
//	go test ./e2e/replicas/                  # the short run make test does
//	LINE_CHAOS=full go test ./e2e/replicas/  # more commands, messages and kills
//
// Each test submits commands through the operator API of a replica that
// may not hold the agent's stream and writes incoming rows into the
// simulated chat.db, injects its fault (a replica killed with commands in
// flight, PostgreSQL restarted) and then counts: every command ends once
// (its text is in chat.db once, and it succeeded exactly when chat.db has
// it), every incoming message is stored once, in order, with the same
// sequence on every replica, and an operator API answer during an outage
// is never a success.
package replicas
