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
	"context"
	"fmt"
	"hash/fnv"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/exgate/exgate/exprotopb"
	"github.com/exgate/exgate/internal/config"
	"github.com/exgate/exgate/internal/tlsconfig"
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
}

// Client calls the handler. It implements channel.Handler and is safe for
// concurrent use.
type Client struct {
	service  string // ConnectionUnaryHandler or ConnectionHandler
	longLive bool
	log      *slog.Logger
	lost     func([]string, string)
	observe  func(string, time.Duration, error)
	eps      []*endpoint

	mu   sync.Mutex
	pins map[string]*endpoint // conn id → endpoint, from OnSocketCreated to OnSocketClosed

	ctx    context.Context // ends with Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // state watchers
}

// endpoint is one handler address.
type endpoint struct {
	addr string // as configured, for logs
	conn *grpc.ClientConn
	long map[string]*longStream // long_lived: one per method
	// Each hint is logged at most every 5 s: a dead handler fails every
	// device's every event, and the log must stay readable.
	unreachable, unimplemented rate.Sometimes
}

// New creates the client and starts connecting to every endpoint.
func New(o Options) (*Client, error) {
	h := o.Config
	c := &Client{service: h.ServiceName, longLive: h.ServiceName == "ConnectionHandler" && h.Streaming == "long_lived",
		log: o.Logger, lost: o.Lost, observe: o.Observe, pins: map[string]*endpoint{}}
	c.ctx, c.cancel = context.WithCancel(context.Background())
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
			grpc.WithIdleTimeout(0)) // an idle channel must not look like a lost handler
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("handler %s: %w", addr, err)
		}
		ep := &endpoint{addr: addr, conn: conn, long: map[string]*longStream{},
			unreachable: rate.Sometimes{Interval: 5 * time.Second}, unimplemented: rate.Sometimes{Interval: 5 * time.Second}}
		for _, m := range methods {
			ep.long[m] = &longStream{}
		}
		c.eps = append(c.eps, ep)
		conn.Connect()
		c.wg.Go(func() { c.watch(ep) })
	}
	return c, nil
}

var methods = []string{"OnSocketCreated", "OnReceivedBytes", "OnTimerTimeout", "OnReceivedMessages", "OnSocketClosed"}

// watch reports the devices pinned to ep when its connection, once ready,
// is lost.
func (c *Client) watch(ep *endpoint) {
	state := ep.conn.GetState()
	for ep.conn.WaitForStateChange(c.ctx, state) {
		next := ep.conn.GetState()
		if state == connectivity.Ready && next != connectivity.Ready && next != connectivity.Shutdown {
			ids := c.pinnedTo(ep)
			c.log.Warn("handler connection lost; closing its devices", "address", ep.addr, "devices", len(ids))
			if c.lost != nil && len(ids) > 0 {
				c.lost(ids, "{shutdown,{error,handler_connection_lost}}")
			}
			ep.resetStreams()
		}
		state = next
	}
}

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
// endpoints that are not failing.
func (c *Client) pin(conn string) *endpoint {
	cands := make([]*endpoint, 0, len(c.eps))
	for _, ep := range c.eps {
		if s := ep.conn.GetState(); s != connectivity.TransientFailure && s != connectivity.Shutdown {
			cands = append(cands, ep)
		}
	}
	if len(cands) == 0 {
		cands = c.eps
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(conn))
	ep := cands[int(h.Sum32()%uint32(len(cands)))]
	c.mu.Lock()
	c.pins[conn] = ep
	c.mu.Unlock()
	return ep
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
	return nil
}

func (c *Client) OnSocketCreated(ctx context.Context, r *pb.SocketCreatedRequest) error {
	return c.call(ctx, c.pin(r.Conn), "OnSocketCreated", r)
}

func (c *Client) OnReceivedBytes(ctx context.Context, r *pb.ReceivedBytesRequest) error {
	return c.call(ctx, c.pinned(r.Conn), "OnReceivedBytes", r)
}

func (c *Client) OnTimerTimeout(ctx context.Context, r *pb.TimerTimeoutRequest) error {
	return c.call(ctx, c.pinned(r.Conn), "OnTimerTimeout", r)
}

func (c *Client) OnReceivedMessages(ctx context.Context, r *pb.ReceivedMessagesRequest) error {
	return c.call(ctx, c.pinned(r.Conn), "OnReceivedMessages", r)
}

