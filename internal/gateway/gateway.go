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
	"sort"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"

	pb "github.com/exgate/exgate/exprotopb"
	"github.com/exgate/exgate/internal/adapter"
	"github.com/exgate/exgate/internal/auth"
	"github.com/exgate/exgate/internal/broker/embedded"
	"github.com/exgate/exgate/internal/channel"
	"github.com/exgate/exgate/internal/config"
	"github.com/exgate/exgate/internal/handler"
	"github.com/exgate/exgate/internal/listener"
)

// Gateway is one running exgate.
type Gateway struct {
	cfg   *config.Config
	log   *slog.Logger
	Stats *channel.Stats
	Reg   *channel.Registry

	broker    *embedded.Broker
	handler   *handler.Client
	grpc      *grpc.Server
	adapterLn net.Listener
	listeners []*tcpListener
	serving   sync.WaitGroup

	shutdownOnce sync.Once
	shutdownErr  error
}

type tcpListener struct {
	*listener.TCP
	ch *channel.Config
}

// New binds every port and connects nothing yet; on error everything
// already opened is closed again.
func New(cfg *config.Config, log *slog.Logger) (_ *Gateway, err error) {
	x := cfg.Gateway.ExProto
	g := &Gateway{cfg: cfg, log: log, Stats: &channel.Stats{}, Reg: channel.NewRegistry()}
	defer func() {
		if err != nil {
			g.closeAll()
		}
	}()

	authn := auth.NewAuthenticator(x.Authentication)
	authz := auth.NewAuthorizer(x.Authorization)
	if authn == nil {
		log.Info("no authentication configured: every device and MQTT client is allowed to connect")
	}

	bind := ""
	if l := cfg.Broker.Embedded.Listeners.TCP; l.Enabled() {
		bind = config.BindAddress(l.Bind)
	}
	g.broker, err = embedded.New(embedded.Options{
		Bind:         bind,
		Logger:       log.With("component", "broker"),
		Authenticate: mqttAuthn(authn),
		Authorize:    mqttAuthz(authz),
	})
	if err != nil {
		return nil, err
	}

	target, _ := config.HandlerTarget(x.Handler.Address) // validated
	g.handler, err = handler.New(handler.Options{Target: target, Service: x.Handler.ServiceName, Logger: log.With("component", "handler")})
	if err != nil {
		return nil, err
	}

	g.adapterLn, err = net.Listen("tcp", config.BindAddress(x.Server.Bind))
	if err != nil {
		return nil, fmt.Errorf("adapter server: listen on %s: %w", x.Server.Bind, err)
	}
	g.grpc = grpc.NewServer()
	pb.RegisterConnectionAdapterServer(g.grpc, adapter.New(g.Reg, g.broker, log.With("component", "adapter")))

	names := make([]string, 0, len(x.Listeners.TCP))
	for n, l := range x.Listeners.TCP {
		if l.Enabled() {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		l := x.Listeners.TCP[n]
		tl, err := listener.ListenTCP(n, config.BindAddress(l.Bind), listener.TCPOptions{MaxConnections: l.MaxConnections, Logger: log})
		if err != nil {
			return nil, err
		}
		g.listeners = append(g.listeners, &tcpListener{TCP: tl, ch: g.channelConfig(n, l, authn, authz)})
	}
	return g, nil
}

// channelConfig is what every channel of listener name shares.
func (g *Gateway) channelConfig(name string, l *config.Listener, authn *auth.Authenticator, authz *auth.Authorizer) *channel.Config {
	x := g.cfg.Gateway.ExProto
	mp := x.Mountpoint
	if l.Mountpoint != nil {
		mp = *l.Mountpoint
	}
	c := &channel.Config{
		Node:              g.cfg.Node.Name,
		Broker:            g.broker,
		Handler:           g.handler,
		Mountpoint:        mp,
		IdleTimeout:       x.IdleTimeout,
		RequestTimeout:    x.Handler.RequestTimeout,
		CloseFlushTimeout: x.CloseFlushTimeout,
		MaxBatch:          x.MaxMessagesPerDelivery,
		EventQueue:        x.EventQueue,
		DeliveryQueue:     x.DeliveryQueue,
		Registry:          g.Reg,
		Stats:             g.Stats,
		Logger:            g.log.With("listener", "tcp:"+name),
	}
	if authn != nil && l.AuthnEnabled() {
		c.Authenticate = func(ctx context.Context, cr channel.Credentials) (channel.AuthResult, error) {
			res, err := authn.Authenticate(ctx, auth.Request{ClientID: cr.ClientID, Username: cr.Username, Password: cr.Password, Peer: cr.Peer})
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

func mqttAuthn(a *auth.Authenticator) func(string, string, string, net.Addr) bool {
	if a == nil {
		return nil
	}
	return func(clientID, username, password string, peer net.Addr) bool {
		_, err := a.Authenticate(context.Background(), auth.Request{ClientID: clientID, Username: username, Password: password, Peer: peer})
		return err == nil
	}
}

func mqttAuthz(a *auth.Authorizer) func(string, string, string, bool, net.Addr) bool {
	if a == nil {
		return nil
	}
	return func(clientID, username, topic string, write bool, peer net.Addr) bool {
		return a.Allow(auth.Who{ClientID: clientID, Username: username, Peer: peer}, write, topic)
	}
}

// Start serves the adapter and the device listeners.
func (g *Gateway) Start() {
	g.serving.Go(func() {
		if err := g.grpc.Serve(g.adapterLn); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			g.log.Error("adapter server stopped", "error", err)
		}
	})
	for _, l := range g.listeners {
		g.serving.Go(func() {
			_ = l.Serve(func(conn net.Conn) { g.serveStream(l.ch, conn) })
		})
	}
	attrs := []any{"adapter", g.adapterLn.Addr().String(), "handler", g.cfg.Gateway.ExProto.Handler.Address}
	if a := g.broker.Addr(); a != nil {
		attrs = append(attrs, "mqtt", a.String())
	}
	for _, l := range g.listeners {
		attrs = append(attrs, "tcp:"+l.Name, l.Addr().String())
	}
	g.log.Info("exgate started", attrs...)
}

// serveStream runs one TCP device until its socket closes.
func (g *Gateway) serveStream(cfg *channel.Config, conn net.Conn) {
	info := &pb.ConnInfo{Socktype: pb.SocketType_TCP, Peername: address(conn.RemoteAddr()), Sockname: address(conn.LocalAddr())}
	ch := channel.New(cfg, conn, info, false)
	ch.ReadLoop(conn)
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
func (g *Gateway) MQTTAddr() net.Addr { return g.broker.Addr() }

// ListenerAddr is the bound address of the named TCP listener, or nil.
func (g *Gateway) ListenerAddr(name string) net.Addr {
	for _, l := range g.listeners {
		if l.Name == name {
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
	for _, l := range g.listeners {
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
	for _, l := range g.listeners {
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
	if g.handler != nil {
		_ = g.handler.Close()
	}
	for _, l := range g.listeners {
		_ = l.Close()
	}
	if g.adapterLn != nil { // grpc.Serve closed it already, or never ran
		_ = g.adapterLn.Close()
	}
	if g.broker != nil {
		_ = g.broker.Close()
	}
}
