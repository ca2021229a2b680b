// Package gateway assembles exgate from its configuration: the broker, the
// handler client, the adapter server and the device listeners, and takes
// them down again in an order that lets every device's OnSocketClosed reach
// the handler.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	pb "github.com/exgate/exgate/exprotopb"
	"github.com/exgate/exgate/internal/adapter"
	"github.com/exgate/exgate/internal/auth"
	"github.com/exgate/exgate/internal/banned"
	"github.com/exgate/exgate/internal/broker"
	"github.com/exgate/exgate/internal/broker/embedded"
	mqttbroker "github.com/exgate/exgate/internal/broker/mqtt"
	"github.com/exgate/exgate/internal/channel"
	"github.com/exgate/exgate/internal/cluster"
	"github.com/exgate/exgate/internal/config"
	"github.com/exgate/exgate/internal/handler"
	"github.com/exgate/exgate/internal/listener"
	"github.com/exgate/exgate/internal/metrics"
	"github.com/exgate/exgate/internal/tlsconfig"
	"github.com/exgate/exgate/internal/trace"
)

// Gateway is one running exgate.
type Gateway struct {
	cfg      *config.Config
	log      *slog.Logger
	Stats    *channel.Stats
	Reg      *channel.Registry
	Metrics  *metrics.Metrics
	Tracer   *trace.Tracer
	Banned   *banned.List // refused at authentication, devices and MQTT clients alike
	pool     *channel.Pool
	started  atomic.Int64 // unix nanos of Start; 0 before (read by the API's goroutines)
	shedding atomic.Bool  // listeners refuse connections: too many devices are closing

	broker   broker.Broker
	embedded *embedded.Broker // nil with an external broker
	peers    *cluster.Peers
	// Owned by New and Reload, closed at shutdown: every chain, authorizer
	// and handler client ever made (a reload keeps the old ones for the
	// devices that still use them).
	authns    []*auth.Authenticator
	authzs    []*auth.Authorizer
	gwAuthn   atomic.Pointer[auth.Authenticator] // current, for the embedded broker's clients
	gwAuthz   atomic.Pointer[auth.Authorizer]
	handler   *handler.Client   // the gateway's handler
	handlers  []*handler.Client // it and the listeners' own
	grpc      *grpc.Server
	adapterLn net.Listener
	serving   sync.WaitGroup

	mu        sync.RWMutex      // guards cfg and listeners after New; reloadMu is taken first
	listeners []*deviceListener // current
	retired   []*deviceListener // replaced by a reload, waited for at shutdown
	reloadMu  sync.Mutex        // one reload at a time

	shutdownOnce sync.Once
	shutdownErr  error
}

// deviceListener is a listener and the channel config its new devices get.
type deviceListener struct {
	*listener.Listener
	typ, name string
	conf      *config.Listener
	ch        atomic.Pointer[channel.Config] // swapped by a reload
}

