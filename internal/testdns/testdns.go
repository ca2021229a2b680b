// Package testdns serves DNS records on a loopback UDP port, for tests of
// discovery by DNS; the records may change while it runs.
package testdns

import (
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

// Server answers from its records; unknown names get NXDOMAIN.
type Server struct {
	Addr string // 127.0.0.1:port, for a resolver setting

	mu      sync.Mutex
	records []dns.RR
}

// Start serves records (zone-file lines such as "a.test. 1 IN A
// 127.0.0.1") until the test ends.
func Start(t testing.TB, records ...string) *Server {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Addr: pc.LocalAddr().String()}
	s.Set(t, records...)
	started := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, Handler: s, NotifyStartedFunc: func() { close(started) }}
	go func() { _ = srv.ActivateAndServe() }()
	<-started
	t.Cleanup(func() { _ = srv.Shutdown() })
	return s
}

// Set replaces the records.
func (s *Server) Set(t testing.TB, records ...string) {
	t.Helper()
	var rrs []dns.RR
	for _, r := range records {
		rr, err := dns.NewRR(r)
		if err != nil {
			t.Fatalf("record %q: %v", r, err)
		}
		rrs = append(rrs, rr)
	}
	s.mu.Lock()
	s.records = rrs
	s.mu.Unlock()
}

// ServeDNS implements dns.Handler.
func (s *Server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	s.mu.Lock()
	for _, q := range req.Question {
		for _, rr := range s.records {
			h := rr.Header()
			if strings.EqualFold(h.Name, q.Name) && h.Rrtype == q.Qtype {
				m.Answer = append(m.Answer, rr)
			}
		}
	}
	known := false
	for _, q := range req.Question {
		for _, rr := range s.records {
			known = known || strings.EqualFold(rr.Header().Name, q.Name)
		}
	}
	s.mu.Unlock()
	if !known {
		m.Rcode = dns.RcodeNameError
	}
	_ = w.WriteMsg(m)
}
