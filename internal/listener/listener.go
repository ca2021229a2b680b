// Package listener accepts device connections over TCP, TLS, UDP and DTLS
// and hands them on, with the per-listener controls applied before any
// handler event: access rules, connection limits and rates, the PROXY
// protocol, TLS handshakes and throughput limits. It knows nothing of
// handlers, channels or brokers.
package listener

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pion/dtls/v3"
	"golang.org/x/time/rate"

	"github.com/exgate/exgate/internal/config"
)

// ErrClosed is returned by Serve after Close.
var ErrClosed = errors.New("listener closed")

// Kind is a listener's transport.
type Kind int

const (
	TCP Kind = iota
	SSL
	UDP
	DTLS
)

func (k Kind) String() string { return [...]string{"tcp", "ssl", "udp", "dtls"}[k] }

// ParseKind maps a config listener type to its Kind.
func ParseKind(s string) (Kind, error) {
	switch s {
	case "tcp":
		return TCP, nil
	case "ssl":
		return SSL, nil
	case "udp":
		return UDP, nil
	case "dtls":
		return DTLS, nil
	}
	return 0, fmt.Errorf("unknown listener type %q", s)
}

// Conn is an accepted device connection. Write sends bytes verbatim (one
// datagram for UDP and DTLS); Read returns what one socket read (one
// datagram) brought.
type Conn struct {
	net.Conn
	Kind Kind
	// Peer is the device's address: from the PROXY header when the listener
	// uses the PROXY protocol, else the socket's remote address.
	Peer net.Addr
	// PeerCert is the device's certificate, when it presented one (SSL, DTLS).
	PeerCert *x509.Certificate

	slot  *atomic.Int64 // the listener's Stats.Current
	freed atomic.Bool
}

// Close closes the connection and frees its max_connections slot at once:
// a device is counted while its socket is open, not while the goroutine
// that read it is still winding down, so a new device may take the slot
// as soon as the handler hears that the old one closed.
func (c *Conn) Close() error {
	err := c.Conn.Close()
	c.free()
	return err
}

func (c *Conn) free() {
	if c.slot != nil && c.freed.CompareAndSwap(false, true) {
		c.slot.Add(-1)
	}
}

// SyscallConn returns the socket of a plain TCP connection (no TLS, PROXY
// header or rate limit between it and the device), which may then be read
// and written directly; for any other connection it fails.
func (c *Conn) SyscallConn() (syscall.RawConn, error) {
	if tc, ok := c.Conn.(*net.TCPConn); ok {
		return tc.SyscallConn()
	}
	return nil, errors.ErrUnsupported
}

// Stats are a listener's counters; safe for concurrent use.
type Stats struct {
	Current          atomic.Int64 // connections (UDP: peers) being served now
	Accepted         atomic.Int64
	RefusedLimit     atomic.Int64 // over max_connections
	RefusedRate      atomic.Int64 // over max_conn_rate
	RefusedACL       atomic.Int64 // denied by access_rules
	RefusedOverload  atomic.Int64 // refused while Options.Overloaded said so
	HandshakeFailed  atomic.Int64 // TLS/DTLS handshake or PROXY header failed
	DatagramsDropped atomic.Int64 // UDP: over a rate limit, denied or queue full
	Throttled        atomic.Int64 // reads slowed down by a rate limit
}

// Options configure a Listener. The zero value of each limit means none.
type Options struct {
	Name           string
	Kind           Kind
	Bind           string
	MaxConnections int
	MaxConnRate    int // per second
	AccessRules    []config.AccessRule
	ProxyProtocol  bool
	ProxyTimeout   time.Duration // default 3s
	TCP            config.TCPOptions
	UDP            config.UDPOptions
	TLS            *tls.Config         // SSL
	DTLS           []dtls.ServerOption // DTLS: DTLSServerOptions
	// HandshakeTimeout bounds a TLS or DTLS handshake. Default 15s.
	HandshakeTimeout time.Duration
	BytesRate        config.Rate // per connection
	MessagesRate     config.Rate // per connection
	ListenerBytes    config.Rate // all connections together
	// Overloaded, if set, is asked on every accept; while it reports true
	// new connections (UDP: new peers) are refused at once, before they
	// cost anything: shedding at the door keeps the process inside its
	// memory when closed devices pile up faster than the handler hears of
	// them.
	Overloaded func() bool
	Logger     *slog.Logger
}