// New binds every port and connects nothing yet; on error everything
// already opened is closed again.
func New(cfg *config.Config, log *slog.Logger) (_ *Gateway, err error) {
	x := cfg.Gateway.ExProto
	g := &Gateway{cfg: cfg, log: log, Stats: &channel.Stats{}, Reg: channel.NewRegistry(), pool: channel.NewPool(10 * time.Second), Metrics: metrics.New(), Tracer: trace.New(cfg.Trace.Dir, trace.Limits{MaxActive: cfg.Trace.MaxActive, MaxBytes: int64(cfg.Trace.MaxBytes)})}
	fb := cfg.Gateway.ExProto.LoginFailureBan
	g.Banned = banned.New(banned.Limits{MaxFailures: fb.MaxFailures, MaxHostFailures: fb.MaxHostFailures, Window: fb.Window, BanTime: fb.BanTime})
	defer func() {
		if err != nil {
			g.closeAll()
		}
	}()

	authn, authz, err := g.newAuth(x)
	if err != nil {
		return nil, err
	}
	g.gwAuthn.Store(authn)
	g.gwAuthz.Store(authz)
	if authn == nil {
		log.Info("no authentication configured: every device and MQTT client is allowed to connect")
	}

	if m := cfg.Broker.MQTT; m.Enabled() {
		if g.broker, err = mqttbroker.New(mqttbroker.Options{Config: m, Node: cfg.Node.Name, Logger: log.With("component", "broker")}); err != nil {
			return nil, err
		}
		log.Info("external broker: devices become sessions upstream; the embedded broker is not started", "servers", strings.Join(m.Servers, ","))
	} else {
		bind := ""
		if l := cfg.Broker.Embedded.Listeners.TCP; l.Enabled() {
			bind = config.BindAddress(l.Bind)
		}
		g.embedded, err = embedded.New(embedded.Options{
			Bind:         bind,
			Logger:       log.With("component", "broker"),
			Authenticate: g.mqttAuthn,
			Authorize:    g.mqttAuthz,
		})
		if err != nil {
			return nil, err
		}
		g.broker = g.embedded
	}
	if g.peers, err = cluster.New(cfg.Cluster, x.Server.AuthToken); err != nil {
		return nil, err
	}

	if g.handler, err = g.newHandler(x.Handler); err != nil {
		return nil, err
	}

	ln, err := net.Listen("tcp", config.BindAddress(x.Server.Bind))
	if err != nil {
		return nil, fmt.Errorf("adapter server: listen on %s: %w", x.Server.Bind, err)
	}
	g.adapterLn = adapter.SniffListener(ln, x.Server.SSLOptions != nil, g.deviceAddrs, log.With("component", "adapter"))
	g.grpc, err = adapter.NewGRPCServer(adapter.New(g.Reg, g.broker, g.peers, log.With("component", "adapter")), adapter.GRPCOptions{
		TLS: x.Server.SSLOptions, MaxRecvMessageSize: int(x.Server.MaxRecvMessageSize), AuthToken: x.Server.AuthToken,
		Observe: g.Metrics.AdapterCall,
	})
	if err != nil {
		return nil, err
	}

	var lerr error
	x.Listeners.Each(func(typ, name string, l *config.Listener) {
		if lerr != nil || !l.Enabled() {
			return
		}
		var dl *deviceListener
		if dl, lerr = g.listen(cfg, typ, name, l, authn, authz, g.handler); lerr == nil {
			g.listeners = append(g.listeners, dl)
		}
	})
	if lerr != nil {
		return nil, lerr
	}
	g.registerMetrics()
	return g, nil
}

// newAuth makes the gateway's authentication chain and authorizer.
func (g *Gateway) newAuth(x config.ExProto) (*auth.Authenticator, *auth.Authorizer, error) {
	authLog := g.log.With("component", "auth")
	authn, err := auth.NewAuthenticator(x.Authentication, authLog)
	if err != nil {
		return nil, nil, fmt.Errorf("gateway.exproto.%w", err)
	}
	authz, err := auth.NewAuthorizer(x.Authorization, authLog)
	if err != nil {
		authn.Close()
		return nil, nil, fmt.Errorf("gateway.exproto.%w", err)
	}
	g.authns = append(g.authns, authn)
	g.authzs = append(g.authzs, authz)
	return authn, authz, nil
}

// newHandler starts a handler client whose lost devices are closed.
func (g *Gateway) newHandler(h config.Handler) (*handler.Client, error) {
	c, err := handler.New(handler.Options{Config: h, Logger: g.log.With("component", "handler"), Lost: g.kick,
		Observe: func(method string, d time.Duration, err error) {
			code := ""
			if err != nil {
				code = status.Code(err).String()
			}
			g.Metrics.HandlerCall(method, d, code)
		}})
	if err != nil {
		return nil, err
	}
	g.handlers = append(g.handlers, c)
	return c, nil
}

// kick closes the devices with these conn ids.
func (g *Gateway) kick(ids []string, reason string) {
	for _, id := range ids {
		if c, ok := g.Reg.Get(id); ok {
			c.Kick(reason)
		}
	}
}

// deviceAddrs lists the device listeners, for the adapter's wrong-port hint.
func (g *Gateway) deviceAddrs() string {
	var parts []string
	for _, l := range g.Listeners() {
		parts = append(parts, l.Name()+" "+l.Addr().String())
	}
	return strings.Join(parts, ", ")
}

