// Package banned is the list of clients refused at authentication, EMQX's
// "banned" (by clientid, username or peer host), and the failure limiter
// that adds to it: a clientid or peer host that fails to authenticate
// too often within a window is banned for a while, so guessing passwords
// costs time and the hashing stays affordable.
package banned

import (
	"net"
	"sort"
	"sync"
	"time"
)

// Kinds of entry, as EMQX names them.
const (
	ClientID = "clientid"
	Username = "username"
	PeerHost = "peerhost"
)

// Entry is one ban. Zero Until never expires.
type Entry struct {
	As     string    `json:"as"`
	Who    string    `json:"who"`
	By     string    `json:"by"`
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
	Until  time.Time `json:"until,omitzero"`
}

// Limits configure the failure limiter; zero maxima turn it off.
type Limits struct {
	MaxFailures int // failures of one clientid within Window that ban it
	// MaxHostFailures bans a peer host; higher, since many devices may
	// share an address behind NAT.
	MaxHostFailures int
	Window          time.Duration // default 1m
	BanTime         time.Duration // default 5m
}

type key struct{ as, who string }

// List is the banned list and failure limiter. Safe for concurrent use.
type List struct {
	lim Limits

	mu       sync.Mutex
	entries  map[key]Entry
	failures map[key][]time.Time // recent failures, oldest first
}

// New returns an empty list.
func New(lim Limits) *List {
	if lim.Window <= 0 {
		lim.Window = time.Minute
	}
	if lim.BanTime <= 0 {
		lim.BanTime = 5 * time.Minute
	}
	return &List{lim: lim, entries: map[key]Entry{}, failures: map[key][]time.Time{}}
}

// Banned returns the ban that applies to a client, if any.
func (l *List) Banned(clientID, username string, peer net.Addr) (Entry, bool) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, k := range keys(clientID, username, peer) {
		if e, ok := l.entries[k]; ok {
			if e.Until.IsZero() || now.Before(e.Until) {
				return e, true
			}
			delete(l.entries, k)
		}
	}
	return Entry{}, false
}

// Failed counts a failed authentication against its clientid and its peer
// host; it reports the (first) ban it caused.
func (l *List) Failed(clientID string, peer net.Addr) (first Entry, banned bool) {
	if l.lim.MaxFailures <= 0 && l.lim.MaxHostFailures <= 0 {
		return Entry{}, false
	}
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.failures) > 100_000 { // a spray of distinct ids: forget, not grow
		clear(l.failures)
	}
	for _, k := range keys(clientID, "", peer) {
		limit := l.lim.MaxFailures
		if k.as == PeerHost {
			limit = l.lim.MaxHostFailures
		}
		if limit <= 0 {
			continue
		}
		ts := l.failures[k]
		for len(ts) > 0 && now.Sub(ts[0]) > l.lim.Window {
			ts = ts[1:]
		}
		ts = append(ts, now)
		if len(ts) < limit {
			l.failures[k] = ts
			continue
		}
		delete(l.failures, k)
		e := Entry{As: k.as, Who: k.who, By: "exgate", At: now, Until: now.Add(l.lim.BanTime),
			Reason: "too many failed authentications"}
		l.entries[k] = e
		if !banned {
			first, banned = e, true
		}
	}
	return first, banned
}

// Add bans a client (replacing a ban of the same one).
func (l *List) Add(e Entry) {
	if e.At.IsZero() {
		e.At = time.Now()
	}
	l.mu.Lock()
	l.entries[key{e.As, e.Who}] = e
	l.mu.Unlock()
}

// Delete lifts a ban; it reports whether there was one.
func (l *List) Delete(as, who string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := key{as, who}
	_, ok := l.entries[k]
	delete(l.entries, k)
	delete(l.failures, k)
	return ok
}

// All returns the bans in force, oldest first.
func (l *List) All() []Entry {
	now := time.Now()
	l.mu.Lock()
	out := make([]Entry, 0, len(l.entries))
	for k, e := range l.entries {
		if !e.Until.IsZero() && !now.Before(e.Until) {
			delete(l.entries, k)
			continue
		}
		out = append(out, e)
	}
	l.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].At.Before(out[j].At) })
	return out
}

// Len is the number of entries (some may have expired).
func (l *List) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.entries)
}

func keys(clientID, username string, peer net.Addr) []key {
	ks := make([]key, 0, 3)
	if clientID != "" {
		ks = append(ks, key{ClientID, clientID})
	}
	if username != "" {
		ks = append(ks, key{Username, username})
	}
	if h := host(peer); h != "" {
		ks = append(ks, key{PeerHost, h})
	}
	return ks
}

func host(a net.Addr) string {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.IP.String()
	case *net.UDPAddr:
		return a.IP.String()
	case nil:
		return ""
	}
	h, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return h
}
