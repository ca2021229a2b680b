package channel

import "sync/atomic"

// Stats are the gateway's counters (spec §4), shared by all channels. The
// zero value is ready; every field is safe for concurrent use.
type Stats struct {
	BytesReceived     atomic.Int64
	BytesSent         atomic.Int64
	MessagesDelivered atomic.Int64 // messages the handler accepted
	MessagesPublished atomic.Int64 // device publishes the broker took
	DeliveryDropped   atomic.Int64 // deliveries dropped: queue full or closed
	ClientConnect     atomic.Int64 // Authenticate calls
	ClientConnected   atomic.Int64 // successful Authenticate
	Disconnected      atomic.Int64 // authenticated devices that closed
	AuthFailed        atomic.Int64
	AuthzDenied       atomic.Int64
}
