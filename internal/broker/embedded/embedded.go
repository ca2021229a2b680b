// Package embedded is the in-process MQTT broker (mochi-mqtt) that exgate
// runs by default: ordinary MQTT clients connect to its TCP listener, and
// every authenticated device is an MQTT v5 client of it over an in-memory
// connection, so both kinds of client share one clientid namespace, one
// retained store and one set of subscriptions.
package embedded

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/exgate/exgate/internal/broker"
)

// deviceListener is the mochi listener id of device sessions; the hook
// trusts it because the gateway authenticated and authorizes devices itself.
const deviceListener = "exgate-devices"

// Options configure a Broker. The zero value runs without a TCP listener
// and lets every MQTT client in.
type Options struct {
	// Bind is the host:port of the MQTT TCP listener; empty disables it.
	Bind   string
	Logger *slog.Logger
	// Authenticate checks an MQTT client of the TCP listener; nil allows all.
	Authenticate func(clientID, username, password string, peer net.Addr) bool
	// Authorize checks an MQTT client's publish (write) or subscribe; nil allows all.
	Authorize func(clientID, username, topic string, write bool, peer net.Addr) bool
}

// Broker is the embedded broker. It implements broker.Broker.
type Broker struct {
	srv *mqtt.Server
	mem *memListener
	tcp net.Listener // nil without a TCP listener
}

var _ broker.Broker = (*Broker)(nil)

// New starts the broker: its TCP listener is bound when New returns.
func New(o Options) (*Broker, error) {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	caps := mqtt.NewDefaultServerCapabilities()
	// mochi's default of 8192 pending writes per client costs ~64 KiB each.
	caps.MaximumClientWritesPending = 1024
	srv := mqtt.New(&mqtt.Options{
		InlineClient: true,
		Capabilities: caps,
		Logger:       slog.New(quietLog{log.Handler()}),
	})
	if err := srv.AddHook(&hook{o: o}, nil); err != nil {
		return nil, fmt.Errorf("embedded broker: add hook: %w", err)
	}
	b := &Broker{srv: srv, mem: newMemListener()}
	if err := srv.AddListener(listeners.NewNet(deviceListener, b.mem)); err != nil {
		return nil, fmt.Errorf("embedded broker: %w", err)
	}
	if o.Bind != "" {
		ln, err := net.Listen("tcp", o.Bind)
		if err != nil {
			return nil, fmt.Errorf("embedded broker: listen on %s: %w", o.Bind, err)
		}
		b.tcp = ln
		if err := srv.AddListener(listeners.NewNet("tcp", ln)); err != nil {
			_ = ln.Close()
			return nil, fmt.Errorf("embedded broker: %w", err)
		}
	}
	if err := srv.Serve(); err != nil {
		return nil, fmt.Errorf("embedded broker: serve: %w", err)
	}
	return b, nil
}

// Addr is the bound MQTT TCP address, or nil.
func (b *Broker) Addr() net.Addr {
	if b.tcp == nil {
		return nil
	}
	return b.tcp.Addr()
}

// Connect opens a device session over an in-memory MQTT connection.
func (b *Broker) Connect(ctx context.Context, ci broker.ClientInfo, password string, h broker.Handlers) (broker.Session, error) {
	conn, err := b.mem.Dial(ctx)
	if err != nil {
		return nil, err
	}
	// The gateway authenticated the device; the password stays with it.
	return broker.ConnectMQTT(ctx, conn, ci, "", 0, h)
}

// RawPublish publishes through mochi's inline client, which skips ACLs.
func (b *Broker) RawPublish(_ context.Context, topic string, qos byte, payload []byte) error {
	if qos > 2 {
		return fmt.Errorf("raw publish: qos %d: %w", qos, broker.ErrBadRequest)
	}
	if !mqtt.IsValidFilter(topic, true) {
		return fmt.Errorf("raw publish: topic %q: %w", topic, broker.ErrBadRequest)
	}
	return b.srv.Publish(topic, payload, false, qos)
}

// Close stops the listeners and disconnects every client.
func (b *Broker) Close() error {
	return b.srv.Close()
}

// hook applies exgate's authentication and authorization to ordinary MQTT
// clients and stamps each publish with its publisher and time for devices.
type hook struct {
	mqtt.HookBase
	o Options
}

func (h *hook) ID() string { return "exgate" }

