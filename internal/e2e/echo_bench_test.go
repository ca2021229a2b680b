package e2e

import (
	"io"
	"net"
	"sync"
	"testing"
)

// BenchmarkEchoRoundTrip is 50 devices echoing through the whole path
// (device → gateway → handler → adapter → gateway → device), in one
// process, with the unary and the native handler service: for profiling
// the gateway's share with -cpuprofile.
func BenchmarkEchoRoundTrip(b *testing.B) {
	for _, tr := range []string{"tcp", "tcp+native"} {
		b.Run(tr, func(b *testing.B) {
			e := startWith(b, options{transport: tr}, nil)
			e.h.Echo = true
			const devices = 50
			conns := make([]net.Conn, devices)
			for i := range conns {
				c, err := net.Dial("tcp", e.addr())
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				conns[i] = c
			}
			b.ReportAllocs()
			b.ResetTimer()
			var wg sync.WaitGroup
			per := b.N/devices + 1
			for _, c := range conns {
				wg.Go(func() {
					out, in := make([]byte, 64), make([]byte, 64)
					for range per {
						if _, err := c.Write(out); err != nil {
							b.Error(err)
							return
						}
						if _, err := io.ReadFull(c, in); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
		})
	}
}