// maxClosing is how many closed devices may wait for their OnSocketClosed
// before the listeners shed new connections at accept. A closed device
// holds a few KiB until then; its socket and listener slot are free already.
const maxClosing = 10_000

// overloaded reports whether new connections should be refused, and says
// so once when shedding starts and once when it stops.
func (g *Gateway) overloaded() bool {
	n := g.Stats.Closing.Load()
	over := n >= maxClosing
	if g.shedding.CompareAndSwap(!over, over) {
		if over {
			g.log.Warn("refusing new connections: closed devices wait for the handler's OnSocketClosed", "closing", n, "limit", maxClosing)
		} else {
			g.log.Info("accepting new connections again", "closing", n)
		}
	}
	return over
}

// listenerOptions turns a listener's configuration into listener options,
// TLS included.
func (g *Gateway) listenerOptions(typ, name string, l *config.Listener) (listener.Options, error) {
	kind, err := listener.ParseKind(typ)
	if err != nil {
		return listener.Options{}, err
	}
	o := listener.Options{
		Name: name, Kind: kind, Bind: config.BindAddress(l.Bind),
		MaxConnections: l.MaxConnections, MaxConnRate: l.ConnRate(),
		ProxyProtocol: l.ProxyProtocol, ProxyTimeout: l.ProxyProtocolTimeout,
		TCP: l.SocketOpts(), Logger: g.log, Overloaded: g.overloaded,
	}
	if l.UDPOptions != nil {
		o.UDP = *l.UDPOptions
	}
	for _, r := range l.AccessRules {
		ar, _ := config.ParseAccessRule(r) // validated
		o.AccessRules = append(o.AccessRules, ar)
	}
	o.BytesRate, _ = config.ParseRate(l.BytesRate, true)
	o.MessagesRate, _ = config.ParseRate(l.MessagesRate, false)
	o.ListenerBytes, _ = config.ParseRate(l.ListenerBytesRate, true)
	where := fmt.Sprintf("gateway.exproto.listeners.%s.%s", typ, name)
	switch kind {
	case listener.SSL:
		if o.TLS, err = tlsconfig.Server("ssl_options", l.SSLOptions); err != nil {
			return o, fmt.Errorf("%s.%w", where, err)
		}
	case listener.DTLS:
		if o.DTLS, err = listener.DTLSConfig(l.DTLSOptions); err != nil {
			return o, fmt.Errorf("%s.%w", where, err)
		}
	}
	return o, nil
}

// deviceConfig is the channel config of a listener's new devices: the
// listener's own handler and authentication chain when it has them.
func (g *Gateway) deviceConfig(cfg *config.Config, kind listener.Kind, name string, l *config.Listener, authn *auth.Authenticator, authz *auth.Authorizer, h *handler.Client) (*channel.Config, error) {
	where := fmt.Sprintf("gateway.exproto.listeners.%s.%s", kind, name)
	hc := cfg.Gateway.ExProto.Handler
	if l.Handler != nil {
		hc = l.Handler.Over(hc)
		var err error
		if h, err = g.newHandler(hc); err != nil {
			return nil, fmt.Errorf("%s.handler: %w", where, err)
		}
	}
	if len(l.Authentication) > 0 { // the listener's chain first, then the gateway's
		chain := append(append([]config.Authenticator(nil), l.Authentication...), cfg.Gateway.ExProto.Authentication...)
		var err error
		if authn, err = auth.NewAuthenticator(chain, g.log.With("component", "auth", "listener", kind.String()+":"+name)); err != nil {
			return nil, fmt.Errorf("%s.%w", where, err)
		}
		g.authns = append(g.authns, authn)
	}
	cc := g.channelConfig(cfg, kind, name, l, authn, authz)
	cc.Handler, cc.RequestTimeout, cc.MaxRequestBytes = h, hc.RequestTimeout, int(hc.MaxRequestBytes)
	return cc, nil
}

