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
)

// Server implements pb.ConnectionAdapterServer.
type Server struct {
	pb.UnimplementedConnectionAdapterServer
	reg    *channel.Registry
	broker broker.Broker
	log    *slog.Logger
}

// New returns a Server that finds channels in reg and raw-publishes to b.
func New(reg *channel.Registry, b broker.Broker, log *slog.Logger) *Server {
	return &Server{reg: reg, broker: b, log: log}
}

func ok() (*pb.CodeResponse, error) { return &pb.CodeResponse{Code: pb.ResultCode_SUCCESS}, nil }

func fail(code pb.ResultCode, msg string) (*pb.CodeResponse, error) {
	return &pb.CodeResponse{Code: code, Message: msg}, nil
}

// lookup finds the channel for conn: UNKNOWN for an empty or malformed id,
// CONN_PROCESS_NOT_ALIVE for a well-formed one that is closed or unknown.
func (s *Server) lookup(conn string) (*channel.Channel, *pb.CodeResponse) {
	if !channel.ValidID(conn) {
		return nil, &pb.CodeResponse{Code: pb.ResultCode_UNKNOWN, Message: "invalid conn id"}
	}
	c, found := s.reg.Get(conn)
	if !found {
		return nil, &pb.CodeResponse{Code: pb.ResultCode_CONN_PROCESS_NOT_ALIVE, Message: "connection not found"}
	}
	return c, nil
}

// result maps a channel error to its code.
func result(err error) (*pb.CodeResponse, error) {
	switch {
	case err == nil:
		return ok()
	case errors.Is(err, channel.ErrDenied):
		return fail(pb.ResultCode_PERMISSION_DENY, err.Error())
	case errors.Is(err, channel.ErrNotAlive):
		return fail(pb.ResultCode_CONN_PROCESS_NOT_ALIVE, err.Error())
	}
	// ErrNotConnected, ErrBadParam and broker failures: UNKNOWN, as EMQX.
	return fail(pb.ResultCode_UNKNOWN, err.Error())
}

func (s *Server) Send(_ context.Context, r *pb.SendBytesRequest) (*pb.CodeResponse, error) {
	c, bad := s.lookup(r.GetConn())
	if bad != nil {
		return bad, nil
	}
	return result(c.Send(r.GetBytes()))
}

func (s *Server) Close(_ context.Context, r *pb.CloseSocketRequest) (*pb.CodeResponse, error) {
	c, bad := s.lookup(r.GetConn())
	if bad != nil {
		return bad, nil
	}
	return result(c.Close())
}

func (s *Server) Authenticate(ctx context.Context, r *pb.AuthenticateRequest) (*pb.CodeResponse, error) {
	c, bad := s.lookup(r.GetConn())
	if bad != nil {
		return bad, nil
	}
	if r.GetClientinfo() == nil {
		return fail(pb.ResultCode_REQUIRED_PARAMS_MISSED, "clientinfo is required")
	}
	return result(c.Authenticate(ctx, r.GetClientinfo(), r.GetPassword()))
}

func (s *Server) StartTimer(_ context.Context, r *pb.TimerRequest) (*pb.CodeResponse, error) {
	c, bad := s.lookup(r.GetConn())
	if bad != nil {
		return bad, nil
	}
	return result(c.StartTimer(r.GetType(), r.GetInterval()))
}

func (s *Server) Publish(ctx context.Context, r *pb.PublishRequest) (*pb.CodeResponse, error) {
	c, bad := s.lookup(r.GetConn())
	if bad != nil {
		return bad, nil
	}
	return result(c.Publish(ctx, r.GetTopic(), r.GetQos(), r.GetPayload()))
}

func (s *Server) Subscribe(ctx context.Context, r *pb.SubscribeRequest) (*pb.CodeResponse, error) {
	c, bad := s.lookup(r.GetConn())
	if bad != nil {
		return bad, nil
	}
	return result(c.Subscribe(ctx, r.GetTopic(), r.GetQos()))
}

func (s *Server) Unsubscribe(ctx context.Context, r *pb.UnsubscribeRequest) (*pb.CodeResponse, error) {
	c, bad := s.lookup(r.GetConn())
	if bad != nil {
		return bad, nil
	}
	return result(c.Unsubscribe(ctx, r.GetTopic()))
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
	if err := s.broker.RawPublish(ctx, r.GetTopic(), byte(r.GetQos()), r.GetPayload()); err != nil {
		s.log.Warn("raw publish failed", "topic", r.GetTopic(), "error", err)
		return fail(pb.ResultCode_UNKNOWN, err.Error())
	}
	return ok()
}
