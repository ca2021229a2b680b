// Package handler is the gRPC client side of exgate: it calls the user's
// handler, one or several endpoints of it, as ConnectionUnaryHandler or as
// ConnectionHandler.
//
// ConnectionHandler is served two ways. per_event (the default) sends each
// event as a one-message client stream, half-closes and waits for the
// answer: unary-era and streaming-era handlers both accept it, and it keeps
// strict per-connection order. long_lived keeps one client stream per
// callback open, as EMQX 5 did: events are sent without waiting for an
// answer, so the order of events of different callbacks is not guaranteed at
// the handler (why EMQX added the unary service).
//
// Each device is pinned to one endpoint, chosen by its conn id among the
// endpoints that are not failing, so a handler keeps its per-connection
// state. When an endpoint's connection is lost after it was ready, the
// devices pinned to it are reported (Options.Lost): their state in the
// handler is gone. The gRPC channels reconnect by themselves; a call made
// while an endpoint is down fails at once, so devices are not left waiting.
package handler

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/exgate/exgate/exprotopb"
	"github.com/exgate/exgate/internal/config"
	"github.com/exgate/exgate/internal/pbcodec"
	"github.com/exgate/exgate/internal/tlsconfig"
	"github.com/exgate/exgate/internal/workers"
)

// Options configure a Client.
type Options struct {
	// Config is the handler block (addresses, service, streaming, TLS).
	Config config.Handler
	Logger *slog.Logger
	// Lost is called, from a goroutine of the Client, with the conn ids of
	// the devices pinned to an endpoint whose connection was lost.
	Lost func(connIDs []string, reason string)
	// Observe, if set, is told every call's callback, duration and error.
	Observe func(method string, d time.Duration, err error)
	// Adapter applies a native handler's actions (service_name: native):
	// the gateway's ConnectionAdapter, called in process.
	Adapter pb.ConnectionAdapterServer
	// MaxRecv bounds one message from a native handler (a batch of
	// actions); 0 means 4 MiB + 1 MiB.
	MaxRecv int
	// Refused counts native actions refused because too many waited for
	// their device; nil counts nowhere.
	Refused *atomic.Int64
	// Unanswered counts native actions sent with ref 0 (no result wanted)
	// that failed; nil counts nowhere.
	Unanswered *atomic.Int64
	// Node and Version introduce the gateway to a native handler; Version
	// is asked when a stream opens.
	Node    string
	Version func() string
	// Batch, if set, is shared by the Clients whose native streams hold
	// their sends while a Batch.Run runs (the event loop's reports).
	Batch *Batch

	holdWatch func() // tests: run by each state watcher before it starts
}

// Client calls the handler. It implements channel.Handler and is safe for
// concurrent use.
type Client struct {
	service  string // ConnectionUnaryHandler, ConnectionHandler or native
	longLive bool
	native   bool
	adapter  pb.ConnectionAdapterServer // native mode's actions go here
	// What adapter can do for a caller that must not wait (nil: nothing);
	// found once, not per action.
	trySender  trySender
	pubSub     pubSubNeverWaiter
	refused    *atomic.Int64
	unanswered *atomic.Int64
	maxRecv    int           // of one native Down message
	timeout    time.Duration // of one native action
	node       string
	version    func() string
	log        *slog.Logger
	lost       func([]string, string)
	observe    func(string, time.Duration, error)
	batch      *Batch
	eps        []*endpoint

	mu   sync.Mutex
	pins map[string]*endpoint // conn id → endpoint, from OnSocketCreated to OnSocketClosed

	ctx     context.Context // ends with Close
	cancel  context.CancelFunc
	wg      sync.WaitGroup // state watchers, native streams
	actions *workers.Pool  // apply native handlers' actions
}

