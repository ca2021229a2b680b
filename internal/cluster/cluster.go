// Package cluster lets several exgate nodes serve one handler fleet: a
// handler may call any node's adapter, and a call for a device of another
// node is forwarded to that node's adapter, found from the owner's tag in
// the conn id. Peers come from a static list (cluster.peers) and, with
// cluster.discovery, from DNS: the A/AAAA or SRV records of one name,
// resolved again every interval, each address asked for its node name.
//
// Not discovery through the broker: it works with every upstream and needs
// no broker permissions.
package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	pb "github.com/exgate/exgate/exprotopb"
	"github.com/exgate/exgate/internal/channel"
	"github.com/exgate/exgate/internal/config"
	"github.com/exgate/exgate/internal/pbcodec"
	"github.com/exgate/exgate/internal/tlsconfig"
	"github.com/exgate/exgate/nativepb"
)

// forwardedKey marks a forwarded call, so a peer never forwards it again.
const forwardedKey = "x-exgate-forwarded"

// Peers are the other nodes' adapters. A nil *Peers has none.
type Peers struct {
	token string // the adapters' auth token, sent along
	creds credentials.TransportCredentials
	self  string // this node's name
	log   *slog.Logger

	mu    sync.RWMutex
	byTag map[channel.NodeTag]*peer
	found map[string]*peer // by address, from DNS; nil peer: this node itself

	stop context.CancelFunc
	done chan struct{}
}

type peer struct {
	name   string
	addr   string
	static bool // from cluster.peers: discovery never replaces it
	conn   *grpc.ClientConn
	client pb.ConnectionAdapterClient
}

// Options configure New.
type Options struct {
	Config config.Cluster
	Token  string // the adapters' server.auth_token ("" for none)
	Self   string // this node's name (node.name)
	// AdapterPort is this node's adapter port: the peers' port for A/AAAA
	// discovery when cluster.discovery.port is not set.
	AdapterPort int
	Logger      *slog.Logger
}

// New connects (lazily) to every static peer and, with discovery, starts
// resolving the peers' name in the background.
func New(o Options) (*Peers, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	c := o.Config
	p := &Peers{token: o.Token, self: o.Self, log: o.Logger, creds: insecure.NewCredentials(),
		byTag: map[channel.NodeTag]*peer{}, found: map[string]*peer{}}
	if c.SSLOptions != nil {
		tc, err := tlsconfig.Client(c.SSLOptions)
		if err != nil {
			return nil, fmt.Errorf("cluster.ssl_options: %w", err)
		}
		p.creds = credentials.NewTLS(tc)
	}
	names := make([]string, 0, len(c.Peers))
	for n := range c.Peers {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		pe, err := p.dial(config.BindAddress(c.Peers[name]))
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("cluster.peers.%s: %w", name, err)
		}
		pe.name, pe.static = name, true
		p.byTag[channel.TagOf(name)] = pe
	}
	if d := c.Discovery; d.DNS != "" {
		port := d.Port
		if port == 0 {
			port = o.AdapterPort
		}
		ctx, cancel := context.WithCancel(context.Background())
		p.stop, p.done = cancel, make(chan struct{})
		go p.discover(ctx, d, port)
	}
	return p, nil
}

func (p *Peers) dial(addr string) (*peer, error) {
	// Fixed flow-control windows, as on the handler connections.
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(p.creds),
		grpc.WithInitialWindowSize(1<<20), grpc.WithInitialConnWindowSize(4<<20),
		grpc.WithDefaultCallOptions(pbcodec.CallOption()))
	if err != nil {
		return nil, err
	}
	return &peer{addr: addr, conn: conn, client: pb.NewConnectionAdapterClient(conn)}, nil
}

// Owner returns the adapter client of the peer that owns conn, unless ctx
// is itself a forwarded call.
func (p *Peers) Owner(ctx context.Context, conn string) (pb.ConnectionAdapterClient, context.Context, bool) {
	if p == nil {
		return nil, nil, false
	}
	p.mu.RLock()
	pe, ok := p.byTag[channel.Owner(conn)]
	p.mu.RUnlock()
	if !ok {
		return nil, nil, false
	}
	if md, ok := metadata.FromIncomingContext(ctx); ok && len(md.Get(forwardedKey)) > 0 {
		return nil, nil, false
	}
	return pe.client, p.outgoing(ctx, true), true
}

// outgoing is ctx with the adapters' token, and marked as forwarded.
func (p *Peers) outgoing(ctx context.Context, forwarded bool) context.Context {
	if forwarded {
		ctx = metadata.AppendToOutgoingContext(ctx, forwardedKey, "1")
	}
	if p.token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+p.token)
	}
	return ctx
}

