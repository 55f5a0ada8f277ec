// Package command is the one place the rules about a command's input live:
// how a line or handle is spelled so two spellings compare equal, and how
// large each field may be. The relay applies them when a command is
// submitted and the agent applies them again when one arrives (a relay other
// than line-relay may send it), so a bad command gets the same typed error at
// whichever door it reaches first.
package command