// listen binds one configured listener.
func (g *Gateway) listen(cfg *config.Config, typ, name string, l *config.Listener, authn *auth.Authenticator, authz *auth.Authorizer, h *handler.Client) (*deviceListener, error) {
	o, err := g.listenerOptions(typ, name, l)
	if err != nil {
		return nil, err
	}
	cc, err := g.deviceConfig(cfg, o.Kind, name, l, authn, authz, h)
	if err != nil {
		return nil, err
	}
	ln, err := listener.Listen(o)
	if err != nil {
		return nil, err
	}
	dl := &deviceListener{Listener: ln, typ: typ, name: name, conf: l}
	dl.ch.Store(cc)
	return dl, nil
}

// channelConfig is what every channel of one listener shares.
func (g *Gateway) channelConfig(cfg *config.Config, kind listener.Kind, name string, l *config.Listener, authn *auth.Authenticator, authz *auth.Authorizer) *channel.Config {
	x := cfg.Gateway.ExProto
	mp := x.Mountpoint
	if l.Mountpoint != nil {
		mp = *l.Mountpoint
	}
	idle := x.IdleTimeout
	if l.IdleTimeout > 0 {
		idle = l.IdleTimeout
	}
	readBuf := 4096
	if kind == listener.DTLS {
		readBuf = 16 << 10 // one whole DTLS record
	}
	c := &channel.Config{
		Node:              cfg.Node.Name,
		NodeTag:           channel.TagOf(cfg.Node.Name),
		Broker:            g.broker,
		Handler:           g.handler,
		Mountpoint:        mp,
		IdleTimeout:       idle,
		AuthTimeout:       x.AuthTimeout,
		SendTimeout:       l.SocketOpts().SendTimeout,
		Datagram:          kind == listener.UDP,
		ReadBufferSize:    readBuf,
		RequestTimeout:    x.Handler.RequestTimeout,
		CloseFlushTimeout: x.CloseFlushTimeout,
		MaxBatch:          x.MaxMessagesPerDelivery,
		EventQueue:        x.EventQueue,
		MaxMqueueLen:      x.MaxMqueueLen,
		Registry:          g.Reg,
		Pool:              g.pool,
		Trace:             g.Tracer.Event,
		Tracing:           g.Tracer.Active,
		Banned:            g.Banned,
		Stats:             g.Stats,
		Logger:            g.log.With("listener", kind.String()+":"+name),
	}
	if authn != nil && l.AuthnEnabled() {
		c.Authenticate = func(ctx context.Context, cr channel.Credentials) (channel.AuthResult, error) {
			res, err := authn.Authenticate(ctx, auth.Request{ClientID: cr.ClientID, Username: cr.Username, Password: cr.Password, ProtoName: cr.ProtoName, Peer: cr.Peer})
			return channel.AuthResult{Superuser: res.Superuser, ExpireAt: res.ExpireAt}, err
		}
	}
	if authz != nil {
		c.Authorize = func(w channel.Who, publish bool, topic string) bool {
			return authz.Allow(auth.Who{ClientID: w.ClientID, Username: w.Username, Peer: w.Peer}, publish, topic)
		}
	}
	return c
}

// mqttAuthn and mqttAuthz apply the current gateway chain and rules to the
// embedded broker's own MQTT clients.
func (g *Gateway) mqttAuthn(clientID, username, password string, peer net.Addr) bool {
	if _, ok := g.Banned.Banned(clientID, username, peer); ok {
		g.Stats.Banned.Add(1)
		return false
	}
	a := g.gwAuthn.Load()
	if a == nil {
		return true
	}
	_, err := a.Authenticate(context.Background(), auth.Request{ClientID: clientID, Username: username, Password: password, Peer: peer})
	if err != nil {
		if e, banned := g.Banned.Failed(clientID, peer); banned {
			g.log.Warn("client banned after failed authentications", "as", e.As, "who", e.Who, "until", e.Until)
		}
	}
	return err == nil
}

func (g *Gateway) mqttAuthz(clientID, username, topic string, write bool, peer net.Addr) bool {
	return g.gwAuthz.Load().Allow(auth.Who{ClientID: clientID, Username: username, Peer: peer}, write, topic)
}

