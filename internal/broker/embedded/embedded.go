// Package embedded is the in-process MQTT broker (mochi-mqtt) that exgate
// runs by default: ordinary MQTT clients connect to its TCP listener, and
// every authenticated device is a client of it too, in-process and without
// a connection or goroutine of its own (see device.go), so both kinds of
// client share one clientid namespace, one retained store and one set of
// subscriptions.
package embedded

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/exgate/exgate/internal/broker"
)

// deviceListener is the mochi listener id of device sessions; the hook
// trusts it because the gateway authenticated and authorizes devices itself.
const deviceListener = "exgate-devices"

// The mochi listener ids of the MQTT listeners (Close closes them by id).
const (
	tcpListener = "tcp"
	tlsListener = "ssl"
	wsListener  = "ws"
)

// Options configure a Broker. The zero value runs without a TCP listener
// and lets every MQTT client in.
type Options struct {
	// Bind is the host:port of the MQTT TCP listener; empty disables it.
	Bind string
	// TLSBind, with TLS, is an MQTT-over-TLS listener; empty disables it.
	TLSBind string
	TLS     *tls.Config
	// WSBind is an MQTT-over-WebSocket listener (wss with WSTLS); empty
	// disables it.
	WSBind string
	WSTLS  *tls.Config
	Logger *slog.Logger
	// Authenticate checks an MQTT client of the TCP listener; nil allows all.
	Authenticate func(clientID, username, password string, peer net.Addr) bool
	// Authorize checks an MQTT client's publish (write) or subscribe; nil allows all.
	Authorize func(clientID, username, topic string, write bool, peer net.Addr) bool
}

