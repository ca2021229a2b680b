// Package sdk is the Go kit for writing an exgate (or EMQX ExProto)
// handler: implement Handler, and Serve runs it as both ConnectionUnaryHandler
// and ConnectionHandler (per-event or long-lived streams), with a
// per-connection object whose methods call the gateway back and return
// typed errors instead of result codes.
//
// Every callback of one connection arrives in order, one at a time; a
// callback may call the Conn's methods and wait for them (the gateway serves
// them while the callback is in flight).
package sdk

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/exgate/exgate/exprotopb"
	"github.com/exgate/exgate/internal/pbcodec"
)

// Errors the gateway answers with; test with errors.Is.
var (
	// ErrNotAlive: the connection is closed or unknown (CONN_PROCESS_NOT_ALIVE).
	ErrNotAlive = errors.New("connection not alive")
	// ErrDenied: authentication or authorization refused, or a duplicated
	// Authenticate (PERMISSION_DENY).
	ErrDenied = errors.New("permission denied")
	// ErrParams: a required parameter is missing or has the wrong type.
	ErrParams = errors.New("bad parameters")
	// ErrUnknown: anything else the gateway refused (UNKNOWN): a bad qos,
	// a pub/sub call before Authenticate, a broker failure.
	ErrUnknown = errors.New("refused")
)

// CodeError is a non-SUCCESS answer of the gateway.
type CodeError struct {
	Code    pb.ResultCode
	Message string
}

func (e *CodeError) Error() string { return fmt.Sprintf("%s: %s", e.Code, e.Message) }

// Is maps the code to the sentinels above.
func (e *CodeError) Is(target error) bool {
	switch e.Code {
	case pb.ResultCode_CONN_PROCESS_NOT_ALIVE:
		return target == ErrNotAlive
	case pb.ResultCode_PERMISSION_DENY:
		return target == ErrDenied
	case pb.ResultCode_REQUIRED_PARAMS_MISSED, pb.ResultCode_PARAMS_TYPE_ERROR:
		return target == ErrParams
	}
	return target == ErrUnknown
}

func check(r *pb.CodeResponse, err error) error {
	if err != nil {
		return fmt.Errorf("adapter call: %w", err)
	}
	if r.GetCode() != pb.ResultCode_SUCCESS {
		return &CodeError{Code: r.GetCode(), Message: r.GetMessage()}
	}
	return nil
}

// Client calls the gateway's ConnectionAdapter. Safe for concurrent use;
// the gRPC channel reconnects with backoff by itself.
type Client struct {
	conn    *grpc.ClientConn
	adapter pb.ConnectionAdapterClient
}

// ClientOption configures Dial.
type ClientOption func(*clientOptions)

type clientOptions struct {
	creds credentials.TransportCredentials
	token string
}

// WithTLS calls the adapter over TLS (server.ssl_options), with a client
// certificate in creds for mutual TLS.
func WithTLS(creds credentials.TransportCredentials) ClientOption {
	return func(o *clientOptions) { o.creds = creds }
}

// WithToken sends server.auth_token with every call.
func WithToken(token string) ClientOption { return func(o *clientOptions) { o.token = token } }

type bearer struct{ token string }

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.token}, nil
}
func (b bearer) RequireTransportSecurity() bool { return false }

// Dial connects (lazily) to the gateway's adapter at addr (host:port).
func Dial(addr string, opts ...ClientOption) (*Client, error) {
	o := clientOptions{creds: insecure.NewCredentials()}
	for _, f := range opts {
		f(&o)
	}
	dopts := append(DialOptions(), grpc.WithTransportCredentials(o.creds))
	if o.token != "" {
		dopts = append(dopts, grpc.WithPerRPCCredentials(bearer{token: o.token}))
	}
	conn, err := grpc.NewClient(addr, dopts...)
	if err != nil {
		return nil, fmt.Errorf("dial adapter %s: %w", addr, err)
	}
	return &Client{conn: conn, adapter: pb.NewConnectionAdapterClient(conn)}, nil
}

