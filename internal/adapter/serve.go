package adapter

import (
	"bytes"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	pb "github.com/exgate/exgate/exprotopb"
	"github.com/exgate/exgate/internal/config"
	"github.com/exgate/exgate/internal/pbcodec"
	"github.com/exgate/exgate/internal/tlsconfig"
)

// GRPCOptions shape the adapter's gRPC server.
type GRPCOptions struct {
	// TLS serves over TLS, with client-certificate checks when it says
	// verify_peer; nil serves plain HTTP/2 (h2c).
	TLS *config.TLSOptions
	// MaxRecvMessageSize caps one request.
	MaxRecvMessageSize int
	// AuthToken, when set, is required as "authorization: Bearer <token>"
	// on every call but health checks.
	AuthToken string
	// Observe, if set, is told every adapter call's method and result code.
	Observe func(method, code string)
}

// streamWorkers is how many goroutines serve adapter calls (NewGRPCServer).
const streamWorkers = 256

// NewGRPCServer serves s, gRPC health (reporting SERVING for the adapter
// service) and reflection, so grpcurl and orchestrators can probe the port.
func NewGRPCServer(s *Server, o GRPCOptions) (*grpc.Server, error) {
	// Stream workers reuse goroutines (and their grown stacks) across calls;
	// a call that finds them all busy gets a goroutine of its own, whose
	// stack grows on the way (6.8 % of the gateway's CPU in a unary echo of
	// 100 devices with 8 workers). streamWorkers covers the calls a handler
	// usually has in flight; an idle worker costs its stack, which the
	// collector shrinks. Fixed flow-control windows, as on the handler
	// connections (internal/handler): no flow-control ping per round trip.
	// pbcodec: protobuf's wire, decoded without reflection.
	opts := []grpc.ServerOption{grpc.MaxRecvMsgSize(o.MaxRecvMessageSize), grpc.NumStreamWorkers(streamWorkers),
		grpc.InitialWindowSize(1 << 20), grpc.InitialConnWindowSize(4 << 20), pbcodec.ServerOption()}
	if o.AuthToken != "" {
		opts = append(opts, grpc.ChainUnaryInterceptor(tokenUnary(o.AuthToken)), grpc.ChainStreamInterceptor(tokenStream(o.AuthToken)))
	}
	if o.Observe != nil {
		opts = append(opts, grpc.ChainUnaryInterceptor(observeUnary(o.Observe)))
	}
	if o.TLS != nil {
		tc, err := tlsconfig.Server("gateway.exproto.server.ssl_options", o.TLS)
		if err != nil {
			return nil, err
		}
		opts = append(opts, grpc.Creds(credentials.NewTLS(tc)))
	}
	g := grpc.NewServer(opts...)
	pb.RegisterConnectionAdapterServer(g, s)
	hs := health.NewServer()
	hs.SetServingStatus("emqx.exproto.v1.ConnectionAdapter", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(g, hs)
	reflection.Register(g)
	return g, nil
}

// SniffListener wraps the adapter's listener: a connection whose first bytes
// are neither an HTTP/2 preface nor a TLS handshake is most likely a device
// pointed at the wrong port, so it is closed with a log line naming the
// device listeners (devices is called then, to list them).
func SniffListener(ln net.Listener, tls bool, devices func() string, log *slog.Logger) net.Listener {
	return &sniffListener{Listener: ln, tls: tls, devices: devices, log: log, hint: rate.Sometimes{Interval: 10 * time.Second}}
}

type sniffListener struct {
	net.Listener
	tls     bool
	devices func() string
	log     *slog.Logger
	hint    rate.Sometimes
}

func (l *sniffListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &sniffConn{Conn: c, l: l}, nil
}

// sniffConn checks the first bytes the peer sends.
type sniffConn struct {
	net.Conn
	l       *sniffListener
	once    sync.Once
	pending []byte // bytes read while checking, not yet returned
	err     error
}

var h2Preface = []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")

var errNotGRPC = errors.New("not an HTTP/2 (gRPC) client")

func (c *sniffConn) Read(b []byte) (int, error) {
	c.once.Do(c.sniff)
	if len(c.pending) > 0 {
		n := copy(b, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	if c.err != nil {
		return 0, c.err
	}
	return c.Conn.Read(b)
}

func (c *sniffConn) sniff() {
	want := h2Preface[:3]
	if c.l.tls {
		want = []byte{0x16} // TLS handshake record
	}
	buf := make([]byte, len(want))
	n, err := io.ReadFull(c.Conn, buf)
	c.pending = buf[:n]
	if err != nil {
		c.err = err
		return
	}
	if !bytes.Equal(buf, want) {
		c.pending = nil
		c.err = errNotGRPC
		c.l.hint.Do(func() {
			c.l.log.Warn(fmt.Sprintf("non-gRPC bytes on the ConnectionAdapter port from %s: only handlers call this port; devices connect to %s",
				c.Conn.RemoteAddr(), c.l.devices()), "first_bytes", fmt.Sprintf("%q", buf))
		})
	}
}

// errUnauthenticated carries no detail: a caller without the token learns
// nothing about the service.
var errUnauthenticated = status.Error(codes.Unauthenticated, "missing or wrong bearer token")

func checkToken(ctx context.Context, token string) error {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		if got, ok := strings.CutPrefix(v, "Bearer "); ok && subtle.ConstantTimeCompare([]byte(got), []byte(token)) == 1 {
			return nil
		}
	}
	return errUnauthenticated
}

func tokenUnary(token string) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if !strings.HasPrefix(info.FullMethod, "/grpc.health.v1.") {
			if err := checkToken(ctx, token); err != nil {
				return nil, err
			}
		}
		return h(ctx, req)
	}
}

func tokenStream(token string) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		if !strings.HasPrefix(info.FullMethod, "/grpc.health.v1.") {
			if err := checkToken(ss.Context(), token); err != nil {
				return err
			}
		}
		return h(srv, ss)
	}
}

// observeUnary reports each adapter call's result code (or gRPC error code).
func observeUnary(observe func(method, code string)) grpc.UnaryServerInterceptor {
	const prefix = "/emqx.exproto.v1.ConnectionAdapter/"
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		resp, err := h(ctx, req)
		if method, ok := strings.CutPrefix(info.FullMethod, prefix); ok {
			code := "grpc_" + status.Code(err).String()
			if cr, isCode := resp.(*pb.CodeResponse); err == nil && isCode {
				code = cr.GetCode().String()
			}
			observe(method, code)
		}
		return resp, err
	}
}