// Listener is one named device listener of any kind.
type Listener struct {
	Stats Stats

	opts Options
	log  *slog.Logger
	ln   net.Listener // TCP, SSL, DTLS
	udp  *udpListener // UDP
	// ctl holds the controls a reload may change; read on every accept.
	ctl    atomic.Pointer[controls]
	wg     sync.WaitGroup
	closed atomic.Bool
	// ctx ends with Close: it aborts handshakes and PROXY header reads.
	ctx    context.Context
	cancel context.CancelFunc
}

// Listen binds the listener; it does not accept until Serve.
func Listen(o Options) (*Listener, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.ProxyTimeout == 0 {
		o.ProxyTimeout = 3 * time.Second
	}
	if o.HandshakeTimeout == 0 {
		o.HandshakeTimeout = 15 * time.Second
	}
	l := &Listener{opts: o, log: o.Logger.With("listener", fullName(o))}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.ctl.Store(newControls(o))
	var err error
	switch o.Kind {
	case TCP, SSL:
		l.ln, err = listenTCP(o.Bind, o.TCP)
	case UDP:
		l.udp, err = listenUDP(l, o.Bind)
	case DTLS:
		l.ln, err = l.listenDTLS()
	}
	if err != nil {
		l.cancel()
		return nil, fmt.Errorf("listener %s: %w", fullName(o), err)
	}
	return l, nil
}

func fullName(o Options) string { return o.Kind.String() + ":" + o.Name }

// Name is "type:name".
func (l *Listener) Name() string { return fullName(l.opts) }

// Kind is the listener's transport.
func (l *Listener) Kind() Kind { return l.opts.Kind }

// Addr is the bound address.
func (l *Listener) Addr() net.Addr {
	if l.udp != nil {
		return l.udp.pc.LocalAddr()
	}
	return l.ln.Addr()
}

// Serve accepts connections. For each, in a goroutine of its own, it
// prepares the connection (PROXY header, handshake) and calls start, which
// owns the Conn and returns the function that serves it until it ends; that
// runs on a fresh goroutine. A device's goroutine lives as long as the
// device, mostly parked, so it should not keep the stack a handshake grew.
// start returns nil when the connection needs no goroutine (a poller reads
// it): its max_connections slot is then freed by Conn.Close alone.
// Serve returns ErrClosed once Close was called.
func (l *Listener) Serve(start func(*Conn) (run func())) error {
	// Serve counts in wg itself: it starts connections' goroutines (wg.Go)
	// from its own, which must not add to a wg at zero while Wait runs.
	l.wg.Add(1)
	defer l.wg.Done()
	if l.udp != nil {
		return l.udp.serve(start)
	}
	var backoff time.Duration
	for {
		conn, err := l.ln.Accept()
		if err != nil {
			if l.closed.Load() || errors.Is(err, net.ErrClosed) {
				return ErrClosed
			}
			// EMFILE and friends: back off 5 ms → 1 s, as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			l.log.Warn("accept failed; retrying", "error", err, "backoff", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		if l.opts.Kind == DTLS {
			// admitted already, before the handshake (OnConnectionAttempt)
		} else if !l.opts.ProxyProtocol && !l.admit(conn.RemoteAddr()) {
			_ = conn.Close()
			continue
		}
		l.Stats.Current.Add(1)
		if !l.waitsForDevice() {
			// Prepared and started on this goroutine, saving one (and its
			// stack growth) per accept.
			l.begin(conn, start)
			continue
		}
		l.wg.Go(func() { l.begin(conn, start) })
	}
}

// waitsForDevice reports whether preparing a connection waits for the
// device (a PROXY header, a handshake); plain TCP does not.
func (l *Listener) waitsForDevice() bool { return l.opts.Kind != TCP || l.opts.ProxyProtocol }