// Start serves the adapter and the device listeners.
func (g *Gateway) Start() {
	g.started.Store(time.Now().UnixNano())
	g.serving.Go(func() {
		if err := g.grpc.Serve(g.adapterLn); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			g.log.Error("adapter server stopped", "error", err)
		}
	})
	g.mu.RLock()
	for _, l := range g.listeners {
		g.serve(l)
	}
	g.mu.RUnlock()
	attrs := []any{"adapter", g.adapterLn.Addr().String(), "handler", g.cfg.Gateway.ExProto.Handler.Address.String()}
	if a := g.MQTTAddr(); a != nil {
		attrs = append(attrs, "mqtt", a.String())
	}
	for _, l := range g.Listeners() {
		attrs = append(attrs, l.Name(), l.Addr().String())
	}
	g.log.Info("exgate started", attrs...)
}

// serve accepts l's devices, each with the channel config current then.
func (g *Gateway) serve(l *deviceListener) {
	g.serving.Go(func() {
		_ = l.Serve(func(conn *listener.Conn) func() { return g.startDevice(l.ch.Load(), conn) })
	})
}

// socketTypes maps listener kinds to ExProto's SocketType; DTLS is
// reported as DTLS (spec §2: EMQX said SSL).
var socketTypes = map[listener.Kind]pb.SocketType{
	listener.TCP: pb.SocketType_TCP, listener.SSL: pb.SocketType_SSL,
	listener.UDP: pb.SocketType_UDP, listener.DTLS: pb.SocketType_DTLS,
}

// startDevice makes a device's channel and returns what reads its
// connection until it ends.
func (g *Gateway) startDevice(cfg *channel.Config, conn *listener.Conn) func() {
	info := &pb.ConnInfo{Socktype: socketTypes[conn.Kind], Peername: address(conn.Peer), Sockname: address(conn.LocalAddr())}
	if c := conn.PeerCert; c != nil {
		info.Peercert = &pb.CertificateInfo{Cn: c.Subject.CommonName, Dn: c.Subject.String()}
	}
	ch := channel.New(cfg, conn, info, conn.Kind == listener.SSL || conn.Kind == listener.DTLS)
	return ch.Reader(conn.Conn)
}

func address(a net.Addr) *pb.Address {
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return &pb.Address{Host: a.String()}
	}
	p, _ := strconv.Atoi(port)
	return &pb.Address{Host: host, Port: uint32(p)}
}

// AdapterAddr is the bound ConnectionAdapter address.
func (g *Gateway) AdapterAddr() net.Addr { return g.adapterLn.Addr() }

// MQTTAddr is the embedded broker's MQTT address, or nil.
func (g *Gateway) MQTTAddr() net.Addr {
	if g.embedded == nil {
		return nil
	}
	return g.embedded.Addr()
}

// Listener returns the listener "type:name", or nil.
func (g *Gateway) Listener(name string) *listener.Listener {
	for _, l := range g.Listeners() {
		if l.Name() == name {
			return l
		}
	}
	return nil
}

// ListenerAddr is the bound address of the listener "type:name" (a bare
// name means tcp), or nil.
func (g *Gateway) ListenerAddr(name string) net.Addr {
	if !strings.Contains(name, ":") {
		name = "tcp:" + name
	}
	for _, l := range g.Listeners() {
		if l.Name() == name {
			return l.Addr()
		}
	}
	return nil
}

// Shutdown stops accepting devices, closes every device with
// {shutdown,gateway_stopped} and waits (until ctx ends) for their
// OnSocketClosed, then stops the adapter, the handler client and the broker.
// Shutdown is idempotent; later calls return the first call's result.
func (g *Gateway) Shutdown(ctx context.Context) error {
	g.shutdownOnce.Do(func() { g.shutdownErr = g.shutdown(ctx) })
	return g.shutdownErr
}