// endpoint is one handler address.
type endpoint struct {
	addr   string // as configured, for logs
	conn   *grpc.ClientConn
	long   map[string]*longStream // long_lived: one per method
	native *nativeEndpoint        // native mode's stream
	// probed is closed once the endpoint's stream shape is known
	// (long_lived); until then its events wait.
	probed    chan struct{}
	probeOnce sync.Once
	// lost is set when the endpoint's connection, once ready, was lost, and
	// cleared when it is ready again: new devices avoid it meanwhile (gRPC
	// reports such a channel idle or connecting for a moment before it
	// fails to reconnect).
	lost atomic.Bool
	// ready packs a flag, bit 0, set while the connection is known to have
	// been Ready since its last loss was counted, and above it the
	// generation: the number of losses counted (see watch).
	ready atomic.Uint64
	// Each hint is logged at most every 5 s: a dead handler fails every
	// device's every event, and the log must stay readable.
	unreachable, unimplemented rate.Sometimes
}

// New creates the client and starts connecting to every endpoint.
func New(o Options) (*Client, error) {
	h := o.Config
	c := &Client{service: h.ServiceName, longLive: h.ServiceName == "ConnectionHandler" && h.Streaming == "long_lived",
		native: h.ServiceName == config.Native, adapter: o.Adapter, timeout: h.RequestTimeout, node: o.Node, version: o.Version, refused: cmp.Or(o.Refused, new(atomic.Int64)),
		unanswered: cmp.Or(o.Unanswered, new(atomic.Int64)),
		maxRecv:    cmp.Or(o.MaxRecv, 5<<20),
		log:        o.Logger, lost: o.Lost, observe: o.Observe, batch: o.Batch, pins: map[string]*endpoint{}}
	if c.native && c.adapter == nil {
		return nil, errors.New("handler: native mode needs an adapter")
	}
	c.trySender, _ = o.Adapter.(trySender)
	c.pubSub, _ = o.Adapter.(pubSubNeverWaiter)
	c.ctx, c.cancel = context.WithCancel(context.Background())
	if c.native {
		c.actions = workers.New(10*time.Second, maxActionWorkers)
	}
	for _, addr := range h.Address {
		target, https, err := config.HandlerTarget(addr)
		if err != nil {
			c.Close()
			return nil, err
		}
		creds := insecure.NewCredentials()
		if https || h.SSLOptions != nil {
			tc, err := tlsconfig.Client(h.SSLOptions)
			if err != nil {
				c.Close()
				return nil, fmt.Errorf("handler.ssl_options: %w", err)
			}
			creds = credentials.NewTLS(tc)
		}
		conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(creds),
			grpc.WithIdleTimeout(0), // an idle channel must not look like a lost handler
			// Protobuf's wire, encoded and decoded without reflection.
			grpc.WithDefaultCallOptions(pbcodec.CallOption()),
			// Fixed flow-control windows: gRPC's default estimates them with a
			// ping per round trip for as long as data flows (on loopback for
			// ever, the estimate never reaches its cap), an extra frame each way.
			// Without it, in a native connect storm, the handler's CPU per
			// connect was ~5 % lower in nine of ten A/B pairs, the gateway's ~3 %.
			grpc.WithInitialWindowSize(streamWindow), grpc.WithInitialConnWindowSize(connWindow),
			// gRPC's default backoff grows to 2 minutes: a handler that comes
			// back must be used within a second, not after the next retry.
			grpc.WithConnectParams(grpc.ConnectParams{
				Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
				MinConnectTimeout: 5 * time.Second,
			}))
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("handler %s: %w", addr, err)
		}
		ep := &endpoint{addr: addr, conn: conn, long: map[string]*longStream{}, probed: make(chan struct{}),
			unreachable: rate.Sometimes{Interval: 5 * time.Second}, unimplemented: rate.Sometimes{Interval: 5 * time.Second}}
		for _, m := range methods {
			ep.long[m] = &longStream{turn: make(chan struct{}, 1)}
		}
		ep.native = c.newNative(ep)
		c.eps = append(c.eps, ep)
		conn.Connect()
		c.wg.Go(func() {
			if o.holdWatch != nil {
				o.holdWatch()
			}
			c.watch(ep)
		})
	}
	return c, nil
}

// streamWindow and connWindow are the fixed gRPC flow-control windows of
// the handler connections (see New): 1 MiB per stream still lets a handler
// 20 ms away take 50 MiB/s over the native stream.
const (
	streamWindow = 1 << 20
	connWindow   = 4 << 20
)

