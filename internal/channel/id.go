package channel

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"strings"
)

// idLen is the length of a conn id: 24 random bytes in URL-safe Base64.
const idLen = 32

// newID returns an opaque, unguessable conn id made of URL- and topic-safe
// characters (spec §2 "conn id"). crypto/rand never fails on Linux.
func newID() string {
	var b [24]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
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
	return strings.ToUpper(hex.EncodeToString(b[:]))
}
