package icloud

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"
	"howett.net/plist"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// Known is a fact that may be unknown.
type Known int

const (
	Unknown Known = iota
	Yes
	No
)

func (k Known) String() string {
	switch k {
	case Yes:
		return "yes"
	case No:
		return "no"
	}
	return "unknown"
}

// AccountState is what the Mac says about its iCloud account. It never holds
// the Apple Account's address.
type AccountState struct {
	// SignedIn: an Apple Account is signed in to iCloud.
	SignedIn Known
	// MessagesInICloud: "Messages in iCloud" is on, which backgrounds need.
	MessagesInICloud Known
	// Detail explains an Unknown, in words an operator can act on.
	Detail string
}

// AccountSource reads the account state.
type AccountSource interface {
	AccountState(ctx context.Context) (AccountState, error)
}

// HealthName is the health component's name.
const HealthName = "icloud"

// Health turns an AccountSource into the "icloud" health component. It
// remembers since when the status has been what it is.
type Health struct {
	src AccountSource
	now func() time.Time

	mu     sync.Mutex
	last   linev1.HealthStatus
	since  time.Time
	detail string
}

// NewHealth returns a Health reading src; now nil means time.Now.
func NewHealth(src AccountSource, now func() time.Time) *Health {
	if now == nil {
		now = time.Now
	}
	return &Health{src: src, now: now}
}

// Account returns the "icloud" component: OK when signed in with Messages in
// iCloud on, DOWN when either is known to be off (backgrounds cannot be
// distributed), DEGRADED with the reason when the state cannot be told.
func (h *Health) Account(ctx context.Context) *linev1.HealthComponent {
	st, err := h.src.AccountState(ctx)
	status, detail := judge(st, err)
	h.mu.Lock()
	defer h.mu.Unlock()
	if status != h.last || h.since.IsZero() {
		h.last, h.since = status, h.now()
	}
	return &linev1.HealthComponent{Name: HealthName, Status: status, Detail: detail, Since: timestamppb.New(h.since)}
}

func judge(st AccountState, err error) (linev1.HealthStatus, string) {
	if err != nil {
		return linev1.HealthStatus_HEALTH_STATUS_DEGRADED, "unknown: cannot read the iCloud account: " + err.Error()
	}
	switch {
	case st.SignedIn == No:
		return linev1.HealthStatus_HEALTH_STATUS_DOWN, "not signed in to iCloud: chat backgrounds cannot be distributed"
	case st.MessagesInICloud == No:
		return linev1.HealthStatus_HEALTH_STATUS_DOWN, "Messages in iCloud is off: chat backgrounds cannot be distributed"
	case st.SignedIn == Yes && st.MessagesInICloud == Yes:
		return linev1.HealthStatus_HEALTH_STATUS_OK, "signed in, Messages in iCloud on"
	}
	d := fmt.Sprintf("unknown: signed in %s, Messages in iCloud %s", st.SignedIn, st.MessagesInICloud)
	if st.Detail != "" {
		d += ": " + st.Detail
	}
	return linev1.HealthStatus_HEALTH_STATUS_DEGRADED, d
}

// SimAccount is a settable account for the simulated Mac. The zero value is
// unknown; use NewSimAccount for a healthy one.
type SimAccount struct {
	mu sync.Mutex
	st AccountState
}

// NewSimAccount returns a signed-in account with Messages in iCloud on.
func NewSimAccount() *SimAccount {
	return &SimAccount{st: AccountState{SignedIn: Yes, MessagesInICloud: Yes}}
}

// Set replaces the state.
func (a *SimAccount) Set(st AccountState) {
	a.mu.Lock()
	a.st = st
	a.mu.Unlock()
}

// AccountState implements AccountSource.
func (a *SimAccount) AccountState(context.Context) (AccountState, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.st, nil
}

// MacAccount reads what a Mac shows of its iCloud account without private
// APIs: ~/Library/Preferences/MobileMeAccounts.plist lists the signed-in
// Apple Account (Accounts[].LoggedIn). Whether "Messages in iCloud" is on is
// kept by Messages/IMCore (the CloudKit sync state) and is not readable
// reliably from a file: MacAccount reports it Unknown, so the component is
// DEGRADED with that explanation, until the helper can report it (a
// line-agent helper extension reading IMCloudKitSyncState). The file is read
// as cfprefsd last flushed it, which can lag a sign-out by seconds.
//
// Neither check has been proven on a real Mac yet (docs/backgrounds.md).
type MacAccount struct {
	// Home is the user's home directory; empty means os.UserHomeDir.
	Home string
	// MessagesInICloud, when set, tells the Messages in iCloud state (from
	// the helper); nil leaves it Unknown.
	MessagesInICloud func(ctx context.Context) (Known, error)
}

// AccountState implements AccountSource.
func (m MacAccount) AccountState(ctx context.Context) (AccountState, error) {
	home := m.Home
	if home == "" {
		h, err := os.UserHomeDir()
		if err != nil {
			return AccountState{}, err
		}
		home = h
	}
	st := AccountState{}
	raw, err := os.ReadFile(filepath.Join(home, "Library", "Preferences", "MobileMeAccounts.plist"))
	switch {
	case errors.Is(err, os.ErrNotExist):
		st.SignedIn = No
	case err != nil:
		st.Detail = "cannot read MobileMeAccounts.plist: " + err.Error()
	default:
		var p struct {
			Accounts []struct {
				LoggedIn bool `plist:"LoggedIn"`
			} `plist:"Accounts"`
		}
		if _, err := plist.Unmarshal(raw, &p); err != nil {
			st.Detail = "cannot decode MobileMeAccounts.plist"
			break
		}
		st.SignedIn = No
		for _, a := range p.Accounts {
			if a.LoggedIn {
				st.SignedIn = Yes
			}
		}
	}
	if m.MessagesInICloud != nil {
		k, err := m.MessagesInICloud(ctx)
		if err != nil {
			st.Detail = joinDetail(st.Detail, "Messages in iCloud: "+err.Error())
		}
		st.MessagesInICloud = k
	} else if st.SignedIn != No {
		st.Detail = joinDetail(st.Detail, "Messages in iCloud cannot be read without the helper; check Messages > Settings > iMessage > Enable Messages in iCloud")
	}
	return st, nil
}

func joinDetail(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}
