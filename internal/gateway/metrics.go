// The gateway's Prometheus metrics: its counters and each listener's.

package gateway

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// registerMetrics exports the gateway's and listeners' counters.
func (g *Gateway) registerMetrics() {
	m, st := g.Metrics, g.Stats
	f := func(a *atomic.Int64) func() float64 { return func() float64 { return float64(a.Load()) } }
	// EMQX's gateway counters (spec §4).
	m.Counter("exgate_bytes_received_total", "Bytes received from devices.", nil, f(&st.BytesReceived))
	m.Counter("exgate_bytes_sent_total", "Bytes sent to devices.", nil, f(&st.BytesSent))
	m.Counter("exgate_messages_delivered_total", "Messages the handler accepted in OnReceivedMessages.", nil, f(&st.MessagesDelivered))
	m.Counter("exgate_messages_published_total", "Messages devices published to the broker.", nil, f(&st.MessagesPublished))
	for reason, a := range map[string]*atomic.Int64{"queue_full": &st.DroppedQueueFull, "qos0_msg": &st.DroppedQoS0, "closed": &st.DroppedClosed} {
		m.Counter("exgate_delivery_dropped_total", "Deliveries to devices dropped, by reason: queue_full (QoS 1/2, the device's queue was full), qos0_msg (QoS 0, queue full), closed (the device closed first).", prometheus.Labels{"reason": reason}, f(a))
	}
	m.Gauge("exgate_connections_closing", "Closed devices whose OnSocketClosed is not answered yet.", nil, f(&st.Closing))
	m.Counter("exgate_handler_close_failed_total", "OnSocketClosed calls that failed or timed out.", nil, f(&st.CloseFailed))
	m.Counter("exgate_native_actions_refused_total", "Native handler actions refused because 10,000 already waited for their device.", nil, f(&st.NativeRefused))
	m.Counter("exgate_native_unanswered_failures_total", "Native handler actions sent without asking for a result (ref 0) that failed.", nil, f(&st.NativeUnanswered))
	m.Counter("exgate_client_connect_total", "Authenticate calls.", nil, f(&st.ClientConnect))
	m.Counter("exgate_client_connected_total", "Successful Authenticate calls.", nil, f(&st.ClientConnected))
	m.Counter("exgate_client_disconnected_total", "Authenticated devices that closed.", nil, f(&st.Disconnected))
	m.Counter("exgate_client_auth_failure_total", "Failed Authenticate calls.", nil, f(&st.AuthFailed))
	m.Counter("exgate_client_banned_refused_total", "Authentications refused because the client (clientid, username or peer host) is banned.", nil, f(&st.Banned))
	m.Gauge("exgate_banned", "Entries in the banned list.", nil, func() float64 { return float64(g.Banned.Len()) })
	m.Counter("exgate_authorization_deny_total", "Publishes and subscriptions denied.", nil, f(&st.AuthzDenied))
	m.Gauge("exgate_connections", "Open device connections, any state.", nil, func() float64 { return float64(g.Reg.Len()) })
	m.Gauge("exgate_connections_authenticated", "Authenticated device connections.", nil, func() float64 { return float64(g.Reg.Connected()) })
	m.Registry.MustRegister(listenerCollector{g})
}

// listenerCollector exports every current listener's counters at scrape
// time, so listeners a reload adds or replaces need no registration.
type listenerCollector struct{ g *Gateway }

var (
	descListenerConns    = prometheus.NewDesc("exgate_listener_connections", "Connections (UDP: peers) a listener serves now.", []string{"listener"}, nil)
	descListenerAccepted = prometheus.NewDesc("exgate_listener_accepted_total", "Connections accepted.", []string{"listener"}, nil)
	descListenerRefused  = prometheus.NewDesc("exgate_listener_refused_total", "Connections refused, by cause.", []string{"listener", "cause"}, nil)
	descListenerDropped  = prometheus.NewDesc("exgate_listener_datagrams_dropped_total", "UDP datagrams dropped (rate limits, refusals, full queues).", []string{"listener"}, nil)
	descListenerKernel   = prometheus.NewDesc("exgate_listener_kernel_drops_total", "UDP datagrams the kernel dropped because the listener's receive buffer was full (recbuf; Linux).", []string{"listener"}, nil)
	descListenerThrottle = prometheus.NewDesc("exgate_listener_throttled_total", "Reads slowed down by a rate limit.", []string{"listener"}, nil)
)

func (listenerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descListenerConns, descListenerAccepted, descListenerRefused, descListenerDropped, descListenerKernel, descListenerThrottle} {
		ch <- d
	}
}

func (c listenerCollector) Collect(ch chan<- prometheus.Metric) {
	for _, l := range c.g.Listeners() {
		st, n := &l.Stats, l.Name()
		ch <- prometheus.MustNewConstMetric(descListenerConns, prometheus.GaugeValue, float64(st.Current.Load()), n)
		ch <- prometheus.MustNewConstMetric(descListenerAccepted, prometheus.CounterValue, float64(st.Accepted.Load()), n)
		for cause, a := range map[string]*atomic.Int64{"max_connections": &st.RefusedLimit, "max_conn_rate": &st.RefusedRate, "overload": &st.RefusedOverload, "access_rules": &st.RefusedACL, "handshake": &st.HandshakeFailed} {
			ch <- prometheus.MustNewConstMetric(descListenerRefused, prometheus.CounterValue, float64(a.Load()), n, cause)
		}
		ch <- prometheus.MustNewConstMetric(descListenerDropped, prometheus.CounterValue, float64(st.DatagramsDropped.Load()), n)
		if k, ok := l.KernelDrops(); ok {
			ch <- prometheus.MustNewConstMetric(descListenerKernel, prometheus.CounterValue, float64(k), n)
		}
		ch <- prometheus.MustNewConstMetric(descListenerThrottle, prometheus.CounterValue, float64(st.Throttled.Load()), n)
	}
}
