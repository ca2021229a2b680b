package listener

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"time"

	"github.com/exgate/exgate/internal/config"
	"github.com/pion/dtls/v3"
	"github.com/pires/go-proxyproto"
	"golang.org/x/time/rate"
)

// listenTCP listens with the sockets' options that apply at accept: TCP
// keepalive (none unless tcp_options.keepalive sets it, where the standard
// library would set a 15 s one with four setsockopt calls per accept) and
// the accept backlog.
func listenTCP(addr string, o config.TCPOptions) (net.Listener, error) {
	ka, err := o.TCPKeepalive()
	if err != nil {
		return nil, err
	}
	lc := net.ListenConfig{KeepAlive: -1, KeepAliveConfig: ka}
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil || o.Backlog <= 0 {
		return ln, err
	}
	if err := setBacklog(ln.(*net.TCPListener), o.Backlog); err != nil {
		_ = ln.Close()
		return nil, err
	}
	return ln, nil
}

// prepare turns an accepted stream or DTLS connection into a Conn: the PROXY
// header, access rules on its address, socket options, the handshake and
// the throughput limits, in that order.
func (l *Listener) prepare(raw net.Conn) (*Conn, error) {
	o := &l.opts
	var conn net.Conn = raw
	c := &Conn{Kind: o.Kind, Peer: raw.RemoteAddr()}
	if tc, ok := raw.(*net.TCPConn); ok {
		if o.TCP.Nodelay != nil && !*o.TCP.Nodelay { // accepted sockets have it on
			_ = tc.SetNoDelay(false)
		}
		if o.TCP.Recbuf > 0 {
			_ = tc.SetReadBuffer(int(o.TCP.Recbuf))
		}
		if o.TCP.Sndbuf > 0 {
			_ = tc.SetWriteBuffer(int(o.TCP.Sndbuf))
		}
	}
	if l.waitsForDevice() {
		// Closing the listener aborts what is still waiting for the device.
		stop := context.AfterFunc(l.ctx, func() { _ = raw.Close() })
		defer stop()
	}
	if o.ProxyProtocol {
		pc := proxyproto.NewConn(raw, proxyproto.SetReadHeaderTimeout(o.ProxyTimeout))
		if _, err := pc.Read(nil); err != nil {
			return nil, fmt.Errorf("PROXY header: %w", err)
		}
		conn, c.Peer = pc, pc.RemoteAddr()
		if !l.admit(c.Peer) {
			return nil, errRefused
		}
	}
	switch o.Kind {
	case SSL:
		ctx, cancel := context.WithTimeout(l.ctx, o.HandshakeTimeout)
		defer cancel()
		tc := tls.Server(conn, o.TLS)
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, fmt.Errorf("TLS handshake: %w", err)
		}
		if certs := tc.ConnectionState().PeerCertificates; len(certs) > 0 {
			c.PeerCert = certs[0]
		}
		conn = tc
	case DTLS:
		ctx, cancel := context.WithTimeout(l.ctx, o.HandshakeTimeout)
		defer cancel()
		dc := conn.(*dtls.Conn)
		if err := dc.HandshakeContext(ctx); err != nil {
			return nil, fmt.Errorf("DTLS handshake: %w", err)
		}
		if st, ok := dc.ConnectionState(); ok && len(st.PeerCertificates) > 0 {
			c.PeerCert, _ = x509.ParseCertificate(st.PeerCertificates[0])
		}
	}
	ctl := l.ctl.Load()
	if bytes, msgs := bytesLimiter(ctl.bytesRate, minBurst(o.Kind)), messagesLimiter(ctl.messagesRate); bytes != nil || msgs != nil || ctl.shared != nil {
		ctx, cancel := context.WithCancel(context.Background())
		conn = &limitedConn{Conn: conn, bytes: bytes, msgs: msgs, shared: ctl.shared, ctx: ctx, cancel: cancel, stats: &l.Stats}
	}
	c.Conn = conn
	return c, nil
}

// limitedConn slows reads down to the configured rates: the socket is not
// read while tokens are missing, so TCP pushes back on the device.
type limitedConn struct {
	net.Conn
	bytes, msgs, shared *rate.Limiter
	ctx                 context.Context // ends with Close, to stop a wait
	cancel              context.CancelFunc
	stats               *Stats
}

func (c *limitedConn) Read(b []byte) (int, error) {
	if c.msgs != nil {
		if c.msgs.Tokens() < 1 {
			c.stats.Throttled.Add(1)
		}
		if err := c.msgs.Wait(c.ctx); err != nil {
			return 0, net.ErrClosed
		}
	}
	n, err := c.Conn.Read(b)
	if n > 0 {
		if werr := waitN(c.ctx, c.bytes, n, c.stats); werr != nil {
			return n, err
		}
		_ = waitN(c.ctx, c.shared, n, c.stats)
	}
	return n, err
}

func (c *limitedConn) Close() error {
	c.cancel()
	return c.Conn.Close()
}

// waitN waits for n tokens in bucket-sized steps.
func waitN(ctx context.Context, l *rate.Limiter, n int, st *Stats) error {
	if l == nil {
		return nil
	}
	if l.TokensAt(time.Now()) < float64(n) {
		st.Throttled.Add(1)
	}
	for n > 0 {
		k := min(n, l.Burst())
		if err := l.WaitN(ctx, k); err != nil {
			return err
		}
		n -= k
	}
	return nil
}
