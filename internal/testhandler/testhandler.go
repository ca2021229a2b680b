// Package testhandler is a real gRPC ExProto handler for tests. It speaks
// the JSON demo protocol of exproto-behaviour.md §5 (one JSON object per
// frame: 1 CONNECT, 2 CONNACK, 3 PUBLISH, 4 PUBACK, 5 SUBSCRIBE, 6 SUBACK,
// 7 UNSUBSCRIBE, 8 UNSUBACK, 9 DISCONNECT, 10 RAW_PUBLISH), serves both
// ConnectionUnaryHandler and ConnectionHandler, records every event per
// connection, and can be told to misbehave.
package testhandler

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/exgate/exgate/exprotopb"
	"github.com/exgate/exgate/nativepb"
	"github.com/exgate/exgate/sdk"
)

// Frame is one JSON demo protocol frame; unused fields are omitted.
type Frame struct {
	Type       int            `json:"type"`
	ClientInfo *ClientInfo    `json:"clientinfo,omitempty"`
	Password   string         `json:"password,omitempty"`
	Keepalive  uint32         `json:"keepalive,omitempty"`
	Code       *int           `json:"code,omitempty"`
	RC         *int           `json:"rc,omitempty"` // the adapter's ResultCode, for tests
	Topic      string         `json:"topic,omitempty"`
	QoS        uint32         `json:"qos,omitempty"`
	Payload    string         `json:"payload,omitempty"`
	Extra      map[string]any `json:"extra,omitempty"`
}

// ClientInfo is CONNECT's client description.
type ClientInfo struct {
	ProtoName string `json:"proto_name"`
	ProtoVer  string `json:"proto_ver"`
	ClientID  string `json:"clientid"`
	Username  string `json:"username"`
}

// Frame types.
const (
	Connect = 1 + iota
	Connack
	Publish
	Puback
	Subscribe
	Suback
	Unsubscribe
	Unsuback
	Disconnect
	RawPublish
)

// Event is one recorded callback.
type Event struct {
	Method   string // OnSocketCreated, OnReceivedBytes, …
	ConnInfo *pb.ConnInfo
	Bytes    []byte
	Messages []*pb.Message
	Reason   string
	At       time.Time
}

// Handler is the test handler. Set the behaviour fields before devices connect.
type Handler struct {
	pb.UnimplementedConnectionUnaryHandlerServer
	// Adapter is the gateway's adapter client; set by Attach.
	Adapter pb.ConnectionAdapterClient

	// Fail makes the named callback return an error (codes.Internal).
	Fail func(method string) bool
	// Hang makes the named callback block until its deadline.
	Hang func(method string) bool
	// OnCreated, if set, runs inside OnSocketCreated before it returns.
	OnCreated func(ctx context.Context, conn string)
	// OnClosed, if set, runs inside OnSocketClosed (after it was recorded)
	// before it returns.
	OnClosed func(conn string)
	// OnBytes and OnMessages, if set, run at the start of those callbacks
	// (to make a handler slow).
	OnBytes, OnMessages func()
	// Echo sends every chunk straight back and records nothing (benchmarks).
	Echo bool
	// ReadOnlyFirst mimics handlers that only read messages[0].
	ReadOnlyFirst bool

	Addr string // the handler's listen address

	srv     *grpc.Server
	adapter *grpc.ClientConn

	mu       sync.Mutex
	native   pb.ConnectionAdapterClient // see NativeAdapter
	Probes   int                        // exgate's long_lived probes seen (under mu)
	inflight map[string]int             // callbacks running per conn
	overlaps int                        // times a callback started while another ran
	events   map[string][]Event
	bufs     map[string][]byte
	order    []string // conn ids in creation order
	notify   chan struct{}
}

// streaming serves ConnectionHandler with the same logic.
type streaming struct {
	pb.UnimplementedConnectionHandlerServer
	h           *Handler
	endAfterOne bool
	noResponse  bool
}

// finish ends a call: with SendAndClose, or (noResponse) with status OK and
// no response message, as handlers written against EMQX (which never read
// the answer) do.
func (s *streaming) finish(send func(*pb.EmptySuccess) error) error {
	if s.noResponse {
		return nil
	}
	return send(&pb.EmptySuccess{})
}