func (g *Gateway) shutdown(ctx context.Context) error {
	g.reloadMu.Lock() // no reload from here on
	defer g.reloadMu.Unlock()
	g.mu.RLock()
	all := append(append([]*deviceListener(nil), g.listeners...), g.retired...)
	g.mu.RUnlock()
	for _, l := range all {
		_ = l.Close()
	}
	var err error
	for _, c := range g.Reg.All() {
		c.Kick(channel.ReasonGatewayStopped)
	}
	for _, c := range g.Reg.All() {
		select {
		case <-c.Done():
		case <-ctx.Done():
			err = fmt.Errorf("shutdown: %d devices still closing: %w", g.Reg.Len(), ctx.Err())
		}
		if err != nil {
			break
		}
	}
	for _, l := range all {
		l.Wait()
	}
	stopped := make(chan struct{})
	go func() { g.grpc.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(2 * time.Second):
		g.grpc.Stop()
		<-stopped
	}
	g.serving.Wait()
	g.closeAll()
	return err
}

func (g *Gateway) closeAll() {
	defer g.pool.Close() // after the handlers: nothing dispatches any more
	defer g.Tracer.Close()
	for _, h := range g.handlers {
		_ = h.Close()
	}
	for _, l := range g.listeners {
		_ = l.Close()
	}
	if g.grpc != nil {
		g.grpc.Stop() // its stream workers run from NewServer on, served or not
	}
	if g.adapterLn != nil { // grpc.Serve closed it already, or never ran
		_ = g.adapterLn.Close()
	}
	if g.broker != nil {
		_ = g.broker.Close()
	}
	g.peers.Close()
	for _, a := range g.authns {
		a.Close()
	}
	for _, a := range g.authzs {
		a.Close()
	}
}

// registerMetrics exports the gateway's and listeners' counters.
func (g *Gateway) registerMetrics() {
	m, st := g.Metrics, g.Stats
	f := func(a *atomic.Int64) func() float64 { return func() float64 { return float64(a.Load()) } }
	// EMQX's gateway counters (spec §4).
	m.Counter("exgate_bytes_received_total", "Bytes received from devices.", nil, f(&st.BytesReceived))
	m.Counter("exgate_bytes_sent_total", "Bytes sent to devices.", nil, f(&st.BytesSent))
	m.Counter("exgate_messages_delivered_total", "Messages the handler accepted in OnReceivedMessages.", nil, f(&st.MessagesDelivered))
	m.Counter("exgate_messages_published_total", "Messages devices published to the broker.", nil, f(&st.MessagesPublished))
	for reason, a := range map[string]*atomic.Int64{"queue_full": &st.DroppedQueueFull, "qos0_msg": &st.DroppedQoS0, "closed": &st.DroppedClosed} {
		m.Counter("exgate_delivery_dropped_total", "Deliveries to devices dropped, by reason: queue_full (QoS 1/2, the device's queue was full), qos0_msg (QoS 0, queue full), closed (the device closed first).", prometheus.Labels{"reason": reason}, f(a))
	}
	m.Gauge("exgate_connections_closing", "Closed devices whose OnSocketClosed is not answered yet.", nil, f(&st.Closing))
	m.Counter("exgate_handler_close_failed_total", "OnSocketClosed calls that failed or timed out.", nil, f(&st.CloseFailed))
	m.Counter("exgate_client_connect_total", "Authenticate calls.", nil, f(&st.ClientConnect))
	m.Counter("exgate_client_connected_total", "Successful Authenticate calls.", nil, f(&st.ClientConnected))
	m.Counter("exgate_client_disconnected_total", "Authenticated devices that closed.", nil, f(&st.Disconnected))
	m.Counter("exgate_client_auth_failure_total", "Failed Authenticate calls.", nil, f(&st.AuthFailed))
	m.Counter("exgate_client_banned_refused_total", "Authentications refused because the client (clientid, username or peer host) is banned.", nil, f(&st.Banned))
	m.Gauge("exgate_banned", "Entries in the banned list.", nil, func() float64 { return float64(g.Banned.Len()) })
	m.Counter("exgate_authorization_deny_total", "Publishes and subscriptions denied.", nil, f(&st.AuthzDenied))
	m.Gauge("exgate_connections", "Open device connections, any state.", nil, func() float64 { return float64(g.Reg.Len()) })
	m.Gauge("exgate_connections_authenticated", "Authenticated device connections.", nil, func() float64 { return float64(g.Reg.Connected()) })
	m.Registry.MustRegister(listenerCollector{g})
}

