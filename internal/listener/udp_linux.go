package listener

import (
	"bufio"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// setRecvBuffer asks for n bytes of receive buffer. Like quic-go, it first
// tries SO_RCVBUFFORCE, which passes net.core.rmem_max when the process may
// (CAP_NET_ADMIN), then SO_RCVBUF, which the kernel caps at rmem_max. It
// returns the size the kernel granted (as SO_RCVBUF reports it: twice the
// usable bytes).
func setRecvBuffer(pc *net.UDPConn, n int) (int, error) {
	rc, err := pc.SyscallConn()
	if err != nil {
		return 0, err
	}
	var got int
	var serr error
	err = rc.Control(func(fd uintptr) {
		if syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, n) != nil {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, n)
		}
		got, _ = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF)
	})
	if err == nil {
		err = serr
	}
	return got, err
}

// kernelDrops reads how many datagrams the kernel dropped for the socket
// (its receive buffer was full), from the drops column of /proc/net/udp
// and udp6, found by the socket's inode.
func kernelDrops(pc *net.UDPConn) (int64, bool) {
	rc, err := pc.SyscallConn()
	if err != nil {
		return 0, false
	}
	var st syscall.Stat_t
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = syscall.Fstat(int(fd), &st) }); err != nil || serr != nil {
		return 0, false
	}
	inode := strconv.FormatUint(st.Ino, 10)
	for _, f := range []string{"/proc/net/udp", "/proc/net/udp6"} {
		if n, ok := dropsOf(f, inode); ok {
			return n, true
		}
	}
	return 0, false
}

func dropsOf(path, inode string) (int64, bool) {
	f, err := os.Open(path)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	s.Scan() // header
	for s.Scan() {
		// sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops
		fs := strings.Fields(s.Text())
		if len(fs) >= 13 && fs[9] == inode {
			n, err := strconv.ParseInt(fs[12], 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}
