// Package channel is one device connection: its state machine, its FIFO of
// handler events with exactly one call in flight, its timers, and its
// presence in the broker.
//
// The rule everything here serves (spec §2 "Order and re-entrancy"): the
// handler, while answering a callback, calls the adapter for the same
// connection and waits. So the adapter-facing methods (Send, Authenticate,
// Publish, …) never wait for the in-flight callback: they take the channel's
// short lock, which is never held across network I/O or a gRPC call.
// Events are dispatched by a goroutine that exists only while the queue is
// non-empty, and a plain TCP socket is read by a shared event loop (Watch),
// so an idle device costs its state and its socket only.
package channel

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/protobuf/proto"

	pb "github.com/exgate/exgate/exprotopb"
	"github.com/exgate/exgate/internal/banned"
	"github.com/exgate/exgate/internal/broker"
	"github.com/exgate/exgate/internal/netpoll"
)

// Handler is the user's ConnectionHandler as the channel calls it. Each
// method returns when the handler answered; a non-nil error closes the device.
type Handler interface {
	OnSocketCreated(context.Context, *pb.SocketCreatedRequest) error
	OnReceivedBytes(context.Context, *pb.ReceivedBytesRequest) error
	OnTimerTimeout(context.Context, *pb.TimerTimeoutRequest) error
	OnReceivedMessages(context.Context, *pb.ReceivedMessagesRequest) error
	OnSocketClosed(context.Context, *pb.SocketClosedRequest) error
}

// AsyncHandler is a Handler that can also start a callback without waiting
// for its answer (exgate's native stream): the channel then needs no
// goroutine waiting per event, and the next event goes out from whichever
// goroutine learns the answer. Start returns at once and never calls
// call.Done itself; Done is called at most once, from any goroutine, when
// the handler answered or the call failed. Cancel on what Start returns
// forgets the call (its deadline passed); Done may still come. (Interfaces,
// not funcs: an event's start allocates no closures.)
type AsyncHandler interface {
	Start(req proto.Message, call interface{ Done(error) }) interface{ Cancel() }
}

// Credentials are what a device presents in Authenticate.
type Credentials struct {
	ClientID, Username, Password string
	ProtoName, ProtoVer          string
	Peer                         net.Addr
}

// AuthResult is a successful authentication.
type AuthResult struct {
	Superuser bool
	// ExpireAt closes the device with {shutdown,expired} at that time; zero never.
	ExpireAt time.Time
}

// Who is the identity an authorization check sees.
type Who struct {
	ClientID, Username string
	Peer               net.Addr
	Superuser          bool
}

