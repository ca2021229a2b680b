package channel

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"strings"
)

// idLen is the length of a conn id: 24 bytes (a 3-byte node tag and 21 random
// bytes) in URL-safe Base64.
const idLen = 32

// NodeTag names the node that owns a conn id: the first bytes of the
// SHA-256 of its node name. Any node can tell a conn's owner from its id.
type NodeTag [3]byte

// TagOf returns the tag of a node name.
func TagOf(node string) NodeTag {
	sum := sha256.Sum256([]byte(node))
	return NodeTag(sum[:3])
}

// newID returns an opaque, unguessable conn id made of URL- and topic-safe
// characters (spec §2 "conn id"): the owner's tag and 21 random bytes.
// crypto/rand never fails on Linux.
func newID(tag NodeTag) string {
	var b [24]byte
	copy(b[:3], tag[:])
	_, _ = rand.Read(b[3:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// Owner returns the tag of the node that made a valid conn id.
func Owner(id string) NodeTag {
	b, err := base64.RawURLEncoding.DecodeString(id)
	if err != nil || len(b) < 3 {
		return NodeTag{}
	}
	return NodeTag(b[:3])
}

// ValidID reports whether s is shaped like a conn id this gateway makes:
// anything else is "malformed" (result code UNKNOWN) rather than "not alive".
func ValidID(s string) bool {
	if len(s) != idLen {
		return false
	}
	return strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_')
	}) < 0
}

// msgIDs makes 128-bit message ids: a random prefix per channel and a
// counter, so ids are unique without a syscall per message.
type msgIDs struct {
	prefix [8]byte
	n      uint64 // guarded by Channel.mu
}

func newMsgIDs() msgIDs {
	var m msgIDs
	_, _ = rand.Read(m.prefix[:])
	return m
}

// next returns 32 upper-case hex characters.
func (m *msgIDs) next() string {
	m.n++
	var b [16]byte
	copy(b[:8], m.prefix[:])
	binary.BigEndian.PutUint64(b[8:], m.n)
	const digits = "0123456789ABCDEF"
	var s [32]byte
	for i, x := range b {
		s[2*i], s[2*i+1] = digits[x>>4], digits[x&15]
	}
	return string(s[:]) // one allocation per delivery, not two
}
