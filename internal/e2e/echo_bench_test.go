package e2e

import (
	"io"
	"net"
	"testing"
)

// BenchmarkEchoRoundTrip is one device's echo through the whole path
// (device → gateway → handler → adapter → gateway → device), in one
// process: for profiling the gateway's share with -cpuprofile.
func BenchmarkEchoRoundTrip(b *testing.B) {
	e := startWith(b, options{}, nil)
	e.h.Echo = true
	c, err := net.Dial("tcp", e.addr())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	out, in := make([]byte, 64), make([]byte, 64)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.Write(out); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, in); err != nil {
			b.Fatal(err)
		}
	}
}
