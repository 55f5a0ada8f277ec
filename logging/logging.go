// Package logging builds the agent's log/slog logger the way an operator
// reads it: text lines on a terminal, JSON lines where a program reads
// them (under launchd the log is a file that log shippers follow), and the
// id of the command a line is about under one attribute name, "command",
// taken from the context, so that the dispatcher, the drivers and the
// confirmer need not each remember to add it. It depends on the standard
// library only, so every package that logs may import it.
package logging

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
)

// CommandKey is the attribute naming the command a log line is about; the
// only name used for it, so `grep command=ID` (or a JSON query on
// .command) finds every line of one command.
const CommandKey = "command"

// Format is how log lines are written (LINE_AGENT_LOG_FORMAT).
type Format string

// The formats. Auto decides by where the lines go (Format.Resolve).
const (
	Auto Format = "auto"
	Text Format = "text"
	JSON Format = "json"
)

// ErrFormat and ErrLevel are a log format or level the agent does not
// know: a typo in the plist or the environment is refused at start, with
// the valid values, rather than silently logging something else.
var (
	ErrFormat = errors.New("unknown log format")
	ErrLevel  = errors.New("unknown log level")
)

// ParseFormat reads a format, in any case; empty is Auto.
func ParseFormat(s string) (Format, error) {
	switch f := Format(strings.ToLower(strings.TrimSpace(s))); f {
	case "":
		return Auto, nil
	case Auto, Text, JSON:
		return f, nil
	}
	return "", fmt.Errorf("%w %q: want text, json or auto", ErrFormat, s)
}

// ParseLevel reads a level as slog spells it (debug, info, warn, error, in
// any case, with an optional offset such as info+2); empty is info.
func ParseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if strings.TrimSpace(s) == "" {
		return slog.LevelInfo, nil
	}
	if err := l.UnmarshalText([]byte(strings.TrimSpace(s))); err != nil {
		return 0, fmt.Errorf("%w %q: want debug, info, warn or error", ErrLevel, s)
	}
	return l, nil
}

// Output is what Auto decides by.
type Output struct {
	// Terminal is an output a person watches (IsTerminal).
	Terminal bool
	// Launchd is a process launchd started as the agent's LaunchAgent
	// (its XPC_SERVICE_NAME is the job's label): its output is a file
	// even when a terminal device was named for it.
	Launchd bool
}

// Resolve is the format lines are written in: Text or JSON as given; Auto
// is Text on a terminal outside launchd and JSON everywhere else (a file,
// a pipe, launchd's StandardErrorPath), where a program reads the lines.
func (f Format) Resolve(out Output) Format {
	if f != Auto {
		return f
	}
	if out.Terminal && !out.Launchd {
		return Text
	}
	return JSON
}

// IsTerminal reports whether w is a character device (a terminal), found
// with a stat, without cgo. /dev/null is one too: nobody reads what goes
// there, so its format does not matter.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// Options configure New.
type Options struct {
	// Format is Text or JSON (resolve Auto first: Format.Resolve).
	Format Format
	// Level is the least level written.
	Level slog.Level
}

// New returns a logger writing to w in o's format, adding the command id
// of WithCommand contexts to the lines logged with them (InfoContext...).
func New(w io.Writer, o Options) *slog.Logger {
	ho := &slog.HandlerOptions{Level: o.Level}
	var h slog.Handler
	if o.Format == JSON {
		h = slog.NewJSONHandler(w, ho)
	} else {
		h = slog.NewTextHandler(w, ho)
	}
	return slog.New(Handler(h))
}

type commandKey struct{}

// WithCommand returns a context whose log lines (logged through a Handler
// with the ...Context methods) carry id as the "command" attribute. The
// dispatcher sets it before a command reaches the driver.
func WithCommand(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, commandKey{}, id)
}

// Handler wraps h so that a record logged with a WithCommand context gets
// the "command" attribute, unless the line or the logger (With) names one
// already: one attribute, never two spellings of it.
func Handler(h slog.Handler) slog.Handler { return commandHandler{inner: h} }

type commandHandler struct {
	inner slog.Handler
	// named is set when the logger's own attributes carry a command.
	named bool
}

func (h commandHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l)
}

func (h commandHandler) Handle(ctx context.Context, r slog.Record) error {
	if id, ok := ctx.Value(commandKey{}).(string); ok && id != "" && !h.named && !hasCommand(r) {
		r = r.Clone()
		r.AddAttrs(slog.String(CommandKey, id))
	}
	return h.inner.Handle(ctx, r)
}

func (h commandHandler) WithAttrs(as []slog.Attr) slog.Handler {
	named := h.named
	for _, a := range as {
		named = named || a.Key == CommandKey
	}
	return commandHandler{inner: h.inner.WithAttrs(as), named: named}
}

func (h commandHandler) WithGroup(name string) slog.Handler {
	return commandHandler{inner: h.inner.WithGroup(name), named: h.named}
}

func hasCommand(r slog.Record) bool {
	found := false
	r.Attrs(func(a slog.Attr) bool {
		found = a.Key == CommandKey
		return !found
	})
	return found
}
