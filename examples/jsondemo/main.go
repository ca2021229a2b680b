// Command jsondemo is an ExProto handler for the JSON demo protocol that
// EMQX's own tests used (exproto-behaviour.md §5): every frame is one JSON
// object with an integer "type":
//
//	1 CONNECT {clientinfo, password, keepalive}  → 2 CONNACK {code}
//	3 PUBLISH {topic, qos, payload}              → 4 PUBACK {code}
//	5 SUBSCRIBE {topic, qos}                     → 6 SUBACK {code}
//	7 UNSUBSCRIBE {topic}                        → 8 UNSUBACK {code}
//	9 DISCONNECT
//	10 RAW_PUBLISH {topic, qos, payload}         → 4 PUBACK {code}
//
// and every message delivered to the device comes as a 3 PUBLISH frame.
// With -echo it sends every chunk straight back instead (the load tool's
// echo scenario). It serves ConnectionUnaryHandler and ConnectionHandler,
// calling exgate back on its adapter, and exgate's native stream
// (exgate.v1.Handler, for handler.service_name: native), calling back over
// the stream. Run it beside exgate:
//
//	go run ./examples/jsondemo -listen 127.0.0.1:9001 -adapter 127.0.0.1:9100
//
// With -native it serves only the native stream and needs no adapter.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/exgate/exgate/exprotopb"
	"github.com/exgate/exgate/nativepb"
	"github.com/exgate/exgate/sdk"
)

type clientInfo struct {
	ProtoName string `json:"proto_name"`
	ProtoVer  string `json:"proto_ver"`
	ClientID  string `json:"clientid"`
	Username  string `json:"username"`
}

type frame struct {
	Type       int         `json:"type"`
	ClientInfo *clientInfo `json:"clientinfo,omitempty"`
	Password   string      `json:"password,omitempty"`
	Keepalive  uint32      `json:"keepalive,omitempty"`
	Code       *int        `json:"code,omitempty"`
	Topic      string      `json:"topic,omitempty"`
	QoS        uint32      `json:"qos,omitempty"`
	Payload    string      `json:"payload,omitempty"`
}

type handler struct {
	pb.UnimplementedConnectionUnaryHandlerServer
	adapter pb.ConnectionAdapterClient
	echo    bool // send every chunk straight back instead of parsing frames
	noWait  bool // over the native stream, send without waiting for the result

	mu   sync.Mutex
	bufs map[string][]byte // partial frames per connection
}

func (h *handler) OnSocketCreated(_ context.Context, r *pb.SocketCreatedRequest) (*pb.EmptySuccess, error) {
	log.Printf("%s: connected from %s:%d", r.Conn, r.Conninfo.GetPeername().GetHost(), r.Conninfo.GetPeername().GetPort())
	return &pb.EmptySuccess{}, nil
}

func (h *handler) OnSocketClosed(_ context.Context, r *pb.SocketClosedRequest) (*pb.EmptySuccess, error) {
	log.Printf("%s: closed: %s", r.Conn, r.Reason)
	h.mu.Lock()
	delete(h.bufs, r.Conn)
	h.mu.Unlock()
	return &pb.EmptySuccess{}, nil
}

func (h *handler) OnTimerTimeout(ctx context.Context, r *pb.TimerTimeoutRequest) (*pb.EmptySuccess, error) {
	_, _ = h.adapterOf(ctx).Close(ctx, &pb.CloseSocketRequest{Conn: r.Conn})
	return &pb.EmptySuccess{}, nil
}

// OnReceivedMessages forwards every message of the batch, not only the first.
func (h *handler) OnReceivedMessages(ctx context.Context, r *pb.ReceivedMessagesRequest) (*pb.EmptySuccess, error) {
	for _, m := range r.Messages {
		h.send(ctx, r.Conn, frame{Type: 3, Topic: m.Topic, QoS: m.Qos, Payload: string(m.Payload)})
	}
	return &pb.EmptySuccess{}, nil
}

