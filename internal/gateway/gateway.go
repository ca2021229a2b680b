// Package gateway assembles exgate from its configuration: the broker, the
// handler client, the adapter server and the device listeners, and takes
// them down again in an order that lets every device's OnSocketClosed reach
// the handler.
package gateway

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

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
	"github.com/exgate/exgate/internal/netpoll"
	"github.com/exgate/exgate/internal/tlsconfig"
	"github.com/exgate/exgate/internal/trace"
	"github.com/exgate/exgate/nativepb"
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
	Version  string       // logged at start; set before Start
	pool     *channel.Pool
	poller   *netpoll.Poller // reads plain TCP devices without a goroutine each; nil where there is none
	batch    *handler.Batch  // the events of one poller report go to native handlers together
	started  atomic.Int64    // unix nanos of Start; 0 before (read by the API's goroutines)
	shedding atomic.Bool     // listeners refuse connections: too many devices are closing

	broker    broker.Broker
	embedded  *embedded.Broker // nil with an external broker
	peers     *cluster.Peers
	parts     parts                              // chains, authorizers, handler clients; owned by New and Reload
	gwAuthn   atomic.Pointer[auth.Authenticator] // current, for the embedded broker's clients
	gwAuthz   atomic.Pointer[auth.Authorizer]
	handler   *handler.Client // the gateway's handler
	adapter   *adapter.Server // serves handlers' calls, over gRPC or a native stream
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

