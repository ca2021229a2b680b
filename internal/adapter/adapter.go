// Package adapter serves the ConnectionAdapter gRPC service that handlers
// call: it decodes a request, finds the channel by conn id, and maps the
// outcome to ExProto's result codes (spec §2 "Result codes") exactly as
// EMQX sent them. It never waits for a handler callback in flight, so a
// handler may call it from inside any callback.
package adapter

import (
	"context"
	"errors"
	"log/slog"

	pb "github.com/exgate/exgate/exprotopb"
	"github.com/exgate/exgate/internal/broker"
	"github.com/exgate/exgate/internal/channel"
	"github.com/exgate/exgate/internal/cluster"
)

// Server implements pb.ConnectionAdapterServer.
type Server struct {
	pb.UnimplementedConnectionAdapterServer
	reg    *channel.Registry
	broker broker.Broker
	peers  *cluster.Peers // nil: a single node
	log    *slog.Logger
}

// New returns a Server that finds channels in reg, forwards calls for other
// nodes' devices to peers (which may be nil), and raw-publishes to b.
func New(reg *channel.Registry, b broker.Broker, peers *cluster.Peers, log *slog.Logger) *Server {
	return &Server{reg: reg, broker: b, peers: peers, log: log}
}

func ok() (*pb.CodeResponse, error) { return &pb.CodeResponse{Code: pb.ResultCode_SUCCESS}, nil }

func fail(code pb.ResultCode, msg string) (*pb.CodeResponse, error) {
	return &pb.CodeResponse{Code: code, Message: msg}, nil
}

// forwardFunc makes the same call on another node's adapter.
type forwardFunc func(pb.ConnectionAdapterClient, context.Context) (*pb.CodeResponse, error)

// on runs do on the channel of conn: UNKNOWN for an empty or malformed id;
// for a well-formed one this node does not have, the call goes to the
// owner node when it is a peer, else CONN_PROCESS_NOT_ALIVE.
func (s *Server) on(ctx context.Context, conn string, fwd forwardFunc, do func(*channel.Channel) error) (*pb.CodeResponse, error) {
	if !channel.ValidID(conn) {
		return fail(pb.ResultCode_UNKNOWN, "invalid conn id")
	}
	c, found := s.reg.Get(conn)
	if found {
		return result(do(c))
	}
	if peer, fctx, ok := s.peers.Owner(ctx, conn); ok {
		resp, err := fwd(peer, fctx)
		if err != nil {
			s.log.Warn("forwarding to the owner node failed", "conn", conn, "error", err)
			return fail(pb.ResultCode_CONN_PROCESS_NOT_ALIVE, "owner node unreachable: "+err.Error())
		}
		return resp, nil
	}
	return fail(pb.ResultCode_CONN_PROCESS_NOT_ALIVE, "connection not found")
}

// result maps a channel error to its code.
func result(err error) (*pb.CodeResponse, error) {
	code, msg := codeOf(err)
	return &pb.CodeResponse{Code: code, Message: msg}, nil
}

// codeOf is a channel error's code and message.
func codeOf(err error) (pb.ResultCode, string) {
	switch {
	case err == nil:
		return pb.ResultCode_SUCCESS, ""
	case errors.Is(err, channel.ErrDenied):
		return pb.ResultCode_PERMISSION_DENY, err.Error()
	case errors.Is(err, channel.ErrNotAlive):
		return pb.ResultCode_CONN_PROCESS_NOT_ALIVE, err.Error()
	case errors.Is(err, channel.ErrParamsType):
		return pb.ResultCode_PARAMS_TYPE_ERROR, err.Error()
	}
	// ErrNotConnected, ErrBadParam and broker failures: UNKNOWN, as EMQX.
	return pb.ResultCode_UNKNOWN, err.Error()
}

func (s *Server) Send(ctx context.Context, r *pb.SendBytesRequest) (*pb.CodeResponse, error) {
	return s.on(ctx, r.GetConn(),
		func(p pb.ConnectionAdapterClient, ctx context.Context) (*pb.CodeResponse, error) {
			return p.Send(ctx, r)
		},
		func(c *channel.Channel) error { return c.Send(r.GetBytes()) })
}

// TrySend is Send for a caller that must not wait: ok reports that the
// answer is final. When it is not, n bytes were written (the device's
// socket is full, or cannot be written without waiting) and the caller
// Sends the rest. Several buffers are several Sends in a row to conn,
// written at once and answered together (channel.Channel.TrySend).
func (s *Server) TrySend(conn string, bs [][]byte) (code pb.ResultCode, msg string, n int, ok bool) {
	if !channel.ValidID(conn) {
		return 0, "", 0, false
	}
	c, found := s.reg.Get(conn)
	if !found {
		return 0, "", 0, false // perhaps another node's: Send forwards it
	}
	n, complete, err := c.TrySend(bs...)
	if !complete {
		return 0, "", n, false
	}
	code, msg = codeOf(err)
	return code, msg, n, true
}