// Config is shared by the channels of one listener. It must not change
// after the first channel was made from it.
type Config struct {
	Node    string
	NodeTag NodeTag // TagOf(Node), stamped on conn ids
	Broker  broker.Broker
	Handler Handler
	// Async, if set, starts the events of Handler without waiting
	// (OnSocketClosed still goes through Handler).
	Async AsyncHandler
	// Authenticate checks credentials; nil allows everyone. A non-nil error
	// is the reason given to the handler.
	Authenticate func(context.Context, Credentials) (AuthResult, error)
	// Authorize reports whether who may publish (or subscribe to) topic;
	// nil allows all. It returns by the time ctx ends (the adapter call's
	// deadline).
	Authorize func(ctx context.Context, who Who, publish bool, topic string) bool
	// PubSubNeverWait says Publish, Subscribe and Unsubscribe return
	// without waiting on anything outside this process (an in-process
	// broker, authorization without a remote source), so a caller that
	// must never wait may make them itself (see Channel.PubSubNeverWaits).
	PubSubNeverWait bool
	// Mountpoint may contain ${clientid} and ${username}.
	Mountpoint  string
	IdleTimeout time.Duration
	// AuthTimeout, if positive, closes a device not authenticated by then.
	AuthTimeout       time.Duration
	RequestTimeout    time.Duration
	CloseFlushTimeout time.Duration
	// SendTimeout bounds one write to the device; 0 means 15s.
	SendTimeout time.Duration
	// Datagram selects the UDP idle rule: idle_timeout closes the peer even
	// while it sends, unless StartTimer was called (spec §2 "Idle timeout").
	Datagram bool
	// ReadBufferSize caps one socket read, so one OnReceivedBytes; 0 means
	// 4096. Datagram transports need room for a whole datagram.
	ReadBufferSize int
	MaxBatch       int // messages per OnReceivedMessages
	// MaxRequestBytes caps the payload and topic bytes of one
	// OnReceivedMessages; a larger batch is split (0: no cap).
	MaxRequestBytes int
	EventQueue      int // socket reads waiting for the handler before reading pauses
	// MaxMqueueLen is messages waiting for the handler before one is
	// dropped to make room (see deliver for which one).
	MaxMqueueLen int
	Registry     *Registry
	Stats        *Stats
	Pool         *Pool // runs dispatchers; nil: a goroutine each
	// Trace, if set, is told what the device does (clientid, conn, event,
	// topic, bytes); it must be cheap when nothing is traced.
	Trace func(clientID, conn, event, topic string, data []byte)
	// Tracing reports whether anything is traced at all (checked first, so
	// the hot path pays one atomic load).
	Tracing func() bool
	// Banned refuses banned clients and bans those that fail too often;
	// nil bans no one.
	Banned *banned.List
	Logger *slog.Logger
}

// State is where a channel is in its life.
//
//	Connecting → Connected  (Authenticate succeeded)
//	Connecting → Closed, Connected → Closed  (any close cause)
type State int32

const (
	// Connecting: the socket is open, the device has not authenticated.
	Connecting State = iota
	// Connected: authenticated, with a broker session.
	Connected
	// Closed: the socket is closed; queued events and OnSocketClosed may
	// still be on their way to the handler.
	Closed
)

func (s State) String() string {
	switch s {
	case Connecting:
		return "connecting"
	case Connected:
		return "connected"
	case Closed:
		return "disconnected"
	}
	return "unknown"
}

// Conn is the device side of a channel. Write sends bytes verbatim (one
// datagram for UDP and DTLS); Close must unblock a pending Write.
type Conn interface {
	io.Writer
	Close() error
}

// Channel is one device connection. Its exported methods are safe for
// concurrent use.
type Channel struct {
	// static
	id   string
	cfg  *Config
	conn Conn
	info *pb.ConnInfo
	tls  bool

	lastRecv atomic.Int64 // unix nanos of the last socket read; any goroutine
	gotBytes atomic.Bool  // a byte arrived; any goroutine
	bytesIn  atomic.Int64
	bytesOut atomic.Int64
	// counts for management, EMQX's recv_cnt/recv_msg/send_cnt/send_msg
	reads, published, writes, delivered atomic.Int64
	createdAt                           time.Time

	wmu sync.Mutex      // serializes writes to conn
	raw syscall.RawConn // conn's socket when it is plain TCP (fast writes), else nil

	// space gets a token when a socket-read event leaves the queue (sent
	// under mu by the dispatcher, read by the one socket reader waiting in
	// Received), and is closed when the state becomes Closed.
	space chan struct{}

	// The event started on an async handler, until answered or expired, and
	// its deadline timer, made at the first such event (arm, disarm,
	// deadlinePassed; a channel's events follow one another, so not under mu).
	inFlight atomic.Pointer[asyncCall]
	deadline *time.Timer

	mu          sync.Mutex // guards everything below; never held across I/O
	state       State
	authBusy    bool // an Authenticate is between its checks and its commit
	client      Credentials
	superuser   bool
	connectedAt time.Time
	mountpoint  string
	session     broker.Session
	subs        map[string]byte // filter as the handler gave it → qos
	reason      string          // why it closed; the first cause wins
	closedAt    time.Time       // queued events are dropped CloseFlushTimeout after it
	keepalive   time.Duration
	kaTimer     *time.Timer
	idleTimer   *time.Timer
	expireTimer *time.Timer
	authTimer   *time.Timer    // nil unless AuthTimeout is set
	watch       *netpoll.Watch // set when a poller reads the socket (Watch)
	queue       []event
	queuedReads int // socket-read and timer events in queue
	queuedMsgs  int // deliveries in queue
	queuedQoS0  int // deliveries in queue at QoS 0
	mqDropped   int64
	dispatching bool
	ids         msgIDs
	closeQueued bool
	finished    bool          // OnSocketClosed was answered
	done        chan struct{} // made by Done, closed once finished
}

