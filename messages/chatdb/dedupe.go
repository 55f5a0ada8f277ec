package chatdb

import linev1 "github.com/line-agent/line-agent/proto/line/v1"

// keySet remembers the keys of the last n committed events, so that a
// re-read after a database replacement (or any other re-scan) does not hand
// the same event to the Sink twice. It is a safety net in memory; the
// cursor is what makes restarts exact.
type keySet struct {
	n    int
	ring []string
	next int
	set  map[string]struct{}
}

func newKeySet(n int) *keySet {
	return &keySet{n: n, ring: make([]string, 0, min(n, 1024)), set: make(map[string]struct{}, min(n, 1024))}
}

func (k *keySet) has(key string) bool { _, ok := k.set[key]; return ok }

func (k *keySet) add(key string) {
	if k.n <= 0 || k.has(key) {
		return
	}
	if len(k.ring) < k.n {
		k.ring = append(k.ring, key)
	} else {
		delete(k.set, k.ring[k.next])
		k.ring[k.next] = key
		k.next = (k.next + 1) % k.n
	}
	k.set[key] = struct{}{}
}

// filter drops events whose key was committed before, and duplicates within
// the batch.
func (k *keySet) filter(evs []*linev1.Event) []*linev1.Event {
	seen := map[string]bool{}
	out := evs[:0:0]
	for _, e := range evs {
		if k.has(e.Key) || seen[e.Key] {
			continue
		}
		seen[e.Key] = true
		out = append(out, e)
	}
	return out
}