// begin prepares an accepted connection and starts it.
func (l *Listener) begin(conn net.Conn, start func(*Conn) (run func())) {
	c, err := l.prepare(conn)
	if err != nil {
		l.Stats.Current.Add(-1)
		_ = conn.Close()
		if err != errRefused {
			l.Stats.HandshakeFailed.Add(1)
			l.log.Debug("connection refused before it started", "peer", conn.RemoteAddr().String(), "error", err)
		}
		return
	}
	l.Stats.Accepted.Add(1)
	c.slot = &l.Stats.Current
	if run := start(c); run != nil {
		l.wg.Go(func() {
			defer c.free()
			run()
		})
	}
}

var errRefused = errors.New("refused")

// controls are the limits a reload may change without rebinding.
type controls struct {
	maxConns     int
	access       []config.AccessRule
	connRate     *rate.Limiter
	shared       *rate.Limiter // listener_bytes_rate
	bytesRate    config.Rate   // per connection
	messagesRate config.Rate
}

func newControls(o Options) *controls {
	c := &controls{maxConns: o.MaxConnections, access: o.AccessRules, bytesRate: o.BytesRate, messagesRate: o.MessagesRate,
		shared: bytesLimiter(o.ListenerBytes, minBurst(o.Kind))}
	if o.MaxConnRate > 0 {
		c.connRate = rate.NewLimiter(rate.Limit(o.MaxConnRate), o.MaxConnRate)
	}
	return c
}

// Update replaces the listener's controls (connection limits, access
// rules, rates) without rebinding: new connections get the new ones,
// connections being served keep theirs.
func (l *Listener) Update(o Options) { l.ctl.Store(newControls(o)) }

// admit applies access rules, overload, max_connections and max_conn_rate to a new
// connection (or UDP peer) from addr, counting refusals by cause.
func (l *Listener) admit(addr net.Addr) bool {
	c := l.ctl.Load()
	if !allowed(c.access, addr) {
		l.Stats.RefusedACL.Add(1)
		return false
	}
	if o := l.opts.Overloaded; o != nil && o() {
		l.Stats.RefusedOverload.Add(1)
		return false
	}
	if m := c.maxConns; m > 0 && l.Stats.Current.Load() >= int64(m) {
		l.Stats.RefusedLimit.Add(1)
		return false
	}
	if c.connRate != nil && !c.connRate.Allow() {
		l.Stats.RefusedRate.Add(1)
		return false
	}
	return true
}

// allowed applies ordered access rules: the first match wins, no match allows.
func allowed(rules []config.AccessRule, addr net.Addr) bool {
	if len(rules) == 0 {
		return true
	}
	ip := addrIP(addr)
	for _, r := range rules {
		if r.All || (ip.IsValid() && r.Prefix.Contains(ip)) {
			return r.Allow
		}
	}
	return true
}

func addrIP(a net.Addr) netip.Addr {
	var ip netip.Addr
	switch a := a.(type) {
	case *net.TCPAddr:
		ip, _ = netip.AddrFromSlice(a.IP)
	case *net.UDPAddr:
		ip, _ = netip.AddrFromSlice(a.IP)
	default:
		if ap, err := netip.ParseAddrPort(a.String()); err == nil {
			ip = ap.Addr()
		}
	}
	return ip.Unmap()
}

// Close stops accepting; connections being served are not touched, except
// UDP peers, which cannot outlive their socket.
func (l *Listener) Close() error {
	if !l.closed.CompareAndSwap(false, true) {
		return nil
	}
	l.cancel()
	if l.udp != nil {
		return l.udp.close()
	}
	return l.ln.Close()
}

// Wait waits until every serve call returned.
func (l *Listener) Wait() {
	l.wg.Wait()
	if l.udp != nil {
		l.udp.wait()
	}
}

// minBurst is the smallest useful bucket for a transport: one read or one
// datagram must fit.
func minBurst(k Kind) int {
	if k == UDP || k == DTLS {
		return 1500
	}
	return 1
}

func bytesLimiter(r config.Rate, floor int) *rate.Limiter {
	if r.Amount == 0 {
		return nil
	}
	ps := r.PerSecond()
	return rate.NewLimiter(rate.Limit(ps), max(int(math.Ceil(ps)), floor))
}

func messagesLimiter(r config.Rate) *rate.Limiter {
	if r.Amount == 0 {
		return nil
	}
	ps := r.PerSecond()
	return rate.NewLimiter(rate.Limit(ps), max(int(math.Ceil(ps)), 1))
}
