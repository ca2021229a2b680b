package channel

import (
	"sync"
	"sync/atomic"
	"time"
)

// Stats are the gateway's counters (spec §4), shared by all channels. The
// zero value is ready; every field is safe for concurrent use.
type Stats struct {
	BytesReceived     atomic.Int64
	BytesSent         atomic.Int64
	MessagesDelivered atomic.Int64 // messages the handler accepted
	MessagesPublished atomic.Int64 // device publishes the broker took
	DeliveryDropped   atomic.Int64 // deliveries dropped, any reason (the sum of the next three)
	DroppedQueueFull  atomic.Int64 // QoS 1/2 deliveries dropped: the device's queue was full
	DroppedQoS0       atomic.Int64 // QoS 0 deliveries dropped: the device's queue was full
	DroppedClosed     atomic.Int64 // deliveries dropped: the device closed before they reached the handler
	ClientConnect     atomic.Int64 // Authenticate calls
	ClientConnected   atomic.Int64 // successful Authenticate
	Disconnected      atomic.Int64 // authenticated devices that closed
	AuthFailed        atomic.Int64
	AuthzDenied       atomic.Int64
	Banned            atomic.Int64 // authentications refused for a ban
	CloseFailed       atomic.Int64 // OnSocketClosed calls that failed or timed out
	// NativeRefused counts native handlers' actions refused because too
	// many waited for their device.
	NativeRefused atomic.Int64
	// NativeUnanswered counts native handlers' actions sent without
	// asking for a result (ref 0) that failed.
	NativeUnanswered atomic.Int64
	Closing          atomic.Int64 // closed devices whose OnSocketClosed is not answered yet

	loginFailed sampler // warnings of failed authentications
	closeFailed sampler // warnings of failed OnSocketClosed calls
	dropped     sampler // warnings of dropped deliveries
	lifecycle   sampler // info lines of devices connecting and disconnecting
}

// sampler lets through at most limit log lines a second and counts the
// rest, so a flood of one kind of event (wrong passwords) stays readable:
// the next line let through says how many were left out. The zero value is
// ready; safe for concurrent use.
type sampler struct {
	mu         sync.Mutex
	window     time.Time
	n          int
	suppressed int
}

// allow reports whether to log now, and how many lines were left out since
// the last one logged.
func (s *sampler) allow(now time.Time, limit int) (ok bool, suppressed int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if now.Sub(s.window) >= time.Second {
		s.window, s.n = now, 0
	}
	if s.n >= limit {
		s.suppressed++
		return false, 0
	}
	s.n++
	suppressed, s.suppressed = s.suppressed, 0
	return true, suppressed
}