// New binds every port and connects nothing yet; on error everything
// already opened is closed again.
func New(cfg *config.Config, log *slog.Logger) (_ *Gateway, err error) {
	x := cfg.Gateway.ExProto
	g := &Gateway{cfg: cfg, log: log, Stats: &channel.Stats{}, Reg: channel.NewRegistry(), parts: newParts(), pool: channel.NewPool(10 * time.Second), Metrics: metrics.New(), Tracer: trace.New(cfg.Trace.Dir, trace.Limits{MaxActive: cfg.Trace.MaxActive, MaxBytes: int64(cfg.Trace.MaxBytes)})}
	fb := cfg.Gateway.ExProto.LoginFailureBan
	g.Banned = banned.New(banned.Limits{MaxFailures: fb.MaxFailures, MaxHostFailures: fb.MaxHostFailures, Window: fb.Window, BanTime: fb.BanTime})
	defer func() {
		if err != nil {
			g.closeAll()
		}
	}()
	g.batch = handler.NewBatch()
	if g.poller, err = netpoll.New(runtime.GOMAXPROCS(0), g.batch.Run); err != nil {
		log.Info("no event loop here: each plain TCP device gets a reading goroutine", "error", err)
		g.poller, err = nil, nil
	}

	authn, authz, err := g.newAuth(x)
	if err != nil {
		return nil, err
	}
	g.gwAuthn.Store(authn)
	g.gwAuthz.Store(authz)
	if authn == nil {
		log.Info("no authentication configured: every device and MQTT client is allowed to connect")
	}
	if x.Server.Open() {
		log.Warn("the adapter takes calls from other machines without credentials: whoever reaches it can act for any device and publish anything; "+
			"set gateway.exproto.server.auth_token, or ssl_options with verify_peer and fail_if_no_peer_cert, or bind it to 127.0.0.1", "bind", x.Server.Bind)
	}

	if m := cfg.Broker.MQTT; m.Enabled() {
		if g.broker, err = mqttbroker.New(mqttbroker.Options{Config: m, Node: cfg.Node.Name, Logger: log.With("component", "broker"), Poller: g.poller}); err != nil {
			return nil, err
		}
		log.Info("external broker: devices become sessions upstream; the embedded broker is not started", "servers", strings.Join(m.Servers, ","))
	} else {
		eo := embedded.Options{
			Logger:       log.With("component", "broker"),
			Authenticate: g.mqttAuthn,
			Authorize:    g.mqttAuthz,
		}
		ls := cfg.Broker.Embedded.Listeners
		if ls.TCP.Enabled() {
			eo.Bind = config.BindAddress(ls.TCP.Bind)
		}
		if ls.SSL.Serving() {
			eo.TLSBind = config.BindAddress(ls.SSL.Bind)
			if eo.TLS, err = tlsconfig.Server("broker.embedded.listeners.ssl.ssl_options", ls.SSL.SSLOptions); err != nil {
				return nil, err
			}
		}
		if ls.WS.Serving() {
			eo.WSBind = config.BindAddress(ls.WS.Bind)
			if ls.WS.SSLOptions != nil {
				if eo.WSTLS, err = tlsconfig.Server("broker.embedded.listeners.ws.ssl_options", ls.WS.SSLOptions); err != nil {
					return nil, err
				}
			}
		}
		g.embedded, err = embedded.New(eo)
		if err != nil {
			return nil, err
		}
		g.broker = g.embedded
	}
	if g.peers, err = cluster.New(cluster.Options{Config: cfg.Cluster, Token: x.Server.AuthToken, Self: cfg.Node.Name,
		AdapterPort: x.Server.Port(), Logger: log.With("component", "cluster")}); err != nil {
		return nil, err
	}

	g.adapter = adapter.New(g.Reg, g.broker, g.peers, log.With("component", "adapter"))
	if g.handler, err = g.parts.handler(x.Handler, g.newHandler); err != nil {
		return nil, err
	}

	ln, err := net.Listen("tcp", config.BindAddress(x.Server.Bind))
	if err != nil {
		return nil, fmt.Errorf("adapter server: listen on %s: %w", x.Server.Bind, err)
	}
	g.adapterLn = adapter.SniffListener(ln, x.Server.SSLOptions != nil, g.deviceAddrs, log.With("component", "adapter"))
	g.grpc, err = adapter.NewGRPCServer(g.adapter, adapter.GRPCOptions{
		TLS: x.Server.SSLOptions, MaxRecvMessageSize: int(x.Server.MaxRecvMessageSize), AuthToken: x.Server.AuthToken,
		Observe: g.Metrics.AdapterCall,
	})
	if err != nil {
		return nil, err
	}
	nativepb.RegisterNodeServer(g.grpc, &cluster.NodeServer{Name: cfg.Node.Name, Version: g.version})

	var lerr error
	if !x.Enabled() {
		log.Warn("gateway.exproto.enable is false: no device listener opens (the broker and the API run)")
	}
	x.Listeners.Each(func(typ, name string, l *config.Listener) {
		if lerr != nil || !l.Enabled() || !x.Enabled() {
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
	g.parts.commit()
	return g, nil
}

// newHandler starts a handler client whose lost devices are closed.
func (g *Gateway) newHandler(h config.Handler) (*handler.Client, error) {
	c, err := handler.New(handler.Options{Config: h, Logger: g.log.With("component", "handler"), Lost: g.kick,
		// A native handler's batch may hold one action as large as an
		// adapter request may be, and 1 MiB of others.
		Adapter: g.adapter, Refused: &g.Stats.NativeRefused, Unanswered: &g.Stats.NativeUnanswered, MaxRecv: int(g.cfg.Gateway.ExProto.Server.MaxRecvMessageSize) + 1<<20, Node: g.cfg.Node.Name, Version: g.version, Batch: g.batch,
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
	attrs := []any{"version", g.version(), "node", g.cfg.Node.Name, "adapter", g.adapterLn.Addr().String(), "handler", g.cfg.Gateway.ExProto.Handler.Address.String()}
	if a := g.MQTTAddr(); a != nil {
		attrs = append(attrs, "mqtt", a.String())
	}
	if g.embedded != nil {
		if a := g.embedded.TLSAddr(); a != nil {
			attrs = append(attrs, "mqtt-ssl", a.String())
		}
		if a := g.embedded.WSAddr(); a != "" {
			attrs = append(attrs, "mqtt-ws", a)
		}
	}
	for _, l := range g.Listeners() {
		attrs = append(attrs, l.Name(), l.Addr().String())
	}
	g.log.Info("exgate started", attrs...)
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

// MQTTTLSAddr is the embedded broker's MQTT-over-TLS address, or nil.
func (g *Gateway) MQTTTLSAddr() net.Addr {
	if g.embedded == nil {
		return nil
	}
	return g.embedded.TLSAddr()
}

// MQTTWSAddr is the embedded broker's MQTT-over-WebSocket address, or "".
func (g *Gateway) MQTTWSAddr() string {
	if g.embedded == nil {
		return ""
	}
	return g.embedded.WSAddr()
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
	listeners := append(append([]*deviceListener(nil), g.listeners...), g.retired...)
	g.mu.RUnlock()
	for _, l := range listeners {
		_ = l.Close()
	}
	var err error
	all := g.kickAll(channel.ReasonGatewayStopped)
	for _, c := range all {
		select {
		case <-c.Done():
			continue
		case <-ctx.Done():
		}
		err = fmt.Errorf("shutdown: %d devices still closing: %w", g.Reg.Len(), ctx.Err())
		break
	}
	served := make(chan struct{})
	go func() {
		for _, l := range listeners {
			l.Wait()
		}
		close(served)
	}()
	select {
	case <-served:
	case <-ctx.Done():
		err = cmp.Or(err, fmt.Errorf("shutdown: device connections still ending: %w", ctx.Err()))
	}
	stopped := make(chan struct{})
	go func() { g.grpc.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-ctx.Done(): // handlers still calling the adapter: cut them off
		g.grpc.Stop()
		<-stopped
	}
	g.serving.Wait()
	g.closeAll()
	return err
}

// kickAll closes every device with reason and returns them. Kicks run
// side by side: a kick is quick (a device's broker session says goodbye in
// the background), but a TLS close may wait for a device that does not
// read; ten thousand of those in a row would outlast any deadline.
func (g *Gateway) kickAll(reason string) []*channel.Channel {
	all := g.Reg.All()
	kicks := make(chan *channel.Channel)
	var kickers sync.WaitGroup
	for range min(len(all), 256) {
		kickers.Go(func() {
			for c := range kicks {
				c.Kick(reason)
			}
		})
	}
	for _, c := range all {
		kicks <- c
	}
	close(kicks)
	kickers.Wait()
	return all
}

func (g *Gateway) closeAll() {
	defer g.pool.Close() // after the handlers: nothing dispatches any more
	if g.poller != nil {
		defer g.poller.Close() // after the devices: nothing is watched any more
	}
	defer g.Tracer.Close()
	g.parts.close()
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
}

// Ready reports whether the listeners are bound and a handler is reachable.
func (g *Gateway) Ready() bool {
	g.mu.RLock()
	h := g.handler
	g.mu.RUnlock()
	return g.started.Load() != 0 && h.Ready()
}

// Enabled reports whether the gateway runs (gateway.exproto.enable).
func (g *Gateway) Enabled() bool {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.cfg.Gateway.ExProto.Enabled()
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

// Config is the configuration the gateway runs with. It is shared: copy
// what you change (config.Changes.Apply does).
func (g *Gateway) Config() config.Config {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return *g.cfg
}

// ListenerConfig returns the configuration of listener "type:name".
func (g *Gateway) ListenerConfig(name string) *config.Listener {
	typ, n, _ := strings.Cut(name, ":")
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.cfg.Gateway.ExProto.Listeners.Find(typ, n)
}

// version is g.Version, or "dev" when main did not set one; read when
// asked, since main sets it after New.
func (g *Gateway) version() string { return cmp.Or(g.Version, "dev") }