var methods = []string{"OnSocketCreated", "OnReceivedBytes", "OnTimerTimeout", "OnReceivedMessages", "OnSocketClosed"}

// watch reports the devices pinned to ep when its connection, once ready,
// is lost.
//
// It learns states by polling (GetState, WaitForStateChange), so on a busy
// machine it can miss a Ready period of a few milliseconds entirely: a
// call that succeeded counts as having seen it (succeeded), and any state
// other than Ready after a Ready period, seen or not, is its loss. The
// other way round, a state it read may be older than a Ready period a
// call recorded while this goroutine waited for a core: that state is
// read again, not taken for the loss (endReady).
func (c *Client) watch(ep *endpoint) {
	defer ep.probeDone()
	// Start from Idle, not from the current state: a connection that is
	// Ready already must be handled as having just become Ready.
	for prev := connectivity.Idle; ; {
		known := ep.ready.Load() // before the state, for endReady
		state := ep.conn.GetState()
		ended, stale := false, false
		if state != connectivity.Ready && state != connectivity.Shutdown {
			ended, stale = ep.endReady(known)
		}
		switch {
		case stale:
			continue
		case state == connectivity.Ready:
			ep.sawReady(ep.generation())
			if prev != connectivity.Ready {
				ep.lost.Store(false)
				c.log.Info("handler connected", "address", ep.addr, "service_name", c.service)
				if c.longLive {
					c.probeLong(ep)
				}
				ep.probeDone()
			}
		case ended:
			ep.lost.Store(true)
			if c.native {
				// Every device of a native endpoint has its events on a stream,
				// which ends with the connection and closes them
				// (nativeStream.end): one warning for one loss.
				c.log.Info("handler connection lost", "address", ep.addr)
				break
			}
			ids := c.pinnedTo(ep)
			if len(ids) > 0 {
				c.log.Warn("handler connection lost; closing its devices", "address", ep.addr, "devices", len(ids))
			} else {
				c.log.Info("handler connection lost", "address", ep.addr)
			}
			if c.lost != nil && len(ids) > 0 {
				c.lost(ids, "{shutdown,{error,handler_connection_lost}}")
			}
			ep.resetStreams()
		}
		prev = state
		if !ep.conn.WaitForStateChange(c.ctx, state) {
			return
		}
	}
}

// generation is the number of Ready periods of ep that ended; a call takes
// it when it starts, so that its success, if it comes after the period
// ended, is not taken for a new one.
func (ep *endpoint) generation() uint64 { return ep.ready.Load() >> 1 }

// sawReady records that ep's connection is (or was, during a call started
// in generation gen) Ready, and reports whether that was news. A call that
// succeeds while the watcher still thinks the handler is lost makes new
// devices welcome again.
func (ep *endpoint) sawReady(gen uint64) bool {
	for {
		v := ep.ready.Load()
		if v&1 == 1 || v>>1 != gen {
			return false // known already, or stale
		}
		if ep.ready.CompareAndSwap(v, v|1) {
			ep.lost.Store(false)
			return true
		}
	}
}

// succeeded records a call's success as a Ready period (sawReady), when
// gRPC's published state says it can be one. gRPC publishes Ready a moment
// after the first call on a new connection can succeed, so a success seen
// while the state is still Connecting (or TransientFailure, which
// pick_first keeps until Ready) may be from before Ready: counting it would
// turn the watcher's next look at that old state into a loss that did not
// happen. The watcher sees that Ready itself. A success seen in Idle is from
// a connection gone after answering; the watcher may have looked at Idle
// before it was recorded, and then waits for a change that only the next
// call would bring: reconnecting now, as that call would, is the change,
// and the loss is counted at once.
func (ep *endpoint) succeeded(gen uint64) {
	if ep.ready.Load()&1 == 1 {
		return // known: the common case costs one load
	}
	switch ep.conn.GetState() {
	case connectivity.Ready:
		ep.sawReady(gen)
	case connectivity.Idle:
		if ep.sawReady(gen) {
			ep.conn.Connect()
		}
	}
}