// Start serves the handler on a loopback port until the test ends.
func Start(t testing.TB) *Handler {
	return StartAt(t, "127.0.0.1:0")
}

// StartAt serves the handler on addr (to bring a handler back on the
// address it had).
func StartAt(t testing.TB, addr string) *Handler {
	t.Helper()
	return StartOnly(t, addr, "ConnectionUnaryHandler", "ConnectionHandler", Native)
}

// StartOnly serves only the named services on addr.
func StartOnly(t testing.TB, addr string, services ...string) *Handler {
	t.Helper()
	return StartWith(t, Options{Addr: addr, Services: services})
}

// Service kinds beyond EMQX's two, for compatibility tests.
const (
	// Native is exgate.v1.Handler, exgate's batched stream.
	Native = "exgate.v1.Handler"
	// UnaryEraConnectionHandler is ConnectionHandler with unary methods, as
	// handlers generated from the 2021 proto declare it.
	UnaryEraConnectionHandler = "UnaryEraConnectionHandler"
	// OddResponses is ConnectionUnaryHandler answering CodeResponse instead
	// of EmptySuccess, as sloppy handlers do.
	OddResponses = "OddResponses"
)

// Options configure StartWith.
type Options struct {
	Addr     string   // default 127.0.0.1:0
	Services []string // default ConnectionUnaryHandler, ConnectionHandler and Native
	TLS      *tls.Config
	// EndStreams makes ConnectionHandler end every stream after its first
	// message, as some long-lived-era handlers do.
	EndStreams bool
	// NoResponse makes ConnectionHandler end its calls without a response
	// message (no SendAndClose), as a 2022-era Go example does.
	NoResponse bool
	// AttachTo connects the handler to the gateway's adapter at this
	// address before it serves, so no callback finds it unattached (a
	// handler restarted under load).
	AttachTo string
}

// StartWith serves a handler as o says until the test ends.
func StartWith(t testing.TB, o Options) *Handler {
	t.Helper()
	if o.Addr == "" {
		o.Addr = "127.0.0.1:0"
	}
	if len(o.Services) == 0 {
		o.Services = []string{"ConnectionUnaryHandler", "ConnectionHandler", Native}
	}
	var ln net.Listener
	var err error
	for i := 0; i < 50; i++ { // the old server's port may take a moment to free
		if ln, err = net.Listen("tcp", o.Addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	h := &Handler{Addr: ln.Addr().String(), events: map[string][]Event{}, bufs: map[string][]byte{},
		inflight: map[string]int{}, notify: make(chan struct{})}
	var opts []grpc.ServerOption
	if o.TLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(o.TLS)))
	}
	h.srv = grpc.NewServer(opts...)
	for _, svc := range o.Services {
		switch svc {
		case "ConnectionUnaryHandler":
			pb.RegisterConnectionUnaryHandlerServer(h.srv, h)
		case "ConnectionHandler":
			pb.RegisterConnectionHandlerServer(h.srv, &streaming{h: h, endAfterOne: o.EndStreams, noResponse: o.NoResponse})
		case Native:
			nativepb.RegisterHandlerServer(h.srv, sdk.Native(h))
		case UnaryEraConnectionHandler:
			h.srv.RegisterService(unaryDesc("emqx.exproto.v1.ConnectionHandler", false), h)
		case OddResponses:
			h.srv.RegisterService(unaryDesc("emqx.exproto.v1.ConnectionUnaryHandler", true), h)
		}
	}
	if o.AttachTo != "" {
		h.Attach(t, o.AttachTo)
	}
	go func() { _ = h.srv.Serve(ln) }()
	t.Cleanup(h.Stop)
	return h
}

// Serve serves what register adds to a fresh gRPC server on a loopback
// port until the test ends, and returns the port's address: for a test's
// own service (a hand-written native handler, a node).
func Serve(t testing.TB, register func(*grpc.Server)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	register(srv)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return ln.Addr().String()
}