// New makes a channel for a freshly accepted connection and queues
// OnSocketCreated, always its first event. tls says whether an orderly
// close is reported as ssl_closed.
func New(cfg *Config, conn Conn, info *pb.ConnInfo, tls bool) *Channel {
	c := &Channel{
		id:        newID(cfg.NodeTag),
		cfg:       cfg,
		conn:      conn,
		raw:       rawConnOf(conn),
		info:      info,
		tls:       tls,
		space:     make(chan struct{}, 1),
		ids:       newMsgIDs(),
		createdAt: time.Now(),
	}
	cfg.Registry.add(c)
	c.mu.Lock()
	c.push(event{kind: evCreated})
	c.idleTimer = time.AfterFunc(cfg.IdleTimeout, c.idleExpired)
	if cfg.AuthTimeout > 0 {
		c.authTimer = time.AfterFunc(cfg.AuthTimeout, c.authExpired)
	}
	c.mu.Unlock()
	if c.tracing() {
		c.trace("", "connected "+addrString(info.GetPeername()), "", nil)
	}
	return c
}

// logger is the device's logger, made when a line is logged: a logger
// kept per device would cost each idle device a few hundred bytes.
func (c *Channel) logger(args ...any) *slog.Logger {
	return c.cfg.Logger.With(append([]any{"conn", c.id, "peer", addrString(c.info.GetPeername())}, args...)...)
}

// trace reports an event to the tracer; clientID is passed in because
// callers may hold mu.
func (c *Channel) trace(clientID, event, topic string, data []byte) {
	if c.tracing() {
		c.cfg.Trace(clientID, c.id, event, topic, data)
	}
}

// traceSelf is trace with the channel's own clientid; not with mu held.
func (c *Channel) traceSelf(event, topic string, data []byte) {
	if c.tracing() {
		c.cfg.Trace(c.ClientID(), c.id, event, topic, data)
	}
}

// tracing reports whether a trace is on; a caller that builds an event's
// text asks first, so a device's connect and close format nothing when
// no trace is on (the peer's address was 7 % of a connect's allocations).
func (c *Channel) tracing() bool {
	return c.cfg.Trace != nil && c.cfg.Tracing != nil && c.cfg.Tracing()
}

// ID is the conn id handlers use.
func (c *Channel) ID() string { return c.id }

// PubSubNeverWaits reports Config.PubSubNeverWait.
func (c *Channel) PubSubNeverWaits() bool { return c.cfg.PubSubNeverWait }

// Done is closed once OnSocketClosed was answered (or failed).
func (c *Channel) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil { // made on demand: most devices are never waited for
		c.done = make(chan struct{})
		if c.finished {
			close(c.done)
		}
	}
	return c.done
}

// State reports where the channel is.
func (c *Channel) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// ClientID is the clientid given at Authenticate, or "".
func (c *Channel) ClientID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.client.ClientID
}