// OnReceivedBytes reassembles frames: a chunk may hold part of a frame or several.
func (h *handler) OnReceivedBytes(ctx context.Context, r *pb.ReceivedBytesRequest) (*pb.EmptySuccess, error) {
	if h.echo {
		var opts []grpc.CallOption
		if h.noWait {
			opts = append(opts, sdk.NoWait())
		}
		if _, err := h.adapterOf(ctx).Send(ctx, &pb.SendBytesRequest{Conn: r.Conn, Bytes: r.Bytes}, opts...); err != nil {
			log.Printf("%s: echo: %v", r.Conn, err)
		}
		return &pb.EmptySuccess{}, nil
	}
	// exgate sends a device's next event only after this one returned, so
	// the device's partial frame is this call's alone: the lock guards
	// only the map, not the decoding (all devices share it).
	h.mu.Lock()
	part, ok := h.bufs[r.Conn]
	delete(h.bufs, r.Conn)
	h.mu.Unlock()
	var f frame
	if !ok && json.Unmarshal(r.Bytes, &f) == nil {
		h.handle(ctx, r.Conn, f) // the usual chunk: one whole frame
		return &pb.EmptySuccess{}, nil
	}
	buf := append(part, r.Bytes...)
	dec := json.NewDecoder(bytes.NewReader(buf))
	var frames []frame
	used := 0
	for {
		var f frame
		if dec.Decode(&f) != nil {
			break
		}
		frames = append(frames, f)
		used = int(dec.InputOffset())
	}
	if used < len(buf) {
		h.mu.Lock()
		h.bufs[r.Conn] = append([]byte(nil), buf[used:]...)
		h.mu.Unlock()
	}
	for _, f := range frames {
		h.handle(ctx, r.Conn, f)
	}
	return &pb.EmptySuccess{}, nil
}

func code(resp *pb.CodeResponse, err error) *int {
	c := 0
	if err != nil || resp.Code != pb.ResultCode_SUCCESS {
		c = 1
	}
	return &c
}

func (h *handler) handle(ctx context.Context, conn string, f frame) {
	a := h.adapterOf(ctx)
	switch f.Type {
	case 1:
		ci := &pb.ClientInfo{}
		if f.ClientInfo != nil {
			ci = &pb.ClientInfo{ProtoName: f.ClientInfo.ProtoName, ProtoVer: f.ClientInfo.ProtoVer, Clientid: f.ClientInfo.ClientID, Username: f.ClientInfo.Username}
		}
		resp, err := a.Authenticate(ctx, &pb.AuthenticateRequest{Conn: conn, Clientinfo: ci, Password: f.Password})
		c := code(resp, err)
		if *c == 0 && f.Keepalive > 0 {
			_, _ = a.StartTimer(ctx, &pb.TimerRequest{Conn: conn, Type: pb.TimerType_KEEPALIVE, Interval: f.Keepalive})
		}
		h.send(ctx, conn, frame{Type: 2, Code: c})
		if *c != 0 {
			_, _ = a.Close(ctx, &pb.CloseSocketRequest{Conn: conn})
		}
	case 3:
		h.send(ctx, conn, frame{Type: 4, Code: code(a.Publish(ctx, &pb.PublishRequest{Conn: conn, Topic: f.Topic, Qos: f.QoS, Payload: []byte(f.Payload)}))})
	case 5:
		h.send(ctx, conn, frame{Type: 6, Code: code(a.Subscribe(ctx, &pb.SubscribeRequest{Conn: conn, Topic: f.Topic, Qos: f.QoS}))})
	case 7:
		h.send(ctx, conn, frame{Type: 8, Code: code(a.Unsubscribe(ctx, &pb.UnsubscribeRequest{Conn: conn, Topic: f.Topic}))})
	case 9:
		_, _ = a.Close(ctx, &pb.CloseSocketRequest{Conn: conn})
	case 10:
		h.send(ctx, conn, frame{Type: 4, Code: code(a.RawPublish(ctx, &pb.RawPublishRequest{Topic: f.Topic, Qos: f.QoS, Payload: []byte(f.Payload)}))})
	}
}

// send writes a frame to the device. Its result would only be logged, so
// over the native stream it does not wait for it (sdk.NoWait: exgate logs
// and counts a failure); over the adapter it waits as before.
func (h *handler) send(ctx context.Context, conn string, f frame) {
	b, _ := json.Marshal(f)
	b = append(b, '\n')
	if _, err := h.adapterOf(ctx).Send(ctx, &pb.SendBytesRequest{Conn: conn, Bytes: b}, sdk.NoWait()); err != nil {
		log.Printf("%s: send: %v", conn, err)
	}
}

