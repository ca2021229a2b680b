package e2e

import (
	"encoding/json"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/exgate/exgate/internal/config"
	"github.com/exgate/exgate/internal/testhandler"
)

// BenchmarkDeviceMemory connects 500 devices that authenticate and
// subscribe, and reports the gateway process's heap and goroutines per
// device, with the embedded broker (gateway + broker together) and with an
// external mosquitto (gateway only). Run with -benchtime=1x:
//
//	go test ./internal/e2e -run '^$' -bench DeviceMemory -benchtime=1x
func BenchmarkDeviceMemory(b *testing.B) {
	for _, mode := range []string{"tcp", "tcp+mosquitto"} {
		b.Run(mode, func(b *testing.B) {
			const n = 500
			e := startWith(b, options{transport: mode}, func(c *config.Config) {
				c.Gateway.ExProto.IdleTimeout = time.Minute
			})
			measure := func() (heap uint64, gr int) {
				runtime.GC()
				runtime.GC()
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				return ms.HeapInuse, runtime.NumGoroutine()
			}
			for i := 0; i < b.N; i++ {
				h0, g0 := measure()
				var conns []net.Conn
				for k := 0; k < n; k++ {
					c, err := net.Dial("tcp", e.addr())
					if err != nil {
						b.Fatal(err)
					}
					conns = append(conns, c)
					dec := json.NewDecoder(c)
					for _, f := range []testhandler.Frame{
						{Type: testhandler.Connect, ClientInfo: &testhandler.ClientInfo{ClientID: "m" + itoa(k)}},
						{Type: testhandler.Subscribe, Topic: "cmd/m" + itoa(k), QoS: 1},
					} {
						bs, _ := json.Marshal(f)
						if _, err := c.Write(bs); err != nil {
							b.Fatal(err)
						}
						var ack testhandler.Frame
						if err := dec.Decode(&ack); err != nil || *ack.Code != 0 {
							b.Fatalf("device %d: %+v %v", k, ack, err)
						}
					}
				}
				h1, g1 := measure()
				b.ReportMetric(float64(h1-h0)/n, "heap-B/device")
				b.ReportMetric(float64(g1-g0)/n, "goroutines/device")
				for _, c := range conns {
					c.Close()
				}
			}
		})
	}
}

func itoa(i int) string {
	b, _ := json.Marshal(i)
	return string(b)
}
