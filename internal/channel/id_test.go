package channel

import (
	"encoding/hex"
	"strings"
	"testing"
)

// Message ids are the channel's prefix and a counter, as 32 upper-case hex
// characters: unique within the channel, and across channels by prefix.
func TestMsgIDs(t *testing.T) {
	a, b := newMsgIDs(), newMsgIDs()
	seen := map[string]bool{}
	for i := 1; i <= 1000; i++ {
		id := a.next()
		raw, err := hex.DecodeString(id)
		if err != nil || len(raw) != 16 || id != strings.ToUpper(id) {
			t.Fatalf("id %q is not 32 upper-case hex characters", id)
		}
		if want := hex.EncodeToString(a.prefix[:]); !strings.EqualFold(id[:16], want) {
			t.Fatalf("id %q does not start with the channel's prefix %s", id, want)
		}
		if n := uint64(raw[8])<<56 | uint64(raw[9])<<48 | uint64(raw[10])<<40 | uint64(raw[11])<<32 |
			uint64(raw[12])<<24 | uint64(raw[13])<<16 | uint64(raw[14])<<8 | uint64(raw[15]); n != uint64(i) {
			t.Fatalf("id %q counts %d, want %d", id, n, i)
		}
		if seen[id] {
			t.Fatalf("id %q twice", id)
		}
		seen[id] = true
	}
	if a.prefix == b.prefix || a.next()[:16] == b.next()[:16] {
		t.Fatal("two channels share a prefix")
	}
}
