package icloud_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"howett.net/plist"

	"github.com/line-agent/line-agent/icloud"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

func TestAccountHealth(t *testing.T) {
	ctx := context.Background()
	sa := icloud.NewSimAccount()
	h := icloud.NewHealth(sa, nil)
	if c := h.Account(ctx); c.Name != "icloud" || c.Status != linev1.HealthStatus_HEALTH_STATUS_OK || c.Since == nil {
		t.Fatalf("healthy: %v", c)
	}
	sa.Set(icloud.AccountState{SignedIn: icloud.Yes, MessagesInICloud: icloud.No})
	if c := h.Account(ctx); c.Status != linev1.HealthStatus_HEALTH_STATUS_DOWN || !strings.Contains(c.Detail, "Messages in iCloud is off") {
		t.Fatalf("messages off: %v", c)
	}
	sa.Set(icloud.AccountState{SignedIn: icloud.No})
	if c := h.Account(ctx); c.Status != linev1.HealthStatus_HEALTH_STATUS_DOWN || !strings.Contains(c.Detail, "not signed in") {
		t.Fatalf("signed out: %v", c)
	}
	sa.Set(icloud.AccountState{})
	if c := h.Account(ctx); c.Status != linev1.HealthStatus_HEALTH_STATUS_DEGRADED || !strings.HasPrefix(c.Detail, "unknown") {
		t.Fatalf("unknown: %v", c)
	}
}

func TestMacAccount(t *testing.T) {
	ctx := context.Background()
	home := t.TempDir()
	h := icloud.NewHealth(icloud.MacAccount{Home: home}, nil)
	if c := h.Account(ctx); c.Status != linev1.HealthStatus_HEALTH_STATUS_DOWN {
		t.Fatalf("no accounts file: %v", c)
	}
	prefs := filepath.Join(home, "Library", "Preferences")
	if err := os.MkdirAll(prefs, 0o755); err != nil {
		t.Fatal(err)
	}
	raw, err := plist.Marshal(map[string]any{"Accounts": []any{map[string]any{"AccountID": "someone@example.com", "LoggedIn": true}}}, plist.BinaryFormat)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(prefs, "MobileMeAccounts.plist"), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	c := h.Account(ctx)
	if c.Status != linev1.HealthStatus_HEALTH_STATUS_DEGRADED || !strings.Contains(c.Detail, "Messages in iCloud cannot be read") || strings.Contains(c.Detail, "example.com") {
		t.Fatalf("signed in, messages unknown: %v", c)
	}
	on := icloud.MacAccount{Home: home, MessagesInICloud: func(context.Context) (icloud.Known, error) { return icloud.Yes, nil }}
	if c := icloud.NewHealth(on, nil).Account(ctx); c.Status != linev1.HealthStatus_HEALTH_STATUS_OK {
		t.Fatalf("with the helper's answer: %v", c)
	}
}