// unaryDesc describes a service of the five callbacks as unary methods
// served by Handler; odd answers CodeResponse instead of EmptySuccess.
func unaryDesc(name string, odd bool) *grpc.ServiceDesc {
	method := func(mname string, newReq func() proto.Message, call func(h *Handler, ctx context.Context, req proto.Message) error) grpc.MethodDesc {
		return grpc.MethodDesc{MethodName: mname, Handler: func(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			req := newReq()
			if err := dec(req); err != nil {
				return nil, err
			}
			if err := call(srv.(*Handler), ctx, req); err != nil {
				return nil, err
			}
			if odd {
				return &pb.CodeResponse{Code: pb.ResultCode_REQUIRED_PARAMS_MISSED, Message: "unexpected but harmless"}, nil
			}
			return &pb.EmptySuccess{}, nil
		}}
	}
	return &grpc.ServiceDesc{
		ServiceName: name,
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{
			method("OnSocketCreated", func() proto.Message { return new(pb.SocketCreatedRequest) }, func(h *Handler, ctx context.Context, r proto.Message) error {
				_, err := h.OnSocketCreated(ctx, r.(*pb.SocketCreatedRequest))
				return err
			}),
			method("OnSocketClosed", func() proto.Message { return new(pb.SocketClosedRequest) }, func(h *Handler, ctx context.Context, r proto.Message) error {
				_, err := h.OnSocketClosed(ctx, r.(*pb.SocketClosedRequest))
				return err
			}),
			method("OnReceivedBytes", func() proto.Message { return new(pb.ReceivedBytesRequest) }, func(h *Handler, ctx context.Context, r proto.Message) error {
				_, err := h.OnReceivedBytes(ctx, r.(*pb.ReceivedBytesRequest))
				return err
			}),
			method("OnTimerTimeout", func() proto.Message { return new(pb.TimerTimeoutRequest) }, func(h *Handler, ctx context.Context, r proto.Message) error {
				_, err := h.OnTimerTimeout(ctx, r.(*pb.TimerTimeoutRequest))
				return err
			}),
			method("OnReceivedMessages", func() proto.Message { return new(pb.ReceivedMessagesRequest) }, func(h *Handler, ctx context.Context, r proto.Message) error {
				_, err := h.OnReceivedMessages(ctx, r.(*pb.ReceivedMessagesRequest))
				return err
			}),
		},
	}
}

// Stop stops serving (idempotent).
func (h *Handler) Stop() {
	h.srv.Stop()
	if h.adapter != nil {
		_ = h.adapter.Close()
	}
}

// Attach connects the handler to the gateway's adapter at addr.
func (h *Handler) Attach(t testing.TB, addr string) {
	t.Helper()
	h.attach(t, addr, insecure.NewCredentials())
}

// AttachToken is Attach sending "authorization: Bearer <token>".
func (h *Handler) AttachToken(t testing.TB, addr, token string) {
	t.Helper()
	h.attach(t, addr, insecure.NewCredentials(), grpc.WithPerRPCCredentials(bearer(token)))
}

// bearer sends a token on every call, also over plain HTTP/2.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}
func (bearer) RequireTransportSecurity() bool { return false }

// AttachTLS is Attach over TLS.
func (h *Handler) AttachTLS(t testing.TB, addr string, tc *tls.Config) {
	t.Helper()
	h.attach(t, addr, credentials.NewTLS(tc))
}

func (h *Handler) attach(t testing.TB, addr string, creds credentials.TransportCredentials, opts ...grpc.DialOption) {
	if h.adapter != nil {
		_ = h.adapter.Close()
	}
	cc, err := grpc.NewClient(addr, append(opts, grpc.WithTransportCredentials(creds))...)
	if err != nil {
		t.Fatal(err)
	}
	h.adapter = cc
	h.Adapter = pb.NewConnectionAdapterClient(cc)
}

// adapterOf is where a callback's calls go: back over the native stream its
// event came on, or to the gateway's adapter.
func (h *Handler) adapterOf(ctx context.Context) pb.ConnectionAdapterClient {
	return sdk.AdapterFrom(ctx, h.Adapter)
}

// NativeAdapter is the adapter over the native stream of the last event
// that came on one (nil if none did): tests call the gateway through it
// from outside a callback.
func (h *Handler) NativeAdapter() pb.ConnectionAdapterClient {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.native
}

// enter marks a callback for conn as running; the returned func ends it.
func (h *Handler) enter(conn string) func() {
	h.mu.Lock()
	h.inflight[conn]++
	if h.inflight[conn] > 1 {
		h.overlaps++
	}
	h.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			h.mu.Lock()
			h.inflight[conn]--
			h.mu.Unlock()
		})
	}
}