// Ready reports whether the listeners are bound and a handler is reachable.
func (g *Gateway) Ready() bool {
	g.mu.RLock()
	h := g.handler
	g.mu.RUnlock()
	return g.started.Load() != 0 && h.Ready()
}

// Node is this gateway's node name.
func (g *Gateway) Node() string {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.cfg.Node.Name
}

// StartedAt is when Start ran.
func (g *Gateway) StartedAt() time.Time {
	if ns := g.started.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// Listeners returns the device listeners.
func (g *Gateway) Listeners() []*listener.Listener {
	g.mu.RLock()
	defer g.mu.RUnlock()
	out := make([]*listener.Listener, len(g.listeners))
	for i, l := range g.listeners {
		out[i] = l.Listener
	}
	return out
}

// ListenerConfig returns the configuration of listener "type:name".
func (g *Gateway) ListenerConfig(name string) *config.Listener {
	g.mu.RLock()
	defer g.mu.RUnlock()
	var found *config.Listener
	g.cfg.Gateway.ExProto.Listeners.Each(func(typ, n string, l *config.Listener) {
		if typ+":"+n == name {
			found = l
		}
	})
	return found
}

// listenerCollector exports every current listener's counters at scrape
// time, so listeners a reload adds or replaces need no registration.
type listenerCollector struct{ g *Gateway }

var (
	descListenerConns    = prometheus.NewDesc("exgate_listener_connections", "Connections (UDP: peers) a listener serves now.", []string{"listener"}, nil)
	descListenerAccepted = prometheus.NewDesc("exgate_listener_accepted_total", "Connections accepted.", []string{"listener"}, nil)
	descListenerRefused  = prometheus.NewDesc("exgate_listener_refused_total", "Connections refused, by cause.", []string{"listener", "cause"}, nil)
	descListenerDropped  = prometheus.NewDesc("exgate_listener_datagrams_dropped_total", "UDP datagrams dropped (rate limits, refusals, full queues).", []string{"listener"}, nil)
	descListenerKernel   = prometheus.NewDesc("exgate_listener_kernel_drops_total", "UDP datagrams the kernel dropped because the listener's receive buffer was full (recbuf; Linux).", []string{"listener"}, nil)
	descListenerThrottle = prometheus.NewDesc("exgate_listener_throttled_total", "Reads slowed down by a rate limit.", []string{"listener"}, nil)
)

func (listenerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descListenerConns, descListenerAccepted, descListenerRefused, descListenerDropped, descListenerKernel, descListenerThrottle} {
		ch <- d
	}
}

func (c listenerCollector) Collect(ch chan<- prometheus.Metric) {
	for _, l := range c.g.Listeners() {
		st, n := &l.Stats, l.Name()
		ch <- prometheus.MustNewConstMetric(descListenerConns, prometheus.GaugeValue, float64(st.Current.Load()), n)
		ch <- prometheus.MustNewConstMetric(descListenerAccepted, prometheus.CounterValue, float64(st.Accepted.Load()), n)
		for cause, a := range map[string]*atomic.Int64{"max_connections": &st.RefusedLimit, "max_conn_rate": &st.RefusedRate, "overload": &st.RefusedOverload, "access_rules": &st.RefusedACL, "handshake": &st.HandshakeFailed} {
			ch <- prometheus.MustNewConstMetric(descListenerRefused, prometheus.CounterValue, float64(a.Load()), n, cause)
		}
		ch <- prometheus.MustNewConstMetric(descListenerDropped, prometheus.CounterValue, float64(st.DatagramsDropped.Load()), n)
		if k, ok := l.KernelDrops(); ok {
			ch <- prometheus.MustNewConstMetric(descListenerKernel, prometheus.CounterValue, float64(k), n)
		}
		ch <- prometheus.MustNewConstMetric(descListenerThrottle, prometheus.CounterValue, float64(st.Throttled.Load()), n)
	}
}
