// Package cluster lets several exgate nodes serve one handler fleet: a
// handler may call any node's adapter, and a call for a device of another
// node is forwarded to that node's adapter, found from the owner's tag in
// the conn id and a static list of peers.
//
// A static list, not discovery through the broker: it is explicit, works
// with every upstream, needs no broker permissions, and the addresses are
// known anyway to whoever deploys the nodes behind a load balancer.
package cluster

import (
	"context"
	"fmt"
	"sort"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	pb "github.com/exgate/exgate/exprotopb"
	"github.com/exgate/exgate/internal/channel"
	"github.com/exgate/exgate/internal/config"
	"github.com/exgate/exgate/internal/tlsconfig"
)

// forwardedKey marks a forwarded call, so a peer never forwards it again.
const forwardedKey = "x-exgate-forwarded"

// Peers are the other nodes' adapters. The zero value (or nil) has none.
type Peers struct {
	byTag map[channel.NodeTag]peer
	token string // the adapters' auth token, sent along
}

type peer struct {
	name   string
	conn   *grpc.ClientConn
	client pb.ConnectionAdapterClient
}

// New connects (lazily) to every peer of c; token is the adapters'
// server.auth_token ("" for none).
func New(c config.Cluster, token string) (*Peers, error) {
	p := &Peers{byTag: map[channel.NodeTag]peer{}, token: token}
	creds := insecure.NewCredentials()
	if c.SSLOptions != nil {
		tc, err := tlsconfig.Client(c.SSLOptions)
		if err != nil {
			return nil, fmt.Errorf("cluster.ssl_options: %w", err)
		}
		creds = credentials.NewTLS(tc)
	}
	names := make([]string, 0, len(c.Peers))
	for n := range c.Peers {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		conn, err := grpc.NewClient(config.BindAddress(c.Peers[name]), grpc.WithTransportCredentials(creds))
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("cluster.peers.%s: %w", name, err)
		}
		p.byTag[channel.TagOf(name)] = peer{name: name, conn: conn, client: pb.NewConnectionAdapterClient(conn)}
	}
	return p, nil
}

// Owner returns the adapter client of the peer that owns conn, unless ctx
// is itself a forwarded call.
func (p *Peers) Owner(ctx context.Context, conn string) (pb.ConnectionAdapterClient, context.Context, bool) {
	if p == nil || len(p.byTag) == 0 {
		return nil, nil, false
	}
	if md, ok := metadata.FromIncomingContext(ctx); ok && len(md.Get(forwardedKey)) > 0 {
		return nil, nil, false
	}
	pe, ok := p.byTag[channel.Owner(conn)]
	if !ok {
		return nil, nil, false
	}
	out := metadata.AppendToOutgoingContext(ctx, forwardedKey, "1")
	if p.token != "" {
		out = metadata.AppendToOutgoingContext(out, "authorization", "Bearer "+p.token)
	}
	return pe.client, out, true
}

// Close closes the peer connections.
func (p *Peers) Close() {
	if p == nil {
		return
	}
	for _, pe := range p.byTag {
		_ = pe.conn.Close()
	}
}