// Overlaps counts callbacks that started while another one for the same
// conn was still running: the gateway must keep it at zero.
func (h *Handler) Overlaps() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.overlaps
}

func (h *Handler) record(conn string, e Event) {
	e.At = time.Now()
	h.mu.Lock()
	if _, ok := h.events[conn]; !ok {
		h.order = append(h.order, conn)
	}
	h.events[conn] = append(h.events[conn], e)
	close(h.notify)
	h.notify = make(chan struct{})
	h.mu.Unlock()
}

// HoldFirstDelivery makes the first OnReceivedMessages wait until release
// is called, so that later deliveries queue up behind it.
func (h *Handler) HoldFirstDelivery() (release func()) {
	gate := make(chan struct{})
	var once sync.Once
	var passed atomic.Bool
	h.OnMessages = func() {
		if !passed.Swap(true) {
			<-gate
		}
	}
	return func() { once.Do(func() { close(gate) }) }
}

// Events returns a copy of conn's events.
func (h *Handler) Events(conn string) []Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Event(nil), h.events[conn]...)
}

// Conns returns the conn ids seen, in order of their first event.
func (h *Handler) Conns() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.order...)
}

// WaitFor waits until cond holds, re-checking on every event; it fails the
// test after timeout.
func (h *Handler) WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		h.mu.Lock()
		ch := h.notify
		h.mu.Unlock()
		if cond() {
			return
		}
		select {
		case <-ch:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
	}
}

// Closed returns conn's OnSocketClosed reason, if it came.
func (h *Handler) Closed(conn string) (string, bool) {
	for _, e := range h.Events(conn) {
		if e.Method == "OnSocketClosed" {
			return e.Reason, true
		}
	}
	return "", false
}

// WaitClosed waits for conn's OnSocketClosed and returns its reason.
func (h *Handler) WaitClosed(t testing.TB, conn string, timeout time.Duration) string {
	t.Helper()
	h.WaitFor(t, timeout, "OnSocketClosed of "+conn, func() bool { _, ok := h.Closed(conn); return ok })
	r, _ := h.Closed(conn)
	return r
}

// NthConn waits for a new connection beyond the n already seen and returns its id.
func (h *Handler) NthConn(t testing.TB, n int, timeout time.Duration) string {
	t.Helper()
	h.WaitFor(t, timeout, "connection", func() bool { return len(h.Conns()) > n })
	return h.Conns()[n]
}

// behave applies Fail and Hang. A hung call no longer counts as in flight:
// the gateway gives up on it at its deadline and moves on.
func (h *Handler) behave(ctx context.Context, method string, leave func()) error {
	if h.Hang != nil && h.Hang(method) {
		leave()
		<-ctx.Done()
		return ctx.Err()
	}
	if h.Fail != nil && h.Fail(method) {
		return status.Error(codes.Internal, "test handler fails "+method)
	}
	return nil
}

func (h *Handler) OnSocketCreated(ctx context.Context, r *pb.SocketCreatedRequest) (*pb.EmptySuccess, error) {
	leave := h.enter(r.Conn)
	defer leave()
	if a := sdk.AdapterFrom(ctx, nil); a != nil {
		h.mu.Lock()
		h.native = a
		h.mu.Unlock()
	}
	h.record(r.Conn, Event{Method: "OnSocketCreated", ConnInfo: r.Conninfo})
	if err := h.behave(ctx, "OnSocketCreated", leave); err != nil {
		return nil, err
	}
	if h.OnCreated != nil {
		h.OnCreated(ctx, r.Conn)
	}
	return &pb.EmptySuccess{}, nil
}

func (h *Handler) OnSocketClosed(ctx context.Context, r *pb.SocketClosedRequest) (*pb.EmptySuccess, error) {
	if strings.HasPrefix(r.Conn, "exgate-probe") {
		// exgate's long_lived probe: no device of ours, as a real handler
		// would find (docs/handlers.md).
		h.mu.Lock()
		h.Probes++
		h.mu.Unlock()
		return &pb.EmptySuccess{}, nil
	}
	leave := h.enter(r.Conn)
	defer leave()
	h.record(r.Conn, Event{Method: "OnSocketClosed", Reason: r.Reason})
	h.mu.Lock()
	delete(h.bufs, r.Conn)
	h.mu.Unlock()
	if h.OnClosed != nil {
		h.OnClosed(r.Conn)
	}
	return &pb.EmptySuccess{}, h.behave(ctx, "OnSocketClosed", leave)
}

