package messages

import (
	"context"
	"slices"

	"github.com/line-agent/line-agent/command"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// Compose joins drivers into one: each command goes to the first driver that
// offers everything it needs right now. On a Mac that is the private-API
// helper's driver first (it does everything while it is connected) and the
// AppleScript driver second (plain text and files, even without the helper),
// so a helper that goes away degrades sends instead of failing them.
//
// The result is Resumable: a command interrupted by a restart goes to the
// first driver that is (the bridge's, for a background upload), so no
// wrapper has to expose a Resume that composing hid.
func Compose(drivers ...Driver) Driver { return composite(drivers) }

type composite []Driver

var _ Resumable = composite(nil)

func (c composite) Capabilities() []linev1.Capability {
	var out []linev1.Capability
	for _, d := range c {
		for _, cp := range d.Capabilities() {
			if !slices.Contains(out, cp) {
				out = append(out, cp)
			}
		}
	}
	slices.Sort(out)
	return out
}

// Offered is every driver's offer with its helper connected.
func (c composite) Offered() []linev1.Capability {
	var out []linev1.Capability
	for _, d := range c {
		for _, cp := range Offered(d) {
			if !slices.Contains(out, cp) {
				out = append(out, cp)
			}
		}
	}
	slices.Sort(out)
	return out
}

func (c composite) Execute(ctx context.Context, cmd *linev1.Command, report func(*linev1.CommandUpdate)) (*linev1.Snapshot, error) {
	need := command.Needs(cmd)
	var missing linev1.Capability
	for _, d := range c {
		caps := d.Capabilities()
		ok := true
		for _, n := range need {
			if !slices.Contains(caps, n) {
				ok, missing = false, n
				break
			}
		}
		if ok {
			return d.Execute(ctx, cmd, report)
		}
	}
	// None offers it now: the one that does with its helper connected
	// answers (HELPER_UNAVAILABLE while the helper is away).
	for _, d := range c {
		if offers(Offered(d), need) {
			return d.Execute(ctx, cmd, report)
		}
	}
	if missing == linev1.Capability_CAPABILITY_UNSPECIFIED {
		missing = need[0]
	}
	return nil, command.Unsupported(missing, "no driver on this Mac offers it now (the private-API helper may not be connected)")
}

// Resume continues cmd in the first driver that can resume commands; with
// none it is IN_DOUBT, as the agent settles an interrupted command it
// cannot resume.
func (c composite) Resume(ctx context.Context, cmd *linev1.Command, checkpoint []byte, report func(*linev1.CommandUpdate)) (*linev1.Snapshot, error) {
	for _, d := range c {
		if r, ok := d.(Resumable); ok {
			return r.Resume(ctx, cmd, checkpoint, report)
		}
	}
	return nil, command.Errorf(linev1.ErrorCode_ERROR_CODE_IN_DOUBT, "no driver on this Mac can resume %s", command.KindName(cmd))
}

// offers reports whether caps holds every capability in need.
func offers(caps, need []linev1.Capability) bool {
	for _, n := range need {
		if !slices.Contains(caps, n) {
			return false
		}
	}
	return true
}