// DialOptions returns the gRPC dial options a handler's connection to
// exgate's adapter should use (Dial uses them): fixed flow-control
// windows and the faster codec, as ServerOptions.
func DialOptions() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithInitialWindowSize(1 << 20), grpc.WithInitialConnWindowSize(4 << 20),
		grpc.WithDefaultCallOptions(pbcodec.CallOption())}
}

// Close closes the connection to the adapter.
func (c *Client) Close() error { return c.conn.Close() }

// RawPublish publishes as the gateway itself: no connection, no
// authorization, no mountpoint.
func (c *Client) RawPublish(ctx context.Context, topic string, qos byte, payload []byte) error {
	return check(c.adapter.RawPublish(ctx, &pb.RawPublishRequest{Topic: topic, Qos: uint32(qos), Payload: payload}))
}

// ClientInfo identifies a device in Authenticate.
type ClientInfo struct {
	ClientID, Username, ProtoName, ProtoVer string
}

// Conn is one device connection, with a typed slot for the handler's own
// per-connection state. Its methods call the gateway.
type Conn[S any] struct {
	ID    string
	Info  *pb.ConnInfo
	State S
	// ad is where calls go: the adapter, or the native stream the
	// connection's events come on.
	ad atomic.Pointer[adapterBox]
}

type adapterBox struct{ pb.ConnectionAdapterClient }

func (k *Conn[S]) adapter() pb.ConnectionAdapterClient {
	if b := k.ad.Load(); b != nil {
		return b.ConnectionAdapterClient
	}
	return nil
}

// Send writes bytes to the device.
func (k *Conn[S]) Send(ctx context.Context, b []byte) error {
	return check(k.adapter().Send(ctx, &pb.SendBytesRequest{Conn: k.ID, Bytes: b}))
}

// SendNoWait writes bytes to the device without waiting for the gateway's
// answer when the connection's events come over the native stream (see
// NoWait: the bytes go with the callback's Done at the latest, and the
// device's next event needs one stream round trip less); otherwise it is
// Send.
func (k *Conn[S]) SendNoWait(ctx context.Context, b []byte) error {
	return check(k.adapter().Send(ctx, &pb.SendBytesRequest{Conn: k.ID, Bytes: b}, NoWait()))
}

// Close closes the device's socket; OnSocketClosed follows.
func (k *Conn[S]) Close(ctx context.Context) error {
	return check(k.adapter().Close(ctx, &pb.CloseSocketRequest{Conn: k.ID}))
}

// Authenticate registers the device as a pub/sub client. A failure leaves
// the socket open: the handler decides what to do.
func (k *Conn[S]) Authenticate(ctx context.Context, ci ClientInfo, password string) error {
	return check(k.adapter().Authenticate(ctx, &pb.AuthenticateRequest{Conn: k.ID, Password: password,
		Clientinfo: &pb.ClientInfo{Clientid: ci.ClientID, Username: ci.Username, ProtoName: ci.ProtoName, ProtoVer: ci.ProtoVer}}))
}

// StartKeepalive makes the gateway close the device after 1.5 × seconds
// without socket data (OnTimerTimeout, then {shutdown,keepalive_timeout}).
func (k *Conn[S]) StartKeepalive(ctx context.Context, seconds uint32) error {
	return check(k.adapter().StartTimer(ctx, &pb.TimerRequest{Conn: k.ID, Type: pb.TimerType_KEEPALIVE, Interval: seconds}))
}

// Publish publishes as the device.
func (k *Conn[S]) Publish(ctx context.Context, topic string, qos byte, payload []byte) error {
	return check(k.adapter().Publish(ctx, &pb.PublishRequest{Conn: k.ID, Topic: topic, Qos: uint32(qos), Payload: payload}))
}

// Subscribe subscribes the device (or updates the QoS).
func (k *Conn[S]) Subscribe(ctx context.Context, filter string, qos byte) error {
	return check(k.adapter().Subscribe(ctx, &pb.SubscribeRequest{Conn: k.ID, Topic: filter, Qos: uint32(qos)}))
}

// Unsubscribe removes a subscription.
func (k *Conn[S]) Unsubscribe(ctx context.Context, filter string) error {
	return check(k.adapter().Unsubscribe(ctx, &pb.UnsubscribeRequest{Conn: k.ID, Topic: filter}))
}