func (h *Handler) OnTimerTimeout(ctx context.Context, r *pb.TimerTimeoutRequest) (*pb.EmptySuccess, error) {
	leave := h.enter(r.Conn)
	defer leave()
	h.record(r.Conn, Event{Method: "OnTimerTimeout"})
	if err := h.behave(ctx, "OnTimerTimeout", leave); err != nil {
		return nil, err
	}
	_, _ = h.adapterOf(ctx).Close(ctx, &pb.CloseSocketRequest{Conn: r.Conn})
	return &pb.EmptySuccess{}, nil
}

func (h *Handler) OnReceivedMessages(ctx context.Context, r *pb.ReceivedMessagesRequest) (*pb.EmptySuccess, error) {
	leave := h.enter(r.Conn)
	defer leave()
	h.record(r.Conn, Event{Method: "OnReceivedMessages", Messages: r.Messages})
	if h.OnMessages != nil {
		h.OnMessages()
	}
	if err := h.behave(ctx, "OnReceivedMessages", leave); err != nil {
		return nil, err
	}
	msgs := r.Messages
	if h.ReadOnlyFirst && len(msgs) > 1 {
		msgs = msgs[:1]
	}
	for _, m := range msgs {
		h.send(ctx, r.Conn, Frame{Type: Publish, Topic: m.Topic, QoS: m.Qos, Payload: string(m.Payload),
			Extra: map[string]any{"from": m.From, "id": m.Id, "node": m.Node, "timestamp": m.Timestamp}})
	}
	return &pb.EmptySuccess{}, nil
}

func (h *Handler) OnReceivedBytes(ctx context.Context, r *pb.ReceivedBytesRequest) (*pb.EmptySuccess, error) {
	if h.Echo {
		_, err := h.adapterOf(ctx).Send(ctx, &pb.SendBytesRequest{Conn: r.Conn, Bytes: r.Bytes})
		return &pb.EmptySuccess{}, err
	}
	leave := h.enter(r.Conn)
	defer leave()
	h.record(r.Conn, Event{Method: "OnReceivedBytes", Bytes: r.Bytes})
	if h.OnBytes != nil {
		h.OnBytes()
	}
	if err := h.behave(ctx, "OnReceivedBytes", leave); err != nil {
		return nil, err
	}
	h.mu.Lock()
	buf := append(h.bufs[r.Conn], r.Bytes...)
	var frames []Frame
	dec := json.NewDecoder(bytes.NewReader(buf))
	consumed := 0
	for {
		var f Frame
		if err := dec.Decode(&f); err != nil {
			break // a partial frame waits for the next chunk
		}
		frames = append(frames, f)
		consumed = int(dec.InputOffset())
	}
	h.bufs[r.Conn] = append([]byte(nil), buf[consumed:]...)
	h.mu.Unlock()
	for _, f := range frames {
		h.frame(ctx, r.Conn, f)
	}
	return &pb.EmptySuccess{}, nil
}

func ack(typ int, resp *pb.CodeResponse, err error) Frame {
	code, rc := 0, int(resp.GetCode())
	if err != nil {
		rc = -1
	}
	if rc != 0 {
		code = 1
	}
	return Frame{Type: typ, Code: &code, RC: &rc}
}