// endReady is the watcher's verdict on a state other than Ready, read
// when ep.ready was known. If a Ready period was known then, it ends, and
// ended reports that its loss is to be counted, once. If a call recorded
// one since, the state read is older than that Ready period (the watcher
// waited for a core between the two loads): stale reports that it must
// be read again, and the devices that just connected are not lost.
func (ep *endpoint) endReady(known uint64) (ended, stale bool) {
	if known&1 == 0 {
		return false, ep.ready.Load() != known
	}
	if ep.ready.CompareAndSwap(known, (known>>1+1)<<1) {
		return true, false
	}
	return false, true
}

// probeDone lets events through once the endpoint's shape is known.
func (ep *endpoint) probeDone() { ep.probeOnce.Do(func() { close(ep.probed) }) }

func (c *Client) pinnedTo(ep *endpoint) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ids []string
	for id, e := range c.pins {
		if e == ep {
			ids = append(ids, id)
		}
	}
	return ids
}

// pin chooses the endpoint of a new device: by its conn id, among the
// endpoints that are not failing and did not just lose their connection.
func (c *Client) pin(conn string) *endpoint {
	cands := make([]*endpoint, 0, len(c.eps))
	for _, ep := range c.eps {
		if s := ep.conn.GetState(); s != connectivity.TransientFailure && s != connectivity.Shutdown && !ep.lost.Load() {
			cands = append(cands, ep)
		}
	}
	if len(cands) == 0 {
		cands = c.eps
	}
	ep := cands[pick(conn, len(cands))]
	c.mu.Lock()
	c.pins[conn] = ep
	c.mu.Unlock()
	return ep
}

// pick maps a device to one of n (an endpoint, a routing shard): FNV-1a
// of its id, without the allocations of hash/fnv's interface.
func pick(conn string, n int) int {
	h := uint32(2166136261)
	for i := 0; i < len(conn); i++ {
		h = (h ^ uint32(conn[i])) * 16777619
	}
	return int(h % uint32(n))
}

func (c *Client) pinned(conn string) *endpoint {
	c.mu.Lock()
	ep := c.pins[conn]
	c.mu.Unlock()
	if ep == nil {
		return c.pin(conn)
	}
	return ep
}

// Ready reports whether at least one handler endpoint is connected.
func (c *Client) Ready() bool {
	for _, ep := range c.eps {
		if ep.conn.GetState() == connectivity.Ready {
			return true
		}
	}
	return false
}

// Close stops every endpoint's streams and connection.
func (c *Client) Close() error {
	c.cancel()
	for _, ep := range c.eps {
		ep.resetStreams()
		_ = ep.conn.Close()
	}
	c.wg.Wait()
	if c.actions != nil {
		c.actions.Close()
	}
	return nil
}

// Native reports whether the client serves exgate's native stream, and so
// can Start events without waiting.
func (c *Client) Native() bool { return c.native }

// Start sends an event over the native stream without waiting; call is
// told the handler's answer (channel.AsyncHandler). Only in native mode.
func (c *Client) Start(req proto.Message, call interface{ Done(error) }) interface{ Cancel() } {
	s := &started{c: c, method: methodOf(req), conn: req.(interface{ GetConn() string }).GetConn(), call: call}
	if s.method == "OnSocketCreated" {
		s.ep = c.pin(s.conn) // a new device
	} else {
		s.ep = c.pinned(s.conn)
	}
	s.begin = time.Now()
	s.ep.native.start(s, req)
	return s
}

func (c *Client) OnSocketCreated(ctx context.Context, r *pb.SocketCreatedRequest) error {
	return c.call(ctx, c.pin(r.Conn), "OnSocketCreated", r.Conn, r)
}

func (c *Client) OnReceivedBytes(ctx context.Context, r *pb.ReceivedBytesRequest) error {
	return c.call(ctx, c.pinned(r.Conn), "OnReceivedBytes", r.Conn, r)
}

func (c *Client) OnTimerTimeout(ctx context.Context, r *pb.TimerTimeoutRequest) error {
	return c.call(ctx, c.pinned(r.Conn), "OnTimerTimeout", r.Conn, r)
}

func (c *Client) OnReceivedMessages(ctx context.Context, r *pb.ReceivedMessagesRequest) error {
	return c.call(ctx, c.pinned(r.Conn), "OnReceivedMessages", r.Conn, r)
}