// Info describes a channel for management.
type Info struct {
	ConnID, ClientID, Username string
	ProtoName, ProtoVer        string
	State                      State
	Peer                       string
	CreatedAt, ConnectedAt     time.Time
	Keepalive                  time.Duration
	Subscriptions              map[string]byte
	BytesIn, BytesOut          int64
	// MqueueLen is deliveries waiting for the handler, MqueueDropped those
	// dropped since the device connected (queue full or closed).
	MqueueLen, MqueueDropped int64
	MaxMqueue                int
	// Reads and Writes are socket reads (datagrams) and Sends; Published
	// the device's publishes the broker took; Delivered the messages the
	// handler accepted for it; Queued the events waiting for the handler.
	Reads, Writes, Published, Delivered int64
	Queued                              int
	// DisconnectedAt is when the device closed; zero while it is open.
	DisconnectedAt time.Time
}

// Snapshot returns a copy of the channel's public state.
func (c *Channel) Snapshot() Info {
	c.mu.Lock()
	defer c.mu.Unlock()
	subs := make(map[string]byte, len(c.subs))
	for k, v := range c.subs {
		subs[k] = v
	}
	return Info{
		ConnID: c.id, ClientID: c.client.ClientID, Username: c.client.Username,
		ProtoName: c.client.ProtoName, ProtoVer: c.client.ProtoVer,
		State: c.state, Peer: addrString(c.info.GetPeername()),
		CreatedAt: c.createdAt, ConnectedAt: c.connectedAt, Keepalive: c.keepalive,
		Subscriptions: subs, BytesIn: c.bytesIn.Load(), BytesOut: c.bytesOut.Load(),
		MqueueLen: int64(c.queuedMsgs), MqueueDropped: c.mqDropped, MaxMqueue: c.cfg.MaxMqueueLen,
		Reads: c.reads.Load(), Writes: c.writes.Load(), Published: c.published.Load(), Delivered: c.delivered.Load(),
		Queued: len(c.queue), DisconnectedAt: c.closedAt,
	}
}

// Received queues one socket read as one OnReceivedBytes. It blocks while
// the queue holds cfg.EventQueue reads, so a stream socket's reader stops
// and TCP pushes back on the device. It reports false once the channel is
// closed. Only one goroutine may call it at a time.
func (c *Channel) Received(b []byte) bool {
	c.countRead(b)
	return c.queueRead(b, true) == readQueued
}

// countRead notes one socket read, once, however long it waits for room.
func (c *Channel) countRead(b []byte) {
	c.lastRecv.Store(time.Now().UnixNano())
	if c.gotBytes.CompareAndSwap(false, true) && !c.cfg.Datagram {
		c.mu.Lock()
		if c.idleTimer != nil {
			c.idleTimer.Stop()
		}
		c.mu.Unlock()
	}
	c.bytesIn.Add(int64(len(b)))
	c.reads.Add(1)
	c.cfg.Stats.BytesReceived.Add(int64(len(b)))
	c.traceSelf("recv", "", b)
}

type readOutcome int

const (
	readQueued readOutcome = iota
	readFull               // only when not waiting
	readClosed
)

// queueRead queues a counted read, waiting for room if wait says so.
func (c *Channel) queueRead(b []byte, wait bool) readOutcome {
	for {
		c.mu.Lock()
		if c.state == Closed {
			c.mu.Unlock()
			return readClosed
		}
		if c.queuedReads < c.cfg.EventQueue {
			start := c.enqueue(event{kind: evBytes, bytes: b})
			c.mu.Unlock()
			if start {
				c.startDispatch(true)
			}
			return readQueued
		}
		c.mu.Unlock()
		if !wait {
			return readFull
		}
		<-c.space // a token, or closed: look again
	}
}

// datagramReader is a connection that hands out whole datagrams.
type datagramReader interface {
	ReadDatagram() ([]byte, error)
}

// Reader returns a function that reads r until it ends (ReadLoop).
func (c *Channel) Reader(r io.Reader) func() {
	return func() { c.ReadLoop(r) }
}