// frame runs one device frame against the adapter, as EMQX's demo handler did.
func (h *Handler) frame(ctx context.Context, conn string, f Frame) {
	a := h.adapterOf(ctx)
	switch f.Type {
	case Connect:
		ci := &pb.ClientInfo{}
		if f.ClientInfo != nil {
			ci = &pb.ClientInfo{ProtoName: f.ClientInfo.ProtoName, ProtoVer: f.ClientInfo.ProtoVer, Clientid: f.ClientInfo.ClientID, Username: f.ClientInfo.Username}
		}
		resp, err := a.Authenticate(ctx, &pb.AuthenticateRequest{Conn: conn, Clientinfo: ci, Password: f.Password})
		if err == nil && resp.Code == pb.ResultCode_SUCCESS && f.Keepalive > 0 {
			_, _ = a.StartTimer(ctx, &pb.TimerRequest{Conn: conn, Type: pb.TimerType_KEEPALIVE, Interval: f.Keepalive})
		}
		h.send(ctx, conn, ack(Connack, resp, err))
		if err != nil || resp.Code != pb.ResultCode_SUCCESS {
			_, _ = a.Close(ctx, &pb.CloseSocketRequest{Conn: conn})
		}
	case Publish:
		resp, err := a.Publish(ctx, &pb.PublishRequest{Conn: conn, Topic: f.Topic, Qos: f.QoS, Payload: []byte(f.Payload)})
		h.send(ctx, conn, ack(Puback, resp, err))
	case RawPublish:
		resp, err := a.RawPublish(ctx, &pb.RawPublishRequest{Topic: f.Topic, Qos: f.QoS, Payload: []byte(f.Payload)})
		h.send(ctx, conn, ack(Puback, resp, err))
	case Subscribe:
		resp, err := a.Subscribe(ctx, &pb.SubscribeRequest{Conn: conn, Topic: f.Topic, Qos: f.QoS})
		h.send(ctx, conn, ack(Suback, resp, err))
	case Unsubscribe:
		resp, err := a.Unsubscribe(ctx, &pb.UnsubscribeRequest{Conn: conn, Topic: f.Topic})
		h.send(ctx, conn, ack(Unsuback, resp, err))
	case Disconnect:
		_, _ = a.Close(ctx, &pb.CloseSocketRequest{Conn: conn})
	}
}

func (h *Handler) send(ctx context.Context, conn string, f Frame) {
	b, _ := json.Marshal(f)
	_, _ = h.adapterOf(ctx).Send(ctx, &pb.SendBytesRequest{Conn: conn, Bytes: b})
}

// recvAll drains a one-message-or-more client stream into fn; with
// endAfterOne it returns after the first message.
func recvAll[T any](recv func() (*T, error), fn func(*T) error, endAfterOne ...bool) error {
	for {
		m, err := recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := fn(m); err != nil {
			return err
		}
		if len(endAfterOne) > 0 && endAfterOne[0] {
			return nil
		}
	}
}

func (s *streaming) OnSocketCreated(st pb.ConnectionHandler_OnSocketCreatedServer) error {
	if err := recvAll(st.Recv, func(r *pb.SocketCreatedRequest) error { _, err := s.h.OnSocketCreated(st.Context(), r); return err }, s.endAfterOne); err != nil {
		return err
	}
	return s.finish(st.SendAndClose)
}

func (s *streaming) OnSocketClosed(st pb.ConnectionHandler_OnSocketClosedServer) error {
	if err := recvAll(st.Recv, func(r *pb.SocketClosedRequest) error { _, err := s.h.OnSocketClosed(st.Context(), r); return err }, s.endAfterOne); err != nil {
		return err
	}
	return s.finish(st.SendAndClose)
}

func (s *streaming) OnReceivedBytes(st pb.ConnectionHandler_OnReceivedBytesServer) error {
	if err := recvAll(st.Recv, func(r *pb.ReceivedBytesRequest) error { _, err := s.h.OnReceivedBytes(st.Context(), r); return err }, s.endAfterOne); err != nil {
		return err
	}
	return s.finish(st.SendAndClose)
}

func (s *streaming) OnTimerTimeout(st pb.ConnectionHandler_OnTimerTimeoutServer) error {
	if err := recvAll(st.Recv, func(r *pb.TimerTimeoutRequest) error { _, err := s.h.OnTimerTimeout(st.Context(), r); return err }, s.endAfterOne); err != nil {
		return err
	}
	return s.finish(st.SendAndClose)
}

func (s *streaming) OnReceivedMessages(st pb.ConnectionHandler_OnReceivedMessagesServer) error {
	if err := recvAll(st.Recv, func(r *pb.ReceivedMessagesRequest) error {
		_, err := s.h.OnReceivedMessages(st.Context(), r)
		return err
	}, s.endAfterOne); err != nil {
		return err
	}
	return s.finish(st.SendAndClose)
}