// OnSocketClosed is the device's last event: its pin goes with it.
func (c *Client) OnSocketClosed(ctx context.Context, r *pb.SocketClosedRequest) error {
	err := c.call(ctx, c.pinned(r.Conn), "OnSocketClosed", r.Conn, r)
	c.mu.Lock()
	delete(c.pins, r.Conn)
	c.mu.Unlock()
	return err
}

// streamDesc describes every ConnectionHandler method. The methods are
// client-streaming, but EMQX never read their answer, so handlers exist
// that end a call with status OK and no response message (or with a
// response and more): declaring server streams too lets grpc-go accept
// both, and exgate reads until the end of the stream.
var streamDesc = &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}

// recvEnd reads a ConnectionHandler call's answer to its end: any number
// of responses followed by status OK is success.
func recvEnd(s grpc.ClientStream) error {
	for {
		if err := s.RecvMsg(new(pb.EmptySuccess)); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

func (c *Client) call(ctx context.Context, ep *endpoint, method, conn string, req proto.Message) error {
	full := "/emqx.exproto.v1." + c.service + "/" + method
	var err error
	if c.observe != nil {
		start := time.Now()
		defer func() { c.observe(method, time.Since(start), err) }()
	}
	gen := ep.generation()
	held := method == "OnSocketCreated" && ep.conn.GetState() != connectivity.Ready
	if held {
		// A handler that is (re)connecting gets a moment: a new device
		// waits for it rather than being closed at once (WaitForReady).
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, holdWhileReconnecting)
		defer cancel()
	}
	switch {
	case c.native:
		err = ep.native.call(ctx, method, conn, req)
	case c.service != "ConnectionHandler":
		err = ep.conn.Invoke(ctx, full, req, new(pb.EmptySuccess), callOptions(method)...)
	case c.longLive:
		err = c.sendLong(ctx, ep, ep.long[method], full, conn, req, callOptions(method)...)
	default:
		err = perEvent(ctx, ep.conn, full, req, callOptions(method)...)
	}
	if err != nil && held && status.Code(err) == codes.DeadlineExceeded && ep.conn.GetState() != connectivity.Ready {
		err = status.Error(codes.Unavailable, "handler not connected within "+holdWhileReconnecting.String())
	}
	if err != nil {
		return c.explain(ep, method, err)
	}
	ep.succeeded(gen)
	return nil
}

// callOptions: a new device's OnSocketCreated waits (within its deadline)
// for a handler that is reconnecting, instead of failing at once; later
// events of a device whose handler went away fail at once (the device is
// closed with handler_connection_lost anyway).
func callOptions(method string) []grpc.CallOption {
	if method == "OnSocketCreated" {
		return waitForReady
	}
	return nil
}

var waitForReady = []grpc.CallOption{grpc.WaitForReady(true)}

// holdWhileReconnecting bounds how long a new device waits for a handler
// that is not connected (within the call's own deadline).
const holdWhileReconnecting = 3 * time.Second

// perEvent sends req as a one-message client stream and waits for the answer.
func perEvent(ctx context.Context, conn *grpc.ClientConn, full string, req proto.Message, opts ...grpc.CallOption) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := conn.NewStream(ctx, streamDesc, full, opts...)
	if err != nil {
		return err
	}
	if err := s.SendMsg(req); err != nil {
		// The real error comes with the answer: SendMsg reports io.EOF.
		if rerr := recvEnd(s); rerr != nil || !errors.Is(err, io.EOF) {
			return cmp.Or(rerr, err)
		}
		return nil // the handler ended the call, status OK, before reading: EMQX took that as success too
	}
	if err := s.CloseSend(); err != nil {
		return err
	}
	return recvEnd(s)
}