func (h *hook) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnPublish, mqtt.OnPacketEncode, mqtt.OnDisconnect}, []byte{b})
}

func (h *hook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	if cl.Net.Listener == deviceListener || h.o.Authenticate == nil {
		return true
	}
	return h.o.Authenticate(cl.ID, string(cl.Properties.Username), string(pk.Connect.Password), addr(cl.Net.Remote))
}

func (h *hook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if cl.Net.Listener == deviceListener || h.o.Authorize == nil {
		return true
	}
	return h.o.Authorize(cl.ID, string(cl.Properties.Username), topic, write, addr(cl.Net.Remote))
}

// OnDisconnect closes a race in mochi's takeover: the old client's own
// cleanup checks IsTakenOver before the new client's CONNECT has set it,
// then deletes the client id from the registry after the new client was
// added under it, and the new session silently receives nothing. A client
// stopped for a takeover waits here until the takeover is marked.
func (h *hook) OnDisconnect(cl *mqtt.Client, _ error, _ bool) {
	if !errors.Is(cl.StopCause(), packets.ErrSessionTakenOver) {
		return
	}
	for deadline := time.Now().Add(2 * time.Second); !cl.IsTakenOver() && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
}

// OnPublish replaces any exgate-* user properties a client sent with the
// real publisher and time, so they cannot be forged.
func (h *hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	from := cl.ID
	if cl.Net.Inline {
		from = "exproto"
	}
	props := stripOurs(pk.Properties.User)
	pk.Properties.User = append(props,
		packets.UserProperty{Key: broker.PropFrom, Val: from},
		packets.UserProperty{Key: broker.PropTime, Val: strconv.FormatInt(time.Now().UnixMilli(), 10)})
	return pk, nil
}

// OnPacketEncode hides the stamps from everyone but device sessions.
func (h *hook) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type == packets.Publish && cl.Net.Listener != deviceListener && len(pk.Properties.User) > 0 {
		pk.Properties.User = stripOurs(pk.Properties.User)
	}
	return pk
}

func stripOurs(in []packets.UserProperty) []packets.UserProperty {
	out := in[:0:0]
	for _, p := range in {
		if p.Key != broker.PropFrom && p.Key != broker.PropTime {
			out = append(out, p)
		}
	}
	return out
}

func addr(s string) net.Addr {
	a, err := net.ResolveTCPAddr("tcp", s)
	if err != nil {
		return nil
	}
	return a
}

// memListener is an in-memory net.Listener: Dial hands one end of a pipe to
// Accept.
type memListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newMemListener() *memListener {
	return &memListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

var errListenerClosed = errors.New("embedded broker: closed")

func (l *memListener) Dial(ctx context.Context) (net.Conn, error) {
	client, server := net.Pipe()
	select {
	case l.conns <- server:
		return client, nil
	case <-l.done:
	case <-ctx.Done():
	}
	_ = client.Close()
	_ = server.Close()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return nil, errListenerClosed
}

func (l *memListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *memListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *memListener) Addr() net.Addr { return memAddr{} }

type memAddr struct{}

func (memAddr) Network() string { return "memory" }
func (memAddr) String() string  { return "exgate-devices" }

// quietLog tones mochi's log down to exgate's: its warning about keepalive
// 0, which every in-memory device session has on purpose, is dropped.
type quietLog struct{ slog.Handler }

func (q quietLog) Handle(ctx context.Context, r slog.Record) error {
	if strings.HasPrefix(r.Message, "client keepalive is below minimum") {
		return nil
	}
	// Info chatter, and the message-less warnings mochi logs when a client's
	// connection ends during shutdown, are Debug.
	if r.Level == slog.LevelInfo || (r.Level == slog.LevelWarn && r.Message == "") {
		r.Level = slog.LevelDebug
		if !q.Handler.Enabled(ctx, r.Level) {
			return nil
		}
	}
	return q.Handler.Handle(ctx, r)
}

func (q quietLog) Enabled(ctx context.Context, l slog.Level) bool {
	if l == slog.LevelInfo {
		l = slog.LevelDebug
	}
	return q.Handler.Enabled(ctx, l)
}

func (q quietLog) WithAttrs(a []slog.Attr) slog.Handler { return quietLog{q.Handler.WithAttrs(a)} }
func (q quietLog) WithGroup(n string) slog.Handler      { return quietLog{q.Handler.WithGroup(n)} }
