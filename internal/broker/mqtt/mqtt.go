// Package mqtt is the external broker: every authenticated device becomes
// its own session on an existing MQTT broker or cluster (EMQX, HiveMQ,
// VerneMQ, Mosquitto) with the device's clientid, username and password, so
// the upstream's authentication, ACLs, clientid takeover, retained messages,
// shared subscriptions and QoS apply cluster-wide. exgate nodes share no
// state of their own: scale-out is the upstream's clustering.
package mqtt

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/exgate/exgate/internal/broker"
	"github.com/exgate/exgate/internal/config"
	"github.com/exgate/exgate/internal/netpoll"
	"github.com/exgate/exgate/internal/tlsconfig"
)

// Options configure a Broker.
type Options struct {
	Config config.External
	// Node names this gateway; its own session (RawPublish) is
	// "<prefix>exgate-<node>".
	Node   string
	Logger *slog.Logger
	// Poller, if set, reads the sessions' plain TCP connections instead of
	// a goroutine each.
	Poller *netpoll.Poller
}

type server struct {
	url  string
	addr string
	tls  bool
	idx  int // its place in the configured list
}

// Broker is the external broker. It implements broker.Broker.
type Broker struct {
	cfg     config.External
	node    string
	poller  *netpoll.Poller
	log     *slog.Logger
	servers []server
	tls     *tls.Config
	next    atomic.Int32 // index of the server that last worked
	probes  atomic.Uint64
	// reconnects paces the sessions opened again after a lost connection.
	reconnects *rate.Limiter
	// versions holds, per server, the MQTT version learned with
	// protocol_version auto: 0 until a session succeeded, then 5 or 4.
	versions []atomic.Int32

	// rawMu guards the gateway's own session, for RawPublish: nil until
	// needed. It is never held across network I/O: one caller dials
	// (rawDialing) while the others wait for it within their deadlines,
	// and publishes run side by side.
	closing sync.WaitGroup // device sessions saying goodbye (background)

	rawMu      sync.Mutex
	raw        broker.Session
	rawDialing *rawDial
	rawClosed  bool
}

// rawDial is one connect of the gateway's own session, shared by the
// RawPublish calls that wait for it.
type rawDial struct {
	done chan struct{}
	s    broker.Session
	err  error
}

var _ broker.Broker = (*Broker)(nil)

// New prepares the broker; it connects nothing until a device authenticates
// or a handler raw-publishes, so exgate starts while the upstream is down.
func New(o Options) (*Broker, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	c := o.Config
	if c.Keepalive == 0 {
		c.Keepalive = 60 * time.Second
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = 5 * time.Second
	}
	if c.ReconnectTimeout == 0 {
		c.ReconnectTimeout = 30 * time.Second
	}
	if c.ReconnectsPerSecond == 0 {
		c.ReconnectsPerSecond = 200
	}
	b := &Broker{cfg: c, node: o.Node, log: o.Logger, poller: o.Poller, versions: make([]atomic.Int32, len(c.Servers)),
		reconnects: rate.NewLimiter(rate.Limit(c.ReconnectsPerSecond), c.ReconnectsPerSecond)}
	for _, u := range c.Servers {
		addr, useTLS, err := config.ServerAddress(u)
		if err != nil {
			return nil, fmt.Errorf("broker.mqtt.servers: %w", err)
		}
		b.servers = append(b.servers, server{url: u, addr: addr, tls: useTLS, idx: len(b.servers)})
		if useTLS && b.tls == nil {
			if b.tls, err = tlsconfig.Client(c.SSLOptions); err != nil {
				return nil, fmt.Errorf("broker.mqtt.ssl_options: %w", err)
			}
		}
	}
	if q := c.MaxPublishQoS(); q < 2 {
		b.log.Info("upstream broker takes publishes up to this QoS: higher ones are sent at it (broker.mqtt.max_qos)", "max_qos", q)
	}
	if !c.Shared() {
		b.log.Info("upstream broker has no shared subscriptions: $share/… subscriptions are refused (broker.mqtt.shared_subscriptions: false)")
	}
	return b, nil
}

