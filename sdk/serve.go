package sdk

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"

	"google.golang.org/grpc"

	pb "github.com/exgate/exgate/exprotopb"
	"github.com/exgate/exgate/internal/pbcodec"
	"github.com/exgate/exgate/nativepb"
)

// Handler is a protocol handler; S is its per-connection state. A returned
// error closes that device ({shutdown,{error,{on_…,unknown}}}).
type Handler[S any] interface {
	OnSocketCreated(ctx context.Context, c *Conn[S]) error
	OnReceivedBytes(ctx context.Context, c *Conn[S], b []byte) error
	OnTimerTimeout(ctx context.Context, c *Conn[S]) error
	// OnReceivedMessages carries a batch: handle every message, not only
	// the first.
	OnReceivedMessages(ctx context.Context, c *Conn[S], msgs []*pb.Message) error
	OnSocketClosed(ctx context.Context, c *Conn[S], reason string) error
}

// Server serves one Handler as ConnectionUnaryHandler and ConnectionHandler.
type Server[S any] struct {
	h      Handler[S]
	client *Client
	srv    *grpc.Server

	mu    sync.Mutex
	conns map[string]*Conn[S]
}

// NewServer makes a server calling the gateway back through client; opts
// go to grpc.NewServer (e.g. grpc.Creds for TLS), after ServerOptions.
func NewServer[S any](h Handler[S], client *Client, opts ...grpc.ServerOption) *Server[S] {
	s := &Server[S]{h: h, client: client, srv: grpc.NewServer(ServerOptions(opts...)...), conns: map[string]*Conn[S]{}}
	pb.RegisterConnectionUnaryHandlerServer(s.srv, unary[S]{s: s})
	pb.RegisterConnectionHandlerServer(s.srv, streaming[S]{s: s})
	nativepb.RegisterHandlerServer(s.srv, Native(unary[S]{s: s}))
	return s
}

// ServerOptions returns the gRPC server options a handler serving exgate
// should use, followed by opts (which may override them): fixed
// flow-control windows of 1 MiB per stream and 4 MiB per connection.
// gRPC's default estimates the windows with a ping per round trip for as
// long as data flows, which on a busy handler connection never stops: an
// extra frame each way. And a codec that encodes and decodes exgate's
// messages with generated code instead of protobuf-go's reflection (the
// same bytes on the wire; a native stream's handler spent ~15 % less CPU
// per echo): it serves every service of the server, other messages through
// protobuf-go, so a server that negotiates other codecs by content type
// must leave it out. A handler serving with its own grpc.NewServer passes
// these (examples/jsondemo does).
func ServerOptions(opts ...grpc.ServerOption) []grpc.ServerOption {
	return append([]grpc.ServerOption{grpc.InitialWindowSize(1 << 20), grpc.InitialConnWindowSize(4 << 20), pbcodec.ServerOption()}, opts...)
}

// Serve answers on ln until Shutdown.
func (s *Server[S]) Serve(ln net.Listener) error {
	if err := s.srv.Serve(ln); !errors.Is(err, grpc.ErrServerStopped) {
		return err
	}
	return nil
}

// Shutdown lets calls in flight finish (until ctx ends), then stops.
func (s *Server[S]) Shutdown(ctx context.Context) {
	done := make(chan struct{})
	go func() { s.srv.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		s.srv.Stop()
	}
}

// conn returns the Conn of id, making it at OnSocketCreated (or when a
// handler restarted and sees a connection it never knew). Its calls go
// where ctx's event came from: the adapter, or a native stream.
func (s *Server[S]) conn(ctx context.Context, id string, info *pb.ConnInfo) *Conn[S] {
	var fallback pb.ConnectionAdapterClient
	if s.client != nil {
		fallback = s.client.adapter
	}
	ad := AdapterFrom(ctx, fallback)
	s.mu.Lock()
	c, ok := s.conns[id]
	if !ok {
		c = &Conn[S]{ID: id, Info: info}
		s.conns[id] = c
	}
	s.mu.Unlock()
	if b := c.ad.Load(); b == nil || b.ConnectionAdapterClient != ad {
		c.ad.Store(&adapterBox{ad})
	}
	return c
}

func (s *Server[S]) forget(id string) {
	s.mu.Lock()
	delete(s.conns, id)
	s.mu.Unlock()
}