// Close stops discovery and closes the peer connections.
func (p *Peers) Close() {
	if p == nil {
		return
	}
	if p.stop != nil {
		p.stop()
		<-p.done
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pe := range p.byTag {
		_ = pe.conn.Close()
	}
	for _, pe := range p.found {
		if pe != nil && p.byTag[channel.TagOf(pe.name)] != pe {
			_ = pe.conn.Close()
		}
	}
}

// discover resolves d every interval until ctx ends.
func (p *Peers) discover(ctx context.Context, d config.Discovery, port int) {
	defer close(p.done)
	r := net.DefaultResolver
	if d.Resolver != "" {
		var dialer net.Dialer
		r = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, network, d.Resolver)
		}}
	}
	every := d.Interval
	if every <= 0 {
		every = 30 * time.Second
	}
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		p.refresh(ctx, r, d, port)
		t.Reset(every)
	}
}

// refresh resolves the name once and brings the peers in line with it:
// new addresses are asked their node name, addresses gone are dropped.
// A failed lookup keeps the peers as they are.
func (p *Peers) refresh(ctx context.Context, r *net.Resolver, d config.Discovery, port int) {
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	addrs, err := lookup(lctx, r, d, port)
	if err != nil {
		p.log.Warn("cluster discovery: lookup failed; peers kept as they were", "dns", d.DNS, "error", err)
		return
	}
	seen := map[string]bool{}
	for _, a := range addrs {
		seen[a] = true
		p.mu.RLock()
		_, known := p.found[a]
		p.mu.RUnlock()
		if known {
			continue
		}
		pe, err := p.identify(lctx, a)
		if err != nil {
			p.log.Warn("cluster discovery: an address does not answer as an exgate node (tried again later)", "address", a, "error", err)
			continue
		}
		p.mu.Lock()
		p.found[a] = pe
		if pe != nil {
			tag := channel.TagOf(pe.name)
			switch old := p.byTag[tag]; {
			case old == nil:
				p.byTag[tag] = pe
			case !old.static:
				if old.addr != a {
					_ = old.conn.Close()
					delete(p.found, old.addr)
				}
				p.byTag[tag] = pe
			}
		}
		p.mu.Unlock()
		if pe != nil {
			p.log.Info("cluster discovery: peer found", "peer", pe.name, "address", a)
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for a, pe := range p.found {
		if seen[a] {
			continue
		}
		delete(p.found, a)
		if pe == nil {
			continue
		}
		tag := channel.TagOf(pe.name)
		if p.byTag[tag] == pe {
			delete(p.byTag, tag)
		}
		_ = pe.conn.Close()
		p.log.Info("cluster discovery: peer gone from DNS", "peer", pe.name, "address", a)
	}
}

// identify asks the adapter at addr for its node name; nil without error
// is this node itself.
func (p *Peers) identify(ctx context.Context, addr string) (*peer, error) {
	pe, err := p.dial(addr)
	if err != nil {
		return nil, err
	}
	ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	info, err := nativepb.NewNodeClient(pe.conn).Info(p.outgoing(ictx, false), &nativepb.NodeInfoRequest{})
	if err != nil || info.GetNode() == "" || info.GetNode() == p.self {
		_ = pe.conn.Close()
		if err != nil {
			return nil, err
		}
		return nil, nil
	}
	pe.name = info.GetNode()
	return pe, nil
}

// lookup lists the peers' adapter addresses: the SRV targets with their
// ports, or the name's addresses on port.
func lookup(ctx context.Context, r *net.Resolver, d config.Discovery, port int) ([]string, error) {
	var out []string
	if d.SRV {
		_, srvs, err := r.LookupSRV(ctx, "", "", d.DNS)
		if err != nil {
			return nil, err
		}
		for _, s := range srvs {
			ips, err := r.LookupIPAddr(ctx, strings.TrimSuffix(s.Target, "."))
			if err != nil {
				return nil, fmt.Errorf("%s: %w", s.Target, err)
			}
			for _, ip := range ips {
				out = append(out, net.JoinHostPort(ip.IP.String(), strconv.Itoa(int(s.Port))))
			}
		}
	} else {
		ips, err := r.LookupIPAddr(ctx, d.DNS)
		if err != nil {
			return nil, err
		}
		for _, ip := range ips {
			out = append(out, net.JoinHostPort(ip.IP.String(), strconv.Itoa(port)))
		}
	}
	sort.Strings(out)
	return out, nil
}

// NodeServer answers exgate.v1.Node on the adapter port: this node's name
// and version, for peers that found it by DNS.
type NodeServer struct {
	nativepb.UnimplementedNodeServer
	Name    string
	Version func() string
}

// Info implements nativepb.NodeServer.
func (s *NodeServer) Info(context.Context, *nativepb.NodeInfoRequest) (*nativepb.Hello, error) {
	return &nativepb.Hello{Node: s.Name, Version: s.Version()}, nil
}
