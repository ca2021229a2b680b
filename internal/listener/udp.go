package listener

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// DefaultRecbuf is a UDP listener's receive buffer when recbuf is not set.
// A burst of datagrams from new peers arrives while the gateway is busy
// creating their connections; with Linux's default buffer (208 KiB) most
// of a burst of 2,500 peers was dropped by the kernel before exgate saw it.
const DefaultRecbuf = 8 << 20

// peerQueue is how many datagrams of one peer may wait for its reader;
// more are dropped: one slow device must not stall the shared socket.
const peerQueue = 64

// udpListener demultiplexes one UDP socket into a connection per peer
// address (spec §2: for UDP, a connection is one (IP, port) pair).
type udpListener struct {
	l  *Listener
	pc *net.UDPConn

	mu    sync.Mutex
	peers map[netip.AddrPort]*udpPeer
	wg    sync.WaitGroup // serve goroutines of peers
}

func listenUDP(l *Listener, addr string) (*udpListener, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, err
	}
	pc, err := net.ListenUDP("udp", ua)
	if err != nil {
		return nil, err
	}
	want := int(l.opts.UDP.Recbuf)
	if want <= 0 {
		want = DefaultRecbuf
	}
	got, err := setRecvBuffer(pc, want)
	if err != nil || got < want { // the kernel reports twice what it grants
		l.log.Warn("UDP receive buffer smaller than asked: the kernel may drop bursts (exgate_listener_kernel_drops_total); raise net.core.rmem_max or run with CAP_NET_ADMIN",
			"recbuf", want, "granted", got/2, "error", err)
	}
	if b := l.opts.UDP.Sndbuf; b > 0 {
		_ = pc.SetWriteBuffer(int(b))
	}
	return &udpListener{l: l, pc: pc, peers: map[netip.AddrPort]*udpPeer{}}, nil
}

func (u *udpListener) serve(start func(*Conn) func()) error {
	buf := make([]byte, 65535)
	for {
		n, from, err := u.pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			if u.l.closed.Load() || errors.Is(err, net.ErrClosed) {
				return ErrClosed
			}
			time.Sleep(5 * time.Millisecond)
			continue
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		u.mu.Lock()
		p, ok := u.peers[from]
		if !ok {
			if u.l.closed.Load() || !u.l.admit(net.UDPAddrFromAddrPort(from)) {
				u.mu.Unlock()
				u.l.Stats.DatagramsDropped.Add(1)
				continue
			}
			p = u.newPeer(from)
			u.l.Stats.Current.Add(1)
			u.l.Stats.Accepted.Add(1)
			u.wg.Go(func() {
				c := &Conn{Conn: p, Kind: UDP, Peer: p.RemoteAddr(), slot: &u.l.Stats.Current}
				defer c.free()
				start(c)()
				p.Close()
			})
		}
		u.mu.Unlock()
		if !p.allow(n) {
			u.l.Stats.DatagramsDropped.Add(1)
			continue
		}
		select {
		case p.in <- append([]byte(nil), buf[:n]...):
		default:
			u.l.Stats.DatagramsDropped.Add(1)
		}
	}
}

func (u *udpListener) newPeer(addr netip.AddrPort) *udpPeer {
	ctl := u.l.ctl.Load()
	p := &udpPeer{
		u: u, addr: addr, in: make(chan []byte, peerQueue), done: make(chan struct{}),
		bytes: bytesLimiter(ctl.bytesRate, minBurst(UDP)), msgs: messagesLimiter(ctl.messagesRate), shared: ctl.shared,
	}
	u.peers[addr] = p
	return p
}

func (u *udpListener) close() error {
	err := u.pc.Close()
	u.mu.Lock()
	peers := make([]*udpPeer, 0, len(u.peers))
	for _, p := range u.peers {
		peers = append(peers, p)
	}
	u.mu.Unlock()
	for _, p := range peers {
		_ = p.Close()
	}
	return err
}

func (u *udpListener) wait() { u.wg.Wait() }

// KernelDrops is how many datagrams the kernel dropped because the
// listener's receive buffer was full; ok is false where that is not known
// (not a UDP listener, not Linux).
func (l *Listener) KernelDrops() (n int64, ok bool) {
	if l.udp == nil {
		return 0, false
	}
	return kernelDrops(l.udp.pc)
}

// udpPeer is one peer's connection: Read returns its datagrams one by one,
// Write sends one datagram to it, Close forgets it so that its next datagram
// starts a new connection.
type udpPeer struct {
	u                   *udpListener
	addr                netip.AddrPort
	in                  chan []byte   // written by the demux loop, read by Read
	done                chan struct{} // closed by Close
	once                sync.Once
	bytes, msgs, shared *rate.Limiter
}

// allow applies the per-peer and listener-wide rates to one datagram of n
// bytes: over a limit it is dropped, there is no back pressure in UDP.
func (p *udpPeer) allow(n int) bool {
	now := time.Now()
	if p.msgs != nil && !p.msgs.AllowN(now, 1) {
		return false
	}
	if p.bytes != nil && !p.bytes.AllowN(now, n) {
		return false
	}
	if s := p.shared; s != nil && !s.AllowN(now, n) {
		return false
	}
	return true
}

// Read returns the next datagram; one that does not fit b is truncated.
func (p *udpPeer) Read(b []byte) (int, error) {
	select {
	case d := <-p.in:
		return copy(b, d), nil
	case <-p.done:
		return 0, io.EOF
	}
}

// ReadDatagram returns the next datagram whole.
func (p *udpPeer) ReadDatagram() ([]byte, error) {
	select {
	case d := <-p.in:
		return d, nil
	case <-p.done:
		return nil, io.EOF
	}
}

func (p *udpPeer) Write(b []byte) (int, error) {
	select {
	case <-p.done:
		return 0, net.ErrClosed
	default:
	}
	return p.u.pc.WriteToUDPAddrPort(b, p.addr)
}

func (p *udpPeer) Close() error {
	p.once.Do(func() {
		close(p.done)
		p.u.mu.Lock()
		if p.u.peers[p.addr] == p {
			delete(p.u.peers, p.addr)
		}
		p.u.mu.Unlock()
	})
	return nil
}

func (p *udpPeer) LocalAddr() net.Addr                { return p.u.pc.LocalAddr() }
func (p *udpPeer) RemoteAddr() net.Addr               { return net.UDPAddrFromAddrPort(p.addr) }
func (p *udpPeer) SetDeadline(t time.Time) error      { return nil }
func (p *udpPeer) SetReadDeadline(t time.Time) error  { return nil }
func (p *udpPeer) SetWriteDeadline(t time.Time) error { return nil }
