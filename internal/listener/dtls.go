package listener

import (
	"errors"
	"net"
	"slices"

	"github.com/pion/dtls/v3"
)

var errNotAdmitted = errors.New("refused by the listener's controls")

// listenDTLS binds a DTLS listener whose controls run before the handshake:
// a refused peer costs no key exchange.
func (l *Listener) listenDTLS() (net.Listener, error) {
	ua, err := net.ResolveUDPAddr("udp", l.opts.Bind)
	if err != nil {
		return nil, err
	}
	opts := append(slices.Clip(l.opts.DTLS), dtls.WithOnConnectionAttempt(func(a net.Addr) error {
		if l.closed.Load() || !l.admit(a) {
			l.Stats.DatagramsDropped.Add(1)
			return errNotAdmitted
		}
		return nil
	}))
	return dtls.ListenWithOptions("udp", ua, opts...)
}