func (s *Server[S]) created(ctx context.Context, r *pb.SocketCreatedRequest) error {
	return s.h.OnSocketCreated(ctx, s.conn(ctx, r.Conn, r.Conninfo))
}

func (s *Server[S]) bytes(ctx context.Context, r *pb.ReceivedBytesRequest) error {
	return s.h.OnReceivedBytes(ctx, s.conn(ctx, r.Conn, nil), r.Bytes)
}

func (s *Server[S]) timeout(ctx context.Context, r *pb.TimerTimeoutRequest) error {
	return s.h.OnTimerTimeout(ctx, s.conn(ctx, r.Conn, nil))
}

func (s *Server[S]) messages(ctx context.Context, r *pb.ReceivedMessagesRequest) error {
	return s.h.OnReceivedMessages(ctx, s.conn(ctx, r.Conn, nil), r.Messages)
}

func (s *Server[S]) closed(ctx context.Context, r *pb.SocketClosedRequest) error {
	defer s.forget(r.Conn)
	return s.h.OnSocketClosed(ctx, s.conn(ctx, r.Conn, nil), r.Reason)
}

type unary[S any] struct {
	pb.UnimplementedConnectionUnaryHandlerServer
	s *Server[S]
}

var ok = &pb.EmptySuccess{}

func (u unary[S]) OnSocketCreated(ctx context.Context, r *pb.SocketCreatedRequest) (*pb.EmptySuccess, error) {
	return ok, u.s.created(ctx, r)
}
func (u unary[S]) OnReceivedBytes(ctx context.Context, r *pb.ReceivedBytesRequest) (*pb.EmptySuccess, error) {
	return ok, u.s.bytes(ctx, r)
}
func (u unary[S]) OnTimerTimeout(ctx context.Context, r *pb.TimerTimeoutRequest) (*pb.EmptySuccess, error) {
	return ok, u.s.timeout(ctx, r)
}
func (u unary[S]) OnReceivedMessages(ctx context.Context, r *pb.ReceivedMessagesRequest) (*pb.EmptySuccess, error) {
	return ok, u.s.messages(ctx, r)
}
func (u unary[S]) OnSocketClosed(ctx context.Context, r *pb.SocketClosedRequest) (*pb.EmptySuccess, error) {
	return ok, u.s.closed(ctx, r)
}

// streaming serves ConnectionHandler: every message of a stream is one
// event, whether the gateway sends one per stream or keeps streams open.
type streaming[S any] struct {
	pb.UnimplementedConnectionHandlerServer
	s *Server[S]
}

func each[T any](recv func() (*T, error), do func(*T) error) error {
	for {
		m, err := recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := do(m); err != nil {
			return err
		}
	}
}

func (st streaming[S]) OnSocketCreated(s pb.ConnectionHandler_OnSocketCreatedServer) error {
	if err := each(s.Recv, func(r *pb.SocketCreatedRequest) error { return st.s.created(s.Context(), r) }); err != nil {
		return err
	}
	return s.SendAndClose(ok)
}
func (st streaming[S]) OnReceivedBytes(s pb.ConnectionHandler_OnReceivedBytesServer) error {
	if err := each(s.Recv, func(r *pb.ReceivedBytesRequest) error { return st.s.bytes(s.Context(), r) }); err != nil {
		return err
	}
	return s.SendAndClose(ok)
}
func (st streaming[S]) OnTimerTimeout(s pb.ConnectionHandler_OnTimerTimeoutServer) error {
	if err := each(s.Recv, func(r *pb.TimerTimeoutRequest) error { return st.s.timeout(s.Context(), r) }); err != nil {
		return err
	}
	return s.SendAndClose(ok)
}
func (st streaming[S]) OnReceivedMessages(s pb.ConnectionHandler_OnReceivedMessagesServer) error {
	if err := each(s.Recv, func(r *pb.ReceivedMessagesRequest) error { return st.s.messages(s.Context(), r) }); err != nil {
		return err
	}
	return s.SendAndClose(ok)
}
func (st streaming[S]) OnSocketClosed(s pb.ConnectionHandler_OnSocketClosedServer) error {
	if err := each(s.Recv, func(r *pb.SocketClosedRequest) error { return st.s.closed(s.Context(), r) }); err != nil {
		return err
	}
	return s.SendAndClose(ok)
}
