// Listeners and the channel configuration of their devices: what a
// listener config becomes, and how an accepted connection becomes a device.

package gateway

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync/atomic"

	pb "github.com/exgate/exgate/exprotopb"
	"github.com/exgate/exgate/internal/auth"
	"github.com/exgate/exgate/internal/channel"
	"github.com/exgate/exgate/internal/config"
	"github.com/exgate/exgate/internal/handler"
	"github.com/exgate/exgate/internal/listener"
	"github.com/exgate/exgate/internal/tlsconfig"
)

// deviceListener is a listener and the channel config its new devices get.
type deviceListener struct {
	*listener.Listener
	typ, name string
	conf      *config.Listener
	ch        atomic.Pointer[channel.Config] // swapped by a reload
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
		if o.DTLS, err = listener.DTLSServerOptions(l.DTLSOptions); err != nil {
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
		if h, err = g.parts.handler(hc, g.newHandler); err != nil {
			return nil, fmt.Errorf("%s.handler: %w", where, err)
		}
	}
	if len(l.Authentication) > 0 { // the listener's chain first, then the gateway's
		chain := append(append([]config.Authenticator(nil), l.Authentication...), cfg.Gateway.ExProto.Authentication...)
		var err error
		if authn, err = g.parts.authn(kind.String()+":"+name, chain, g.log.With("component", "auth", "listener", kind.String()+":"+name)); err != nil {
			return nil, fmt.Errorf("%s.%w", where, err)
		}
	}
	cc := g.channelConfig(cfg, kind, name, l, authn, authz)
	cc.Handler, cc.RequestTimeout, cc.MaxRequestBytes = h, hc.RequestTimeout, int(hc.MaxRequestBytes)
	cc.MaxBatch = cfg.Gateway.ExProto.MessagesPerDelivery(h.Native())
	if h.Native() {
		cc.Async = h // events go out without a goroutine waiting for each
	}
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
	c.PubSubNeverWait = g.embedded != nil && !authz.Remote()
	if authz != nil {
		c.Authorize = func(ctx context.Context, w channel.Who, publish bool, topic string) bool {
			return authz.Allow(ctx, auth.Who{ClientID: w.ClientID, Username: w.Username, Peer: w.Peer}, publish, topic)
		}
	}
	return c
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
// connection until it ends, or nil when the poller reads it.
func (g *Gateway) startDevice(cfg *channel.Config, conn *listener.Conn) func() {
	info := &pb.ConnInfo{Socktype: socketTypes[conn.Kind], Peername: address(conn.Peer), Sockname: address(conn.LocalAddr())}
	if c := conn.PeerCert; c != nil {
		info.Peercert = &pb.CertificateInfo{Cn: c.Subject.CommonName, Dn: c.Subject.String()}
	}
	ch := channel.New(cfg, conn, info, conn.Kind == listener.SSL || conn.Kind == listener.DTLS)
	if ch.Watch(g.poller) {
		return nil
	}
	return ch.Reader(conn.Conn)
}

func address(a net.Addr) *pb.Address {
	switch a := a.(type) { // without formatting "host:port" to split it again
	case *net.TCPAddr:
		return &pb.Address{Host: hostOf(a.IP, a.Zone), Port: uint32(a.Port)}
	case *net.UDPAddr:
		return &pb.Address{Host: hostOf(a.IP, a.Zone), Port: uint32(a.Port)}
	}
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return &pb.Address{Host: a.String()}
	}
	p, _ := strconv.Atoi(port)
	return &pb.Address{Host: host, Port: uint32(p)}
}

// hostOf is the host part net.SplitHostPort gives of an address's String.
func hostOf(ip net.IP, zone string) string {
	switch {
	case len(ip) == 0:
		return ""
	case zone != "":
		return ip.String() + "%" + zone
	}
	return ip.String()
}
