package listener

import (
	"net"
	"syscall"
	"testing"
)

func recvBuffer(t *testing.T, l *Listener) int {
	t.Helper()
	rc, err := l.udp.pc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := rc.Control(func(fd uintptr) { n, _ = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF) }); err != nil {
		t.Fatal(err)
	}
	return n
}

// The default receive buffer holds a burst of 2,500 datagrams from new
// peers before exgate reads any of them, whatever net.core.rmem_max says
// when the process may force it.
func TestUDPDefaultRecbufHoldsABurst(t *testing.T) {
	l, err := Listen(Options{Name: "t", Kind: UDP, Bind: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if got := recvBuffer(t, l); got < DefaultRecbuf {
		// Without CAP_NET_ADMIN the kernel caps the buffer at
		// net.core.rmem_max, and exgate warns at start.
		t.Skipf("the kernel granted a %d-byte receive buffer, not %d: this process may not pass net.core.rmem_max", got/2, DefaultRecbuf)
	}
	const peers = 2500
	for i := 0; i < peers; i++ {
		c, err := net.Dial("udp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		_, _ = c.Write([]byte(`{"type":1,"clientinfo":{"clientid":"device-0001"}}`))
		c.Close()
	}
	if n, _ := l.KernelDrops(); n > 0 {
		t.Fatalf("the kernel dropped %d of %d datagrams from new peers", n, peers)
	}
}
