// Package spectrum is the end-to-end test with the platform's own SDK: an
// unmodified spectrum-ts 12.8.0 app (scenario.mjs, pinned in package.json
// and package-lock.json; node_modules comes from `npm ci` and is never
// committed) drives real line-relay and line-agent processes with the
// simulated Messages through photon.imessage.v1. The Go test starts the
// processes, runs the app, does what the app cannot (restart the relay
// under it) and checks what the app was told against the relay's events.
package spectrum
