package listener

import (
	"net"
	"testing"
	"time"

	"github.com/exgate/exgate/internal/config"
)

// What the kernel drops when the receive buffer is full is visible: the
// listener reads it from /proc/net/udp (Linux).
func TestUDPKernelDrops(t *testing.T) {
	l, err := Listen(Options{Name: "t", Kind: UDP, Bind: "127.0.0.1:0", UDP: config.UDPOptions{Recbuf: 4096}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, ok := l.KernelDrops(); !ok {
		t.Skip("kernel drops are not readable here (not Linux)")
	}
	c, err := net.Dial("udp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Nobody reads (Serve was not called): the buffer fills, the rest is dropped.
	for i := 0; i < 500; i++ {
		_, _ = c.Write([]byte(`{"type":42}`))
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, _ := l.KernelDrops()
		if n > 0 {
			t.Logf("kernel dropped %d of 500 datagrams", n)
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("500 datagrams into a 4 KiB buffer nobody reads, and no kernel drop was seen")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