// dial connects to the first reachable server, starting with the one that
// worked last, and says which it is.
func (b *Broker) dial(ctx context.Context) (net.Conn, server, error) {
	var errs []error
	start := int(b.next.Load())
	for i := range b.servers {
		k := (start + i) % len(b.servers)
		s := b.servers[k]
		dctx, cancel := context.WithTimeout(ctx, b.cfg.ConnectTimeout)
		conn, err := b.dialServer(dctx, s)
		cancel()
		if err == nil {
			if k != start {
				b.next.Store(int32(k))
				b.log.Warn("upstream broker failover", "server", s.url)
			}
			return conn, s, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", s.url, err))
	}
	return nil, server{}, fmt.Errorf("%w: %w", broker.ErrUnavailable, errors.Join(errs...))
}

// dialServer opens a TCP or TLS connection to one server.
func (b *Broker) dialServer(ctx context.Context, s server) (net.Conn, error) {
	if s.tls {
		d := &tls.Dialer{Config: b.tls}
		return d.DialContext(ctx, "tcp", s.addr)
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", s.addr)
}

// Connect opens the device's own session upstream, with its credentials.
// A server that takes the TCP connection but not the session (no CONNACK,
// or a CONNACK refusing for a reason other than the credentials) is
// skipped for the next one, as one that refuses the TCP connection is.
func (b *Broker) Connect(ctx context.Context, ci broker.ClientInfo, password string, h broker.Handlers) (sess broker.Session, err error) {
	if b.cfg.Reconnects() {
		sess, err = b.connectKept(ctx, ci, password, h)
	} else {
		sess, err = b.connectAny(ctx, ci, password, h)
	}
	if err != nil || (b.cfg.MaxPublishQoS() == 2 && b.cfg.Shared()) {
		return sess, err
	}
	return &capped{Session: sess, maxQoS: b.cfg.MaxPublishQoS(), shared: b.cfg.Shared()}, nil
}

// capped holds a session to what the upstream can do (broker.mqtt.max_qos,
// shared_subscriptions): publishes above its QoS go at its QoS, and a
// shared subscription it would take for a plain topic is refused.
type capped struct {
	broker.Session
	maxQoS byte
	shared bool
}

func (s *capped) Publish(ctx context.Context, topic string, qos byte, payload []byte) error {
	return s.Session.Publish(ctx, topic, min(qos, s.maxQoS), payload)
}

func (s *capped) Subscribe(ctx context.Context, filter string, qos byte) error {
	if !s.shared && strings.HasPrefix(filter, "$share/") {
		return fmt.Errorf("%w: %s: the upstream broker has no shared subscriptions (broker.mqtt.shared_subscriptions: false)", broker.ErrBadRequest, filter)
	}
	return s.Session.Subscribe(ctx, filter, qos)
}

// connectAny opens one upstream session on the first server that takes it.
func (b *Broker) connectAny(ctx context.Context, ci broker.ClientInfo, password string, h broker.Handlers) (broker.Session, error) {
	var errs []error
	for range b.servers {
		sess, srv, err := b.connect(ctx, ci, password, h)
		if err == nil {
			return sess, nil
		}
		if srv.url == "" || errors.Is(err, broker.ErrNotAuthorized) || ctx.Err() != nil || len(b.servers) == 1 {
			return nil, errors.Join(append(errs, err)...)
		}
		errs = append(errs, fmt.Errorf("%s: %w", srv.url, err))
		next := (srv.idx + 1) % len(b.servers)
		if b.next.CompareAndSwap(int32(srv.idx), int32(next)) {
			b.log.Warn("upstream broker failover: the session was refused", "server", srv.url, "next", b.servers[next].url, "error", err)
		}
	}
	return nil, fmt.Errorf("%w: %w", broker.ErrUnavailable, errors.Join(errs...))
}

// connect opens one session on the first reachable server; srv is that
// server (zero if none was reachable).
func (b *Broker) connect(ctx context.Context, ci broker.ClientInfo, password string, h broker.Handlers) (broker.Session, server, error) {
	conn, srv, err := b.dial(ctx)
	if err != nil {
		return nil, server{}, err
	}
	prefix := b.cfg.ClientIDPrefix
	up := broker.ClientInfo{ClientID: prefix + ci.ClientID, Username: ci.Username, From: ci.ClientID}
	deliver, closed := h.Deliver, h.Closed
	h.Deliver = func(m broker.Message) {
		m.From = strings.TrimPrefix(m.From, prefix)
		deliver(m)
	}
	h.Closed = func(err error) { closed(b.why(err, srv)) }
	ka := uint16(min(b.cfg.Keepalive/time.Second, 65535))
	// A server that takes the TCP connection and then never answers (hung,
	// or stopped) gets connect_timeout for the session too, so the device
	// fails over to the next server within its own deadline.
	cctx, cancel := context.WithTimeout(ctx, b.cfg.ConnectTimeout)
	sess, err := b.open(cctx, conn, srv, up, password, ka, h)
	cancel()
	if err != nil {
		return nil, srv, err
	}
	return &background{Session: sess, wg: &b.closing}, srv, nil
}

// open starts a session on server srv over conn in the server's MQTT
// version. With protocol_version auto, a server whose version is not known
// yet is asked for MQTT 5; one that refuses it (hangs up without a
// CONNACK, or answers "unsupported version") is dialled again and spoken
// to in MQTT 3.1.1 from then on, logged once.
func (b *Broker) open(ctx context.Context, conn net.Conn, srv server, ci broker.ClientInfo, password string, ka uint16, h broker.Handlers) (broker.Session, error) {
	v := int32(b.cfg.ProtocolVersion)
	if v == 0 {
		v = b.versions[srv.idx].Load()
	}
	if v == 4 {
		return dial(ctx, conn, 4, ci, password, ka, h, b.poller)
	}
	s, err := dial(ctx, conn, 5, ci, password, ka, h, b.poller)
	if b.cfg.ProtocolVersion != 0 || v != 0 {
		return s, err
	}
	if err == nil {
		b.versions[srv.idx].CompareAndSwap(0, 5)
		return s, nil
	}
	if !errors.Is(err, errNoMQTT5) {
		return nil, err
	}
	dctx, cancel := context.WithTimeout(ctx, b.cfg.ConnectTimeout)
	conn, derr := b.dialServer(dctx, srv)
	cancel()
	if derr != nil {
		return nil, errors.Join(err, derr)
	}
	if s, err = dial(ctx, conn, 4, ci, password, ka, h, b.poller); err != nil {
		return nil, err
	}
	if b.versions[srv.idx].CompareAndSwap(0, 4) {
		b.log.Warn("upstream broker refused MQTT 5: its sessions use MQTT 3.1.1 (no publisher id in deliveries, takeover inferred)", "server", srv.url)
	}
	return s, nil
}

// background closes a device's session without waiting for the upstream's
// goodbye, which takes up to a few seconds from a hung broker: a gateway
// closing thousands of devices (a shutdown, a lost handler) must not wait
// for each in turn. Broker.Close waits for all of them.
type background struct {
	broker.Session
	wg   *sync.WaitGroup
	once sync.Once
}

func (s *background) Close() { s.once.Do(func() { s.wg.Go(s.Session.Close) }) }

// why refines a lost session: some brokers (mosquitto 2.0) close a
// taken-over session without DISCONNECT 0x8E. A clean close is taken for a
// takeover only if the same server then completes a whole MQTT session
// (CONNECT answered by a CONNACK): a broker that is shutting down may still
// accept TCP connections for a moment, so a bare dial proves nothing.
func (b *Broker) why(err error, s server) error {
	if errors.Is(err, broker.ErrTakenOver) || errors.Is(err, broker.ErrKicked) || !errors.Is(err, io.EOF) {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if b.probe(ctx, s) != nil {
		return err
	}
	return fmt.Errorf("%w (inferred: the broker closed the session and still serves new ones)", broker.ErrTakenOver)
}

// probe opens and closes a session of the gateway's own on server s.
func (b *Broker) probe(ctx context.Context, s server) error {
	conn, err := b.dialServer(ctx, s)
	if err != nil {
		return err
	}
	ci := broker.ClientInfo{ClientID: fmt.Sprintf("%sexgate-probe-%s-%d", b.cfg.ClientIDPrefix, b.node, b.probes.Add(1)), Username: b.cfg.Username}
	h := broker.Handlers{Deliver: func(broker.Message) {}, Closed: func(error) {}}
	sess, err := b.open(ctx, conn, s, ci, b.cfg.Password, 0, h)
	if err != nil {
		return err
	}
	sess.Close()
	return nil
}

// RawPublish publishes through the gateway's own session, connecting it
// (again) when needed; with QoS 1 and 2 it returns once the upstream acked.
func (b *Broker) RawPublish(ctx context.Context, topic string, qos byte, payload []byte) error {
	if qos > 2 {
		return fmt.Errorf("raw publish: qos %d: %w", qos, broker.ErrBadRequest)
	}
	qos = min(qos, b.cfg.MaxPublishQoS())
	for attempt := 0; ; attempt++ {
		sess, err := b.rawSession(ctx)
		if err != nil {
			return err
		}
		err = sess.Publish(ctx, topic, qos, payload)
		if err == nil || attempt == 1 || errors.Is(err, broker.ErrNotAuthorized) || ctx.Err() != nil {
			return err
		}
		b.rawMu.Lock() // broken: reconnect once
		if b.raw == sess {
			b.raw = nil
		}
		b.rawMu.Unlock()
		sess.Close()
	}
}

// rawSession returns the gateway's own session, connecting it if needed.
func (b *Broker) rawSession(ctx context.Context) (broker.Session, error) {
	b.rawMu.Lock()
	if b.rawClosed {
		b.rawMu.Unlock()
		return nil, broker.ErrClosed
	}
	if s := b.raw; s != nil {
		b.rawMu.Unlock()
		return s, nil
	}
	d := b.rawDialing
	if d == nil {
		d = &rawDial{done: make(chan struct{})}
		b.rawDialing = d
		b.rawMu.Unlock()
		// The dial is the whole group's: it runs with its own bound, not
		// with the deadline of whichever caller happened to start it.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.cfg.ConnectTimeout*time.Duration(len(b.servers)+1))
		d.s, d.err = b.connectRaw(dctx)
		cancel()
		b.rawMu.Lock()
		b.rawDialing = nil
		if d.err == nil {
			if b.rawClosed {
				d.s.Close()
				d.s, d.err = nil, broker.ErrClosed
			} else {
				b.raw = d.s
			}
		}
		b.rawMu.Unlock()
		close(d.done)
	} else {
		b.rawMu.Unlock()
	}
	select {
	case <-d.done:
		return d.s, d.err
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
}

func (b *Broker) connectRaw(ctx context.Context) (broker.Session, error) {
	conn, srv, err := b.dial(ctx)
	if err != nil {
		return nil, err
	}
	ci := broker.ClientInfo{ClientID: b.cfg.ClientIDPrefix + "exgate-" + b.node, Username: b.cfg.Username, From: "exproto"}
	h := broker.Handlers{Deliver: func(broker.Message) {}, Closed: func(error) {}}
	ka := uint16(min(b.cfg.Keepalive/time.Second, 65535))
	s, err := b.open(ctx, conn, srv, ci, b.cfg.Password, ka, h)
	if err != nil {
		return nil, fmt.Errorf("raw publish session: %w", err)
	}
	return s, nil
}

// Close ends the gateway's own session, and waits for the device sessions
// that are still saying goodbye (device sessions end with their channels).
func (b *Broker) Close() error {
	b.rawMu.Lock()
	s := b.raw
	b.raw, b.rawClosed = nil, true
	b.rawMu.Unlock()
	if s != nil {
		s.Close()
	}
	b.closing.Wait()
	return nil
}