// ReadLoop reads a connection until it ends, queueing each read (each
// datagram) as one OnReceivedBytes, and then closes the channel with the
// peer's reason.
func (c *Channel) ReadLoop(r io.Reader) {
	if dr, ok := r.(datagramReader); ok {
		for {
			b, err := dr.ReadDatagram()
			if err != nil {
				c.closeWith(peerClosedReason(err, c.tls), false)
				return
			}
			if !c.Received(b) {
				return
			}
		}
	}
	size := c.readSize()
	// The event keeps its bytes until dispatched: each read is copied out.
	var next func() ([]byte, error)
	if w := readWaiterOf(r, size); w != nil {
		next = w.read // no buffer held while the device is idle
	} else {
		buf := make([]byte, size) // TLS, PROXY, rate-limited: they may hold data of their own
		next = func() ([]byte, error) {
			n, err := r.Read(buf)
			return append([]byte(nil), buf[:n]...), err
		}
	}
	c.readWith(next)
}

// readWith queues what next reads until it fails, then closes the channel.
func (c *Channel) readWith(next func() ([]byte, error)) {
	for {
		b, err := next()
		if len(b) > 0 && !c.Received(b) {
			return
		}
		if err != nil {
			c.closeWith(peerClosedReason(err, c.tls), false)
			return
		}
	}
}

// Close closes the channel as the adapter's Close does: {shutdown,normal}.
func (c *Channel) Close() error {
	if c.State() == Closed {
		return ErrNotAlive
	}
	c.closeWith(ReasonNormal, false)
	return nil
}

// Kick closes the channel with reason (ReasonKicked, ReasonGatewayStopped, …).
func (c *Channel) Kick(reason string) { c.closeWith(reason, false) }

// closeWith is the single exit path: it closes the socket and the broker
// session at once, keeps queued events for the handler (unless the handler
// itself failed: dropPending), and queues OnSocketClosed as the last event.
func (c *Channel) closeWith(reason string, dropPending bool) {
	c.closeAfter(reason, dropPending, nil)
}

// closeAfter is closeWith that first queues last (if not nil) in the same
// step, so no other close can come between the event and its reason: the
// keepalive's OnTimerTimeout is followed by {shutdown,keepalive_timeout}
// even if the handler calls Close while answering it.
func (c *Channel) closeAfter(reason string, dropPending bool, last *event) {
	c.mu.Lock()
	if c.state == Closed {
		if dropPending { // the handler fails while queued events are flushed
			c.dropQueued()
		}
		c.mu.Unlock()
		return
	}
	wasConnected := c.state == Connected
	c.state = Closed
	c.closedAt = time.Now()
	c.cfg.Stats.Closing.Add(1)
	c.reason = reason
	for _, t := range []*time.Timer{c.kaTimer, c.idleTimer, c.expireTimer, c.authTimer} {
		if t != nil {
			t.Stop()
		}
	}
	sess, watch := c.session, c.watch
	c.session = nil
	if dropPending {
		c.dropQueued()
	}
	if last != nil {
		c.push(*last)
	}
	c.closeQueued = true
	c.push(event{kind: evClosed, reason: reason})
	close(c.space)
	c.mu.Unlock()

	if watch != nil {
		watch.Stop()
	}
	_ = c.conn.Close()
	if sess != nil {
		sess.Close()
	}
	if wasConnected {
		c.cfg.Stats.Disconnected.Add(1)
		c.lifecycle(func() *slog.Logger { return c.logger() }, "client disconnected", "clientid", c.ClientID(), "reason", reason)
	} else if c.cfg.Logger.Enabled(context.Background(), slog.LevelDebug) {
		c.logger().Debug("device closed before it authenticated", "reason", reason)
	}
	if c.tracing() {
		c.traceSelf("closed "+reason, "", nil)
	}
}

// finish runs after OnSocketClosed: the channel leaves the registry.
func (c *Channel) finish() {
	c.cfg.Registry.remove(c)
	c.cfg.Stats.Closing.Add(-1)
	c.mu.Lock()
	c.finished = true
	if c.done != nil {
		close(c.done)
	}
	c.mu.Unlock()
}