// longStream is one long-lived client stream, opened on first use and again
// whenever the handler ended or broke it.
//
// Client streaming has no per-message answer, so a message written just as
// the handler ends the stream is lost. Two defences keep that from being
// silent: each endpoint is probed when it connects (probeLong), and a
// handler that ends streams after one message is served per event from the
// start; and when a stream the gateway did not close ends anyway, every
// device that had an event on it is closed (Options.Lost) — its events may
// not all have reached the handler — and the method falls back to
// per_event for good.
type longStream struct {
	perEvent atomic.Bool // the handler ends streams by itself
	// turn is held by the one goroutine that may write to the stream
	// (SendMsg and CloseSend must not run concurrently); waiting for it
	// honours the caller's deadline, and mu is never held across a write.
	turn chan struct{}

	mu      sync.Mutex
	s       grpc.ClientStream
	cancel  context.CancelFunc
	done    chan struct{}       // closed when the current stream ended
	sent    int                 // messages written (or being written) on the current stream
	conns   map[string]struct{} // devices with events on the current stream
	closing bool                // the gateway is half-closing the current stream
}

// sendLong writes req on the stream, reopening it if the handler ended it.
// opts apply to the per-event calls it falls back to.
func (c *Client) sendLong(ctx context.Context, ep *endpoint, l *longStream, full, conn string, req proto.Message, opts ...grpc.CallOption) error {
	select { // the endpoint's shape is known before its first event
	case <-ep.probed:
	default:
		if ep.conn.GetState() == connectivity.Ready {
			select {
			case <-ep.probed:
			case <-ctx.Done():
				return context.Cause(ctx)
			}
		}
	}
	if l.perEvent.Load() {
		return perEvent(ctx, ep.conn, full, req, opts...)
	}
	select {
	case l.turn <- struct{}{}:
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	defer func() { <-l.turn }()
	for attempt := 0; ; attempt++ {
		l.mu.Lock()
		if l.s != nil && closed(l.done) {
			l.drop()
		}
		if l.s == nil {
			sctx, cancel := context.WithCancel(c.ctx)
			s, err := ep.conn.NewStream(sctx, streamDesc, full) // no WaitForReady: sctx has no deadline
			if err != nil {
				l.mu.Unlock()
				cancel()
				return err
			}
			l.s, l.cancel, l.done, l.sent, l.conns, l.closing = s, cancel, make(chan struct{}), 0, map[string]struct{}{}, false
			c.wg.Go(func() { c.receive(ep, l, s, l.done, full) })
		}
		l.conns[conn] = struct{}{}
		l.sent++ // counted before it is written: receive must not miss one in flight
		s, done, cancel := l.s, l.done, l.cancel
		l.mu.Unlock()
		// A write blocked by a handler that stopped reading ends with the
		// call's deadline, and takes the stream with it: the handler is
		// stuck, and the devices on the stream are told so (receive).
		stop := context.AfterFunc(ctx, cancel)
		err := s.SendMsg(req)
		stop()
		if err == nil {
			return nil
		}
		select { // the receiver learns why
		case <-done:
		case <-time.After(time.Second):
		case <-ctx.Done():
		}
		l.mu.Lock()
		if l.s == s {
			l.drop()
		}
		l.mu.Unlock()
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		if attempt == 1 || l.perEvent.Load() {
			if l.perEvent.Load() {
				return perEvent(ctx, ep.conn, full, req, opts...)
			}
			return err
		}
	}
}

// receive waits for stream s to end. An end the gateway did not ask for
// means events may be lost: the devices that had events on it are closed,
// and the method is served per event from then on.
func (c *Client) receive(ep *endpoint, l *longStream, s grpc.ClientStream, done chan struct{}, full string) {
	err := recvEnd(s)
	l.mu.Lock()
	current := l.s == s
	expected := !current || l.closing || c.ctx.Err() != nil
	sent := l.sent
	var ids []string
	if !expected {
		for id := range l.conns {
			ids = append(ids, id)
		}
		clear(l.conns)
	}
	close(done)
	l.mu.Unlock()
	if expected {
		return
	}
	if err != nil {
		_ = c.explain(ep, full[strings.LastIndexByte(full, '/')+1:], err)
	} else if !l.perEvent.Swap(true) {
		c.log.Warn("handler ended a ConnectionHandler stream by itself: "+full+" now uses one stream per event",
			"address", ep.addr, "events_on_stream", sent)
	}
	// Events written after the handler's last read are lost, and a device
	// must not wait for them: close the devices that had any.
	if (err != nil || sent > 1) && len(ids) > 0 && c.lost != nil {
		c.lost(ids, "{shutdown,{error,handler_stream_ended}}")
	}
}

// probeLong learns, before any device's event is at stake, whether the
// endpoint keeps a ConnectionHandler stream open (EMQX 4.x's shape) or ends
// it after each message: it sends one OnSocketClosed for a conn id that no
// device has and waits briefly. A handler that ends the stream is served
// one stream per event, on every method.
func (c *Client) probeLong(ep *endpoint) {
	const full = "/emqx.exproto.v1.ConnectionHandler/OnSocketClosed"
	perEvent, err := func() (bool, error) {
		ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
		defer cancel()
		s, err := ep.conn.NewStream(ctx, streamDesc, full)
		if err != nil {
			return false, err
		}
		ended := make(chan error, 1)
		go func() { ended <- recvEnd(s) }()
		if err := s.SendMsg(&pb.SocketClosedRequest{Conn: probeConn, Reason: "exgate_probe"}); err != nil && !errors.Is(err, io.EOF) {
			return false, err
		}
		select {
		case err := <-ended:
			return err == nil, err
		case <-time.After(probeWait):
		}
		if err := s.CloseSend(); err != nil {
			return false, err
		}
		return false, <-ended
	}()
	switch {
	case err != nil:
		_ = c.explain(ep, "OnSocketClosed", err)
	case perEvent:
		c.log.Warn("handler ends its ConnectionHandler streams after each message: streaming long_lived is served one stream per event",
			"address", ep.addr)
		for _, l := range ep.long {
			l.perEvent.Store(true)
		}
	default:
		c.log.Info("handler keeps ConnectionHandler streams open: streaming long_lived", "address", ep.addr)
	}
}

// probeConn is the conn id of the probe's event: shaped like a conn id, so
// handlers accept it, and never given to a device (those are random).
const probeConn = "exgate-probe-AAAAAAAAAAAAAAAAAAA"

// probeWait is how long a probed handler has to end a stream by itself.
const probeWait = 300 * time.Millisecond

func closed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// drop forgets the current stream. Called with mu held.
func (l *longStream) drop() {
	if l.s != nil {
		l.cancel()
		l.s = nil
	}
}

// close half-closes the stream so the handler sees a clean end, then drops
// it. A writer stuck for a second is not waited for: the stream is dropped.
func (l *longStream) close() {
	select {
	case l.turn <- struct{}{}:
		defer func() { <-l.turn }()
	case <-time.After(time.Second):
		l.mu.Lock()
		l.closing = true
		l.drop()
		l.mu.Unlock()
		return
	}
	l.mu.Lock()
	if l.s == nil {
		l.mu.Unlock()
		return
	}
	l.closing = true
	s, done := l.s, l.done
	l.mu.Unlock()
	if s.CloseSend() == nil {
		select {
		case <-done:
		case <-time.After(time.Second):
		}
	}
	l.mu.Lock()
	if l.s == s {
		l.drop()
	}
	l.mu.Unlock()
}

func (ep *endpoint) resetStreams() {
	for _, l := range ep.long {
		l.close()
	}
}

// explain adds what an operator needs to fix a handler error.
func (c *Client) explain(ep *endpoint, method string, err error) error {
	st := status.Convert(err)
	switch st.Code() {
	case codes.Unimplemented:
		other := "ConnectionHandler"
		switch c.service {
		case "ConnectionHandler":
			other = "ConnectionUnaryHandler"
		case config.Native:
			other = "only EMQX's ConnectionUnaryHandler or ConnectionHandler"
		}
		ep.unimplemented.Do(func() {
			c.log.Warn("handler does not implement the configured service; it may implement "+other+": set gateway.exproto.handler.service_name",
				"address", ep.addr, "service_name", c.service, "method", method)
		})
	case codes.Unavailable:
		ep.unreachable.Do(func() {
			c.log.Warn("handler unreachable", "address", ep.addr, "service_name", c.service, "method", method,
				"error", strings.TrimSpace(st.Message()))
		})
	}
	return fmt.Errorf("%s: %w", method, err)
}