// streaming serves the same handler as ConnectionHandler: every message of
// a client stream is one event.
type streaming struct {
	pb.UnimplementedConnectionHandlerServer
	h *handler
}

func drain[T any](recv func() (*T, error), on func(*T)) error {
	for {
		m, err := recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		on(m)
	}
}

func (s streaming) OnSocketCreated(st pb.ConnectionHandler_OnSocketCreatedServer) error {
	if err := drain(st.Recv, func(r *pb.SocketCreatedRequest) { _, _ = s.h.OnSocketCreated(st.Context(), r) }); err != nil {
		return err
	}
	return st.SendAndClose(&pb.EmptySuccess{})
}

func (s streaming) OnSocketClosed(st pb.ConnectionHandler_OnSocketClosedServer) error {
	if err := drain(st.Recv, func(r *pb.SocketClosedRequest) { _, _ = s.h.OnSocketClosed(st.Context(), r) }); err != nil {
		return err
	}
	return st.SendAndClose(&pb.EmptySuccess{})
}

func (s streaming) OnReceivedBytes(st pb.ConnectionHandler_OnReceivedBytesServer) error {
	if err := drain(st.Recv, func(r *pb.ReceivedBytesRequest) { _, _ = s.h.OnReceivedBytes(st.Context(), r) }); err != nil {
		return err
	}
	return st.SendAndClose(&pb.EmptySuccess{})
}

func (s streaming) OnTimerTimeout(st pb.ConnectionHandler_OnTimerTimeoutServer) error {
	if err := drain(st.Recv, func(r *pb.TimerTimeoutRequest) { _, _ = s.h.OnTimerTimeout(st.Context(), r) }); err != nil {
		return err
	}
	return st.SendAndClose(&pb.EmptySuccess{})
}

func (s streaming) OnReceivedMessages(st pb.ConnectionHandler_OnReceivedMessagesServer) error {
	if err := drain(st.Recv, func(r *pb.ReceivedMessagesRequest) { _, _ = s.h.OnReceivedMessages(st.Context(), r) }); err != nil {
		return err
	}
	return st.SendAndClose(&pb.EmptySuccess{})
}

// bearer sends exgate's auth token with every adapter call.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}
func (bearer) RequireTransportSecurity() bool { return false }

// adapterOf is where a callback calls exgate: back over the native stream
// its event came on, or the adapter.
func (h *handler) adapterOf(ctx context.Context) pb.ConnectionAdapterClient {
	return sdk.AdapterFrom(ctx, h.adapter)
}

func main() {
	listen := flag.String("listen", "127.0.0.1:9001", "address this handler serves ConnectionUnaryHandler on")
	adapterAddr := flag.String("adapter", "127.0.0.1:9100", "exgate's ConnectionAdapter address")
	echo := flag.Bool("echo", false, "echo every chunk back to the device instead of speaking the JSON protocol")
	noWait := flag.Bool("nowait", false, "native stream: send the echo without waiting for exgate's answer (sdk.NoWait)")
	quiet := flag.Bool("quiet", false, "do not log connections (for load tests)")
	token := flag.String("token", "", "exgate's server.auth_token, sent as a bearer token")
	native := flag.Bool("native", false, "serve only exgate's native stream (service_name: native): no adapter connection")
	flag.Parse()
	if *quiet {
		log.SetOutput(io.Discard)
	}

	opts := append(sdk.DialOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if *token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer(*token)))
	}
	h := &handler{bufs: map[string][]byte{}, echo: *echo, noWait: *noWait}
	if !*native {
		cc, err := grpc.NewClient(*adapterAddr, opts...)
		if err != nil {
			log.Fatal(err)
		}
		defer cc.Close()
		h.adapter = pb.NewConnectionAdapterClient(cc)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	srv := grpc.NewServer(sdk.ServerOptions()...)
	nativepb.RegisterHandlerServer(srv, sdk.Native(h))
	if !*native {
		pb.RegisterConnectionUnaryHandlerServer(srv, h)
		pb.RegisterConnectionHandlerServer(srv, streaming{h: h})
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	go func() { <-ctx.Done(); srv.GracefulStop() }()
	if *native {
		log.Printf("jsondemo handler on %s, native stream only", *listen)
	} else {
		log.Printf("jsondemo handler on %s, calling exgate at %s", *listen, *adapterAddr)
	}
	if err := srv.Serve(ln); err != nil {
		log.Fatal(err)
	}
}