// Broker is the embedded broker. It implements broker.Broker.
type Broker struct {
	srv *mqtt.Server
	// maker makes device clients and is never served: its clients have no
	// write queue, and its hooks receive what mochi sends them.
	maker *mqtt.Server
	tcp   net.Listener // nil without a TCP listener
	tls   net.Listener // nil without a TLS listener
	ws    *listeners.Websocket
	seq   atomic.Uint64

	// takenOver holds MQTT clients a device took over, so the disconnect
	// hook does not wait for mochi's own takeover mark on them.
	takenOver sync.Map // *mqtt.Client → struct{}
	// establishing holds MQTT clients that take over another MQTT client's
	// session, until mochi has marked the old one taken over (see
	// OnDisconnect).
	establishing sync.Map // *mqtt.Client → chan struct{}

	mu      sync.Mutex
	closed  bool
	holders map[string]holder           // clientid → who holds it
	anon    map[*deviceSession]struct{} // devices without a clientid
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
	quiet := slog.New(quietLog{log.Handler()})
	srv := mqtt.New(&mqtt.Options{InlineClient: true, Capabilities: caps, Logger: quiet})
	if err := slowHousekeeping(srv, housekeeping); err != nil {
		log.Warn("embedded broker: housekeeping left at once a second", "error", err)
	}
	makerCaps := *caps
	makerCaps.MaximumClientWritesPending = 0
	maker := mqtt.New(&mqtt.Options{
		Capabilities: &makerCaps,
		// A device client's reader is never used: the smallest buffer bufio allows.
		ClientNetReadBufferSize: 16,
		Logger:                  quiet,
	})
	b := &Broker{srv: srv, maker: maker, holders: map[string]holder{}, anon: map[*deviceSession]struct{}{}}
	if err := srv.AddHook(&hook{o: o, b: b}, nil); err != nil {
		return nil, fmt.Errorf("embedded broker: add hook: %w", err)
	}
	if err := maker.AddHook(&makerHook{b: b}, nil); err != nil {
		return nil, fmt.Errorf("embedded broker: add hook: %w", err)
	}
	fail := func(err error) (*Broker, error) {
		_ = srv.Close()
		return nil, fmt.Errorf("embedded broker: %w", err)
	}
	if o.Bind != "" {
		ln, err := net.Listen("tcp", o.Bind)
		if err != nil {
			return fail(fmt.Errorf("listen on %s: %w", o.Bind, err))
		}
		b.tcp = ln
		if err := srv.AddListener(listeners.NewNet(tcpListener, ln)); err != nil {
			_ = ln.Close()
			return fail(err)
		}
	}
	if o.TLSBind != "" {
		ln, err := net.Listen("tcp", o.TLSBind)
		if err != nil {
			return fail(fmt.Errorf("listen on %s: %w", o.TLSBind, err))
		}
		b.tls = ln
		if err := srv.AddListener(listeners.NewNet(tlsListener, tls.NewListener(ln, o.TLS))); err != nil {
			_ = ln.Close()
			return fail(err)
		}
	}
	if o.WSBind != "" {
		// mochi's WebSocket listener binds its own address when served and
		// only logs a failure: try the address first, so a taken port is
		// an error here.
		ln, err := net.Listen("tcp", o.WSBind)
		if err != nil {
			return fail(fmt.Errorf("listen on %s: %w", o.WSBind, err))
		}
		_ = ln.Close()
		b.ws = listeners.NewWebsocket(listeners.Config{ID: wsListener, Address: o.WSBind, TLSConfig: o.WSTLS})
		if err := srv.AddListener(b.ws); err != nil {
			return fail(err)
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

// TLSAddr is the bound MQTT-over-TLS address, or nil.
func (b *Broker) TLSAddr() net.Addr {
	if b.tls == nil {
		return nil
	}
	return b.tls.Addr()
}

// WSAddr is the MQTT-over-WebSocket address as configured, or "".
func (b *Broker) WSAddr() string {
	if b.ws == nil {
		return ""
	}
	return b.ws.Address()
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

// Close ends every device session (mochi does not know them as
// connections), then stops the listeners and disconnects every MQTT client.
func (b *Broker) Close() error {
	b.mu.Lock()
	b.closed = true
	var devs []*deviceSession
	for _, h := range b.holders {
		if h.dev != nil {
			devs = append(devs, h.dev)
		}
	}
	for d := range b.anon {
		devs = append(devs, d)
	}
	b.mu.Unlock()
	for _, d := range devs {
		d.end(broker.ErrKicked)
	}
	// mochi closes a listener's clients from Clients.GetByListener, which
	// takes the clients' read lock twice and deadlocks when a client leaves
	// in between (mochi-mqtt/server#488, open in v2.7.9): a shutdown while
	// MQTT clients disconnect hung for good. So the listeners close without
	// that step and leave mochi's list (its WebSocket listener would take
	// it on a second Close), the clients are disconnected from a copy of
	// the client list, and srv.Close then only waits for them to go.
	for _, id := range []string{tcpListener, tlsListener, wsListener} {
		b.srv.Listeners.Close(id, func(string) {})
		b.srv.Listeners.Delete(id)
	}
	for _, cl := range b.srv.Clients.GetAll() {
		if cl.Net.Listener != deviceListener && !cl.Closed() {
			_ = b.srv.DisconnectClient(cl, packets.ErrServerShuttingDown)
		}
	}
	return b.srv.Close()
}

// hook applies exgate's authentication and authorization to ordinary MQTT
// clients, keeps the clientid namespace they share with devices, and stamps
// each publish with its publisher and time for devices.
type hook struct {
	mqtt.HookBase
	o Options
	b *Broker
}

func (h *hook) ID() string { return "exgate" }

func (h *hook) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnPublish, mqtt.OnPacketEncode,
		mqtt.OnSessionEstablish, mqtt.OnSessionEstablished, mqtt.OnDisconnect}, []byte{b})
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

// OnSessionEstablish runs for an authenticated MQTT client before mochi
// registers it: it claims the clientid, and a device holding it is taken
// over (mochi itself takes over an MQTT client holding it).
func (h *hook) OnSessionEstablish(cl *mqtt.Client, _ packets.Packet) {
	h.b.mu.Lock()
	prev := h.b.claimLocked(cl.ID, holder{mq: cl})
	h.b.mu.Unlock()
	if prev.dev != nil {
		h.b.evict(prev)
	}
	if prev.mq != nil {
		h.b.establishing.Store(cl, make(chan struct{}))
	}
}

// OnSessionEstablished runs after mochi took over the previous holder's
// session (and marked it taken over); a cleanup waiting for that goes on.
func (h *hook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	if ch, ok := h.b.establishing.LoadAndDelete(cl); ok {
		close(ch.(chan struct{}))
	}
}

// OnDisconnect releases the clientid, and closes a race in mochi's
// takeover between MQTT clients: the old client's own cleanup checks
// IsTakenOver before the new client's CONNECT has set it, then deletes the
// client id from the registry after the new client was added under it, and
// the new session silently receives nothing. A client stopped for such a
// takeover waits here until the new client's session is established (the
// takeover is marked by then), or the new client gave up.
func (h *hook) OnDisconnect(cl *mqtt.Client, _ error, _ bool) {
	if ch, ok := h.b.establishing.LoadAndDelete(cl); ok { // a new client that failed before establishing
		close(ch.(chan struct{}))
	}
	h.b.mu.Lock()
	cur := h.b.holders[cl.ID]
	if cur.mq == cl {
		delete(h.b.holders, cl.ID)
	}
	h.b.mu.Unlock()
	if _, byDevice := h.b.takenOver.LoadAndDelete(cl); byDevice || !errors.Is(cl.StopCause(), packets.ErrSessionTakenOver) || cur.mq == nil || cur.mq == cl {
		return
	}
	if ch, ok := h.b.establishing.Load(cur.mq); ok {
		t := time.NewTimer(2 * time.Second) // a bound, should mochi change
		defer t.Stop()
		select {
		case <-ch.(chan struct{}):
		case <-t.C:
		}
	}
}

// OnPublish replaces any exgate-* user properties a client sent with the
// real publisher and time, so they cannot be forged.
func (h *hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	from := cl.ID
	if dc, ok := cl.Net.Conn.(*devConn); ok {
		from = dc.d.from
	} else if cl.Net.Inline {
		from = "exproto"
	}
	props := stripOurs(pk.Properties.User)
	pk.Properties.User = append(props,
		packets.UserProperty{Key: broker.PropFrom, Val: from},
		packets.UserProperty{Key: broker.PropTime, Val: strconv.FormatInt(time.Now().UnixMilli(), 10)})
	return pk, nil
}

// OnPacketEncode hides the stamps from MQTT clients.
func (h *hook) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type == packets.Publish && len(pk.Properties.User) > 0 {
		pk.Properties.User = stripOurs(pk.Properties.User)
	}
	return pk
}

// makerHook receives what mochi sends device clients: deliveries, which
// the unbuffered write queue turns into "dropped" publishes, and the acks
// of injected subscribes.
type makerHook struct {
	mqtt.HookBase
	b *Broker
}

func (h *makerHook) ID() string { return "exgate-devices" }

func (h *makerHook) Provides(b byte) bool {
	return b == mqtt.OnPublishDropped || b == mqtt.OnPacketEncode
}

func (h *makerHook) OnPublishDropped(cl *mqtt.Client, pk packets.Packet) {
	dc, ok := cl.Net.Conn.(*devConn)
	if !ok {
		return
	}
	// mochi counted a drop; it was a delivery.
	atomic.AddInt64(&h.b.srv.Info.MessagesDropped, -1)
	atomic.AddInt64(&h.b.srv.Info.MessagesSent, 1)
	dc.d.deliver(&pk, grantedQoS)
}

func (h *makerHook) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if dc, ok := cl.Net.Conn.(*devConn); ok && (pk.FixedHeader.Type == packets.Suback || pk.FixedHeader.Type == packets.Unsuback) {
		dc.d.ack = pk.ReasonCodes // the injecting call holds opMu
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
