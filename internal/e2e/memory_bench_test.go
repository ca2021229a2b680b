package e2e

import (
	"encoding/json"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/exgate/exgate/internal/config"
	"github.com/exgate/exgate/internal/testhandler"
)

// BenchmarkDeviceMemory connects 500 devices that authenticate and
// subscribe, and reports the test process's heap, goroutine stacks and
// goroutines per device, with the embedded broker and with an external
// mosquitto over MQTT 5 and over MQTT 3.1.1. The process also holds the
// test handler and the devices' client sockets: `exgate bench storm`
// measures the gateway process alone.
// Run with -benchtime=1x:
//
//	go test ./internal/e2e -run '^$' -bench DeviceMemory -benchtime=1x
func BenchmarkDeviceMemory(b *testing.B) {
	for _, mode := range []struct{ name, transport string }{{"tcp", "tcp"}, {"tcp+mosquitto-v5", "tcp+mosquitto"}, {"tcp+mosquitto-v3.1.1", "tcp+mosquitto"}} {
		b.Run(mode.name, func(b *testing.B) {
			const n = 500
			e := startWith(b, options{transport: mode.transport}, func(c *config.Config) {
				c.Gateway.ExProto.IdleTimeout = time.Minute
				defaultListener(c).MaxConnRate = new(int) // no limit: b.N rounds of 500
				if strings.HasSuffix(mode.name, "v3.1.1") {
					c.Broker.MQTT.ProtocolVersion = 4
				}
			})
			for i := 0; i < b.N; i++ {
				m0 := measureProcess()
				conns := connectSubscribed(b, e.addr(), n)
				m1 := measureProcess()
				b.ReportMetric(float64(int64(m1.heap)-int64(m0.heap))/n, "heap-B/device")
				b.ReportMetric(float64(int64(m1.stack)-int64(m0.stack))/n, "stack-B/device")
				b.ReportMetric(float64(m1.goroutines-m0.goroutines)/n, "goroutines/device")
				for _, c := range conns {
					c.Close()
				}
			}
		})
	}
}

// TestDeviceCostGuard keeps the per-device cost from silently coming back:
// 1,000 devices that authenticate and subscribe through the embedded broker
// may add at most 24 KiB of heap each and, on Linux, where the event loop
// reads them, 0.1 goroutines (elsewhere 1.2: a reader each). Today: ~12 KiB
// including the test's own client sockets and handler records, and no
// goroutine; it was 5 goroutines and ~58 KiB with a MQTT client per device,
// then one goroutine, the socket reader.
func TestDeviceCostGuard(t *testing.T) {
	const n = 1000
	e := start(t, func(c *config.Config) {
		c.Gateway.ExProto.IdleTimeout = time.Minute
		defaultListener(c).MaxConnRate = new(int) // no limit: the test measures cost, not the limiter
	})
	m0 := measureProcess()
	conns := connectSubscribed(t, e.addr(), n)
	m1 := measureProcess()
	for _, c := range conns {
		c.Close()
	}
	perGoroutines := float64(m1.goroutines-m0.goroutines) / n
	perHeap := float64(int64(m1.heap)-int64(m0.heap)) / n
	t.Logf("per device: %.2f goroutines, %.0f B heap, %.0f B stack", perGoroutines, perHeap, float64(int64(m1.stack)-int64(m0.stack))/n)
	maxGoroutines := 1.2
	if runtime.GOOS == "linux" {
		maxGoroutines = 0.1
	}
	if perGoroutines > maxGoroutines {
		t.Errorf("%.2f goroutines per device, want ≤ %.1f", perGoroutines, maxGoroutines)
	}
	if perHeap > 24<<10 {
		t.Errorf("%.0f B heap per device, want ≤ 24 KiB", perHeap)
	}
}

type processMemory struct {
	heap, stack uint64
	goroutines  int
}

func measureProcess() processMemory {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return processMemory{heap: ms.HeapInuse, stack: ms.StackInuse, goroutines: runtime.NumGoroutine()}
}

// connectSubscribed connects n JSON-protocol devices that authenticate and
// subscribe, each waiting for its acks, and returns their connections.
func connectSubscribed(tb testing.TB, addr string, n int) []net.Conn {
	tb.Helper()
	var conns []net.Conn
	buf := make([]byte, 512)
	for k := range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			tb.Fatal(err)
		}
		conns = append(conns, c)
		for _, f := range []testhandler.Frame{
			{Type: testhandler.Connect, ClientInfo: &testhandler.ClientInfo{ClientID: "m" + itoa(k)}},
			{Type: testhandler.Subscribe, Topic: "cmd/m" + itoa(k), QoS: 1},
		} {
			bs, _ := json.Marshal(f)
			if _, err := c.Write(bs); err != nil {
				tb.Fatal(err)
			}
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			r, err := c.Read(buf)
			var ack testhandler.Frame
			if err != nil || json.Unmarshal(buf[:r], &ack) != nil || ack.Code == nil || *ack.Code != 0 {
				tb.Fatalf("device %d: %q %v", k, buf[:r], err)
			}
		}
	}
	return conns
}

func itoa(i int) string {
	b, _ := json.Marshal(i)
	return string(b)
}