// OnSocketClosed is the device's last event: its pin goes with it.
func (c *Client) OnSocketClosed(ctx context.Context, r *pb.SocketClosedRequest) error {
	err := c.call(ctx, c.pinned(r.Conn), "OnSocketClosed", r)
	c.mu.Lock()
	delete(c.pins, r.Conn)
	c.mu.Unlock()
	return err
}

// streamDesc describes every ConnectionHandler method: client-streaming.
var streamDesc = &grpc.StreamDesc{ClientStreams: true}

func (c *Client) call(ctx context.Context, ep *endpoint, method string, req proto.Message) error {
	full := "/emqx.exproto.v1." + c.service + "/" + method
	var err error
	if c.observe != nil {
		start := time.Now()
		defer func() { c.observe(method, time.Since(start), err) }()
	}
	switch {
	case c.service != "ConnectionHandler":
		err = ep.conn.Invoke(ctx, full, req, new(pb.EmptySuccess))
	case c.longLive:
		err = c.sendLong(ctx, ep, ep.long[method], full, req)
	default:
		err = perEvent(ctx, ep.conn, full, req)
	}
	if err != nil {
		return c.explain(ep, method, err)
	}
	return nil
}

// perEvent sends req as a one-message client stream and waits for the answer.
func perEvent(ctx context.Context, conn *grpc.ClientConn, full string, req proto.Message) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := conn.NewStream(ctx, streamDesc, full)
	if err != nil {
		return err
	}
	if err := s.SendMsg(req); err != nil {
		// The real error comes with RecvMsg.
		if rerr := s.RecvMsg(new(pb.EmptySuccess)); rerr != nil {
			return rerr
		}
		return err
	}
	if err := s.CloseSend(); err != nil {
		return err
	}
	return s.RecvMsg(new(pb.EmptySuccess))
}

// longStream is one long-lived client stream, opened on first use and again
// whenever the handler ended or broke it.
//
// Client streaming has no per-message answer, so a message written just as
// the handler ends the stream is lost. Some handlers end every stream after
// its first message; once a stream ends that way, the method falls back to
// per_event for good, which never loses a message.
type longStream struct {
	perEvent atomic.Bool // the handler ends streams after one message

	mu     sync.Mutex
	s      grpc.ClientStream
	cancel context.CancelFunc
	done   chan struct{} // closed when the handler ended the current stream
	sent   atomic.Int32  // messages written on the current stream
}

// send writes req on the stream, reopening it if the handler ended it.
func (c *Client) sendLong(ctx context.Context, ep *endpoint, l *longStream, full string, req proto.Message) error {
	if l.perEvent.Load() {
		return perEvent(ctx, ep.conn, full, req)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for attempt := 0; ; attempt++ {
		if l.s != nil && closed(l.done) {
			l.drop()
		}
		if l.s == nil {
			sctx, cancel := context.WithCancel(c.ctx)
			s, err := ep.conn.NewStream(sctx, streamDesc, full)
			if err != nil {
				cancel()
				return err
			}
			l.s, l.cancel, l.done = s, cancel, make(chan struct{})
			l.sent.Store(0)
			c.wg.Go(func() { c.receive(ep, l, s, l.done, full) })
		}
		err := l.s.SendMsg(req)
		if err == nil {
			l.sent.Add(1)
			return nil
		}
		select { // the receiver learns why
		case <-l.done:
		case <-time.After(time.Second):
		}
		l.drop()
		if attempt == 1 || l.perEvent.Load() {
			if l.perEvent.Load() {
				return perEvent(ctx, ep.conn, full, req)
			}
			return err
		}
	}
}

// receive waits for the handler to end stream s; a clean end after one
// message switches the method to per_event.
func (c *Client) receive(ep *endpoint, l *longStream, s grpc.ClientStream, done chan struct{}, full string) {
	err := s.RecvMsg(new(pb.EmptySuccess))
	if err == nil && l.sent.Load() == 1 && !l.perEvent.Swap(true) {
		c.log.Warn("handler ends its ConnectionHandler streams after one message: using one stream per event for "+full,
			"address", ep.addr)
	}
	close(done)
}

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

// close half-closes the stream so the handler sees a clean end, then drops it.
func (l *longStream) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.s == nil {
		return
	}
	if l.s.CloseSend() == nil {
		select {
		case <-l.done:
		case <-time.After(time.Second):
		}
	}
	l.drop()
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
		if c.service == "ConnectionHandler" {
			other = "ConnectionUnaryHandler"
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
