// Package macprobe asks macOS's own programs what health and `line-agent
// doctor` need to know and the agent cannot see itself: whether Messages
// (or BlueBubbles Server) runs (ps), the state of System Integrity
// Protection (csrutil) and of the agent's LaunchAgent (launchctl). Every
// program's path is configured, so that off a Mac the probes run against
// fake programs; every run goes through pkg/toolrun (fixed argv, a
// minimal environment, a time limit past which its process group is
// killed).
package macprobe
