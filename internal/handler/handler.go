// Package handler is the gRPC client side of exgate: it calls the user's
// ConnectionUnaryHandler, or ConnectionHandler with one short client stream
// per event (one message, half-close, wait for the answer), which unary-era
// and streaming-era handlers both accept and which keeps per-connection order.
//
// The gRPC channel reconnects by itself when the handler comes back; a call
// made while it is down fails at once (no wait-for-ready), so a device of a
// dead handler is closed promptly rather than piling up.
package handler

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"golang.org/x/time/rate"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/exgate/exgate/exprotopb"
)

// Client calls one handler service. It implements channel.Handler and is
// safe for concurrent use.
type Client struct {
	conn    *grpc.ClientConn
	service string // ConnectionUnaryHandler or ConnectionHandler
	target  string
	log     *slog.Logger
	// Each hint is logged at most every 5 s: a dead handler fails every
	// device's every event, and the log must stay readable.
	unreachable, unimplemented rate.Sometimes
}

// Options configure a Client.
type Options struct {
	// Target is the dial target, host:port.
	Target string
	// Service is "ConnectionUnaryHandler" or "ConnectionHandler".
	Service string
	Logger  *slog.Logger
}

// New creates the client; it does not connect until the first call.
func New(o Options) (*Client, error) {
	conn, err := grpc.NewClient(o.Target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("handler %s: %w", o.Target, err)
	}
	return &Client{conn: conn, service: o.Service, target: o.Target, log: o.Logger,
		unreachable: rate.Sometimes{Interval: 5 * time.Second}, unimplemented: rate.Sometimes{Interval: 5 * time.Second}}, nil
}

// Close closes the gRPC channel.
func (c *Client) Close() error { return c.conn.Close() }

func (c *Client) OnSocketCreated(ctx context.Context, r *pb.SocketCreatedRequest) error {
	return c.call(ctx, "OnSocketCreated", r)
}

func (c *Client) OnReceivedBytes(ctx context.Context, r *pb.ReceivedBytesRequest) error {
	return c.call(ctx, "OnReceivedBytes", r)
}

func (c *Client) OnTimerTimeout(ctx context.Context, r *pb.TimerTimeoutRequest) error {
	return c.call(ctx, "OnTimerTimeout", r)
}

func (c *Client) OnReceivedMessages(ctx context.Context, r *pb.ReceivedMessagesRequest) error {
	return c.call(ctx, "OnReceivedMessages", r)
}

func (c *Client) OnSocketClosed(ctx context.Context, r *pb.SocketClosedRequest) error {
	return c.call(ctx, "OnSocketClosed", r)
}

// streamDesc describes every ConnectionHandler method: client-streaming.
var streamDesc = &grpc.StreamDesc{ClientStreams: true}

func (c *Client) call(ctx context.Context, method string, req proto.Message) error {
	full := "/emqx.exproto.v1." + c.service + "/" + method
	var err error
	if c.service == "ConnectionHandler" {
		err = c.stream(ctx, full, req)
	} else {
		err = c.conn.Invoke(ctx, full, req, new(pb.EmptySuccess))
	}
	if err != nil {
		return c.explain(method, err)
	}
	return nil
}

// stream sends req as a one-message client stream and waits for the answer.
func (c *Client) stream(ctx context.Context, full string, req proto.Message) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := c.conn.NewStream(ctx, streamDesc, full)
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

// explain adds what an operator needs to fix a handler error.
func (c *Client) explain(method string, err error) error {
	st := status.Convert(err)
	switch st.Code() {
	case codes.Unimplemented:
		other := "ConnectionHandler"
		if c.service == "ConnectionHandler" {
			other = "ConnectionUnaryHandler"
		}
		c.unimplemented.Do(func() {
			c.log.Warn("handler does not implement the configured service; it may implement "+other+": set gateway.exproto.handler.service_name",
				"address", c.target, "service_name", c.service, "method", method)
		})
	case codes.Unavailable:
		c.unreachable.Do(func() {
			c.log.Warn("handler unreachable", "address", c.target, "service_name", c.service, "method", method,
				"error", strings.TrimSpace(st.Message()))
		})
	}
	return fmt.Errorf("%s: %w", method, err)
}
