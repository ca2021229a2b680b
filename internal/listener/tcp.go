// Package listener accepts device connections and produces them, with the
// per-listener controls applied before any handler event; it knows nothing
// of handlers, channels or brokers.
package listener

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// ErrClosed is returned by Serve after Close.
var ErrClosed = errors.New("listener closed")

// Stats are a listener's counters; safe for concurrent use.
type Stats struct {
	Current       atomic.Int64 // connections being served now
	Accepted      atomic.Int64
	RefusedLimit  atomic.Int64 // over max_connections
	AcceptErrored atomic.Int64
}

// TCPOptions configure a TCP listener. The zero value has no limits.
type TCPOptions struct {
	// MaxConnections refuses (closes) connections beyond this many; 0 means none.
	MaxConnections int
	Logger         *slog.Logger
}

// TCP is a named TCP device listener.
type TCP struct {
	Name  string
	Stats Stats

	opts   TCPOptions
	ln     net.Listener
	wg     sync.WaitGroup // one per connection being served
	closed atomic.Bool
}

// ListenTCP binds addr; it does not accept until Serve.
func ListenTCP(name, addr string, o TCPOptions) (*TCP, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listener tcp:%s: %w", name, err)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &TCP{Name: name, opts: o, ln: ln}, nil
}

// Addr is the bound address.
func (l *TCP) Addr() net.Addr { return l.ln.Addr() }

// Serve accepts connections and runs serve for each in its own goroutine;
// serve owns the conn. It returns ErrClosed once Close was called.
func (l *TCP) Serve(serve func(net.Conn)) error {
	var backoff time.Duration
	for {
		conn, err := l.ln.Accept()
		if err != nil {
			if l.closed.Load() || errors.Is(err, net.ErrClosed) {
				return ErrClosed
			}
			// EMFILE and friends: back off 5 ms → 1 s, as net/http does.
			l.Stats.AcceptErrored.Add(1)
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			l.opts.Logger.Warn("accept failed; retrying", "listener", "tcp:"+l.Name, "error", err, "backoff", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		if m := l.opts.MaxConnections; m > 0 && l.Stats.Current.Load() >= int64(m) {
			l.Stats.RefusedLimit.Add(1)
			_ = conn.Close()
			continue
		}
		l.Stats.Accepted.Add(1)
		l.Stats.Current.Add(1)
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			defer l.Stats.Current.Add(-1)
			serve(conn)
		}()
	}
}

// Close stops accepting; connections being served are not touched.
func (l *TCP) Close() error {
	l.closed.Store(true)
	return l.ln.Close()
}

// Wait waits until every serve call returned.
func (l *TCP) Wait() { l.wg.Wait() }