// Send writes bytes to the device verbatim (spec §2 "Bytes").
func (c *Channel) Send(b []byte) error {
	if c.State() == Closed {
		return ErrNotAlive
	}
	if len(b) == 0 {
		return nil
	}
	c.wmu.Lock()
	n, err := c.write(b)
	c.wmu.Unlock()
	c.traceSelf("send", "", b)
	c.bytesOut.Add(int64(n))
	c.writes.Add(1)
	c.cfg.Stats.BytesSent.Add(int64(n))
	if err != nil {
		reason := peerClosedReason(err, c.tls)
		if isTimeout(err) {
			reason = ReasonSendTimeout
		}
		c.closeWith(reason, false)
		return ErrNotAlive
	}
	return nil
}

// TrySend is Send for a caller that must not wait (a native handler
// stream's reader): it writes what the socket takes at once. Several
// buffers are several Sends in a row, written with one write(2) (a burst
// of Sends to one device is one system call, not one each); n counts the
// bytes written of them all, in order. complete is false when it could not
// write them whole without waiting, with n bytes written (0 when the
// socket is not plain TCP or another write is under way); the caller then
// Sends the rest, in order before anything else for this device.
func (c *Channel) TrySend(bs ...[]byte) (n int, complete bool, err error) {
	size := 0
	for _, b := range bs {
		size += len(b)
	}
	if c.raw == nil || size == 0 {
		return 0, false, nil
	}
	if c.State() == Closed {
		return 0, true, ErrNotAlive
	}
	b := bs[0]
	if len(bs) > 1 {
		buf := gathers.Get().(*[]byte)
		defer func() {
			if cap(*buf) <= maxGather {
				gathers.Put(buf)
			}
		}()
		*buf = (*buf)[:0]
		for _, b := range bs {
			*buf = append(*buf, b...)
		}
		b = *buf
	}
	if !c.wmu.TryLock() {
		return 0, false, nil
	}
	n, err = netpoll.TryWrite(c.raw, b)
	c.wmu.Unlock()
	c.bytesOut.Add(int64(n))
	c.cfg.Stats.BytesSent.Add(int64(n))
	if err != nil {
		c.closeWith(peerClosedReason(err, c.tls), false)
		return n, true, ErrNotAlive
	}
	// The Sends written whole are done; the caller sends the rest.
	left := n
	for _, b := range bs {
		if len(b) == 0 {
			continue // as Send: nothing to write, nothing counted
		}
		if left < len(b) {
			return n, false, nil
		}
		left -= len(b)
		c.writes.Add(1)
		c.traceSelf("send", "", b)
	}
	return n, true, nil
}

// gathers holds the buffers TrySend gathers a burst of Sends in; one is
// kept only while it is at most maxGather bytes.
var gathers = sync.Pool{New: func() any { return new([]byte) }}

const maxGather = 64 << 10

// write writes b whole, within SendTimeout. Called with wmu held.
func (c *Channel) write(b []byte) (int, error) {
	var done int
	if c.raw != nil {
		n, err := netpoll.TryWrite(c.raw, b)
		if err != nil || n == len(b) {
			return n, err
		}
		done, b = n, b[n:] // the socket is full: wait for room, within the deadline
	}
	if d, ok := c.conn.(interface{ SetWriteDeadline(time.Time) error }); ok {
		to := c.cfg.SendTimeout
		if to <= 0 {
			to = 15 * time.Second
		}
		_ = d.SetWriteDeadline(time.Now().Add(to))
	}
	n, err := c.conn.Write(b)
	return done + n, err
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func addrString(a *pb.Address) string {
	if a == nil {
		return ""
	}
	return net.JoinHostPort(a.Host, strconv.Itoa(int(a.Port)))
}
