package listener

import (
	"net"
	"testing"

	"github.com/exgate/exgate/internal/config"
)

// BenchmarkAccessRules matches one address against ten rules, the last of
// which decides.
func BenchmarkAccessRules(b *testing.B) {
	var rules []config.AccessRule
	for _, s := range []string{"deny 10.1.0.0/16", "deny 10.2.0.0/16", "deny 10.3.0.0/16", "deny 10.4.0.0/16", "deny 192.168.0.0/16",
		"deny 172.16.0.0/12", "deny 2001:db8::/32", "deny 10.5.0.1", "deny 10.6.0.0/24", "allow 127.0.0.0/8"} {
		r, err := config.ParseAccessRule(s)
		if err != nil {
			b.Fatal(err)
		}
		rules = append(rules, r)
	}
	addr := &net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 40000}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if !allowed(rules, addr) {
			b.Fatal("denied")
		}
	}
}