// PubSubNeverWaits reports that Publish, Subscribe and Unsubscribe for
// conn return without waiting (channel.Config.PubSubNeverWait): a caller
// that must not wait may make them itself. False for another node's device.
func (s *Server) PubSubNeverWaits(conn string) bool {
	c, found := s.reg.Get(conn)
	return found && c.PubSubNeverWaits()
}

func (s *Server) Close(ctx context.Context, r *pb.CloseSocketRequest) (*pb.CodeResponse, error) {
	return s.on(ctx, r.GetConn(),
		func(p pb.ConnectionAdapterClient, ctx context.Context) (*pb.CodeResponse, error) {
			return p.Close(ctx, r)
		},
		func(c *channel.Channel) error { return c.Close() })
}

func (s *Server) Authenticate(ctx context.Context, r *pb.AuthenticateRequest) (*pb.CodeResponse, error) {
	if r.GetClientinfo() == nil && channel.ValidID(r.GetConn()) {
		return fail(pb.ResultCode_REQUIRED_PARAMS_MISSED, "clientinfo is required")
	}
	return s.on(ctx, r.GetConn(),
		func(p pb.ConnectionAdapterClient, ctx context.Context) (*pb.CodeResponse, error) {
			return p.Authenticate(ctx, r)
		},
		func(c *channel.Channel) error { return c.Authenticate(ctx, r.GetClientinfo(), r.GetPassword()) })
}

func (s *Server) StartTimer(ctx context.Context, r *pb.TimerRequest) (*pb.CodeResponse, error) {
	return s.on(ctx, r.GetConn(),
		func(p pb.ConnectionAdapterClient, ctx context.Context) (*pb.CodeResponse, error) {
			return p.StartTimer(ctx, r)
		},
		func(c *channel.Channel) error { return c.StartTimer(r.GetType(), r.GetInterval()) })
}

func (s *Server) Publish(ctx context.Context, r *pb.PublishRequest) (*pb.CodeResponse, error) {
	return s.on(ctx, r.GetConn(),
		func(p pb.ConnectionAdapterClient, ctx context.Context) (*pb.CodeResponse, error) {
			return p.Publish(ctx, r)
		},
		func(c *channel.Channel) error { return c.Publish(ctx, r.GetTopic(), r.GetQos(), r.GetPayload()) })
}

func (s *Server) Subscribe(ctx context.Context, r *pb.SubscribeRequest) (*pb.CodeResponse, error) {
	return s.on(ctx, r.GetConn(),
		func(p pb.ConnectionAdapterClient, ctx context.Context) (*pb.CodeResponse, error) {
			return p.Subscribe(ctx, r)
		},
		func(c *channel.Channel) error { return c.Subscribe(ctx, r.GetTopic(), r.GetQos()) })
}

func (s *Server) Unsubscribe(ctx context.Context, r *pb.UnsubscribeRequest) (*pb.CodeResponse, error) {
	return s.on(ctx, r.GetConn(),
		func(p pb.ConnectionAdapterClient, ctx context.Context) (*pb.CodeResponse, error) {
			return p.Unsubscribe(ctx, r)
		},
		func(c *channel.Channel) error { return c.Unsubscribe(ctx, r.GetTopic()) })
}

// RawPublish needs no connection: no authentication, authorization or
// mountpoint; the message comes from "exproto".
func (s *Server) RawPublish(ctx context.Context, r *pb.RawPublishRequest) (*pb.CodeResponse, error) {
	if r.GetQos() > 2 {
		return fail(pb.ResultCode_UNKNOWN, "invalid qos")
	}
	if !channel.ValidTopic(r.GetTopic()) {
		return fail(pb.ResultCode_UNKNOWN, "invalid topic")
	}
	if channel.IsSys(r.GetTopic()) {
		return fail(pb.ResultCode_PERMISSION_DENY, "Publishing to $SYS topics is not allowed")
	}
	if err := s.broker.RawPublish(ctx, r.GetTopic(), byte(r.GetQos()), r.GetPayload()); err != nil {
		s.log.Warn("raw publish failed", "topic", r.GetTopic(), "error", err)
		return fail(pb.ResultCode_UNKNOWN, err.Error())
	}
	return ok()
}
