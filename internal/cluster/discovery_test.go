package cluster

import (
	"fmt"
	"net"
	"reflect"
	"sort"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/exgate/exgate/internal/channel"
	"github.com/exgate/exgate/internal/config"
	"github.com/exgate/exgate/internal/testdns"
	"github.com/exgate/exgate/nativepb"
)

// node serves exgate.v1.Node as name on a loopback port.
func node(t *testing.T, name string) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	nativepb.RegisterNodeServer(g, &NodeServer{Name: name, Version: func() string { return "test" }})
	go func() { _ = g.Serve(ln) }()
	t.Cleanup(g.Stop)
	return ln.Addr().(*net.TCPAddr).Port
}

// names lists the peers' node names, sorted.
func names(p *Peers) []string {
	p.mu.RLock()
	defer p.mu.RUnlock()
	var out []string
	for _, pe := range p.byTag {
		out = append(out, pe.name)
	}
	sort.Strings(out)
	return out
}

func waitNames(t *testing.T, p *Peers, want []string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !reflect.DeepEqual(names(p), want) {
		if time.Now().After(deadline) {
			t.Fatalf("peers %v, want %v", names(p), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Peers found by DNS: SRV targets are asked their node name; this node's
// own address is skipped; a node that appears later is added at the next
// lookup, one gone from DNS is dropped, and a failing lookup keeps them.
func TestDiscoveryBySRV(t *testing.T) {
	self, b, c := node(t, "self@test"), node(t, "b@test"), node(t, "c@test")
	srv := func(ports ...int) []string {
		out := []string{"n.test. 1 IN A 127.0.0.1"}
		for _, p := range ports {
			out = append(out, fmt.Sprintf("_exgate._tcp.test. 1 IN SRV 0 0 %d n.test.", p))
		}
		return out
	}
	d := testdns.Start(t, srv(self, b)...)
	p, err := New(Options{Self: "self@test", Config: config.Cluster{Discovery: config.Discovery{
		DNS: "_exgate._tcp.test", SRV: true, Resolver: d.Addr, Interval: 50 * time.Millisecond}}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	waitNames(t, p, []string{"b@test"})
	d.Set(t, srv(self, b, c)...)
	waitNames(t, p, []string{"b@test", "c@test"})
	d.Set(t, srv(self, c)...)
	waitNames(t, p, []string{"c@test"})
	d.Set(t) // NXDOMAIN: a lookup that fails keeps what was found
	time.Sleep(200 * time.Millisecond)
	waitNames(t, p, []string{"c@test"})
}

// With A records the peers are on one port (cluster.discovery.port, else
// this node's adapter port).
func TestDiscoveryByA(t *testing.T) {
	port := node(t, "b@test")
	d := testdns.Start(t, "peers.test. 1 IN A 127.0.0.1")
	p, err := New(Options{Self: "self@test", AdapterPort: port, Config: config.Cluster{Discovery: config.Discovery{
		DNS: "peers.test", Resolver: d.Addr, Interval: 50 * time.Millisecond}}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	waitNames(t, p, []string{"b@test"})
	p.mu.RLock()
	addr := p.byTag[channel.TagOf("b@test")].addr
	p.mu.RUnlock()
	if addr != fmt.Sprintf("127.0.0.1:%d", port) {
		t.Fatalf("the peer's address %q is not the A record's on the adapter port", addr)
	}
}
