package metrics

import (
	"sync"
	"testing"
	"time"
)

// TestHandlerCall: each callback's observations land in its own series,
// also when the series is first made by concurrent callers, and errors are
// counted by code.
func TestHandlerCall(t *testing.T) {
	m := New()
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 100 {
				m.HandlerCall("OnReceivedBytes", time.Millisecond, "")
			}
		})
	}
	wg.Wait()
	m.HandlerCall("OnSocketCreated", 2*time.Millisecond, "Unavailable")
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	counts, errs := map[string]uint64{}, map[string]float64{}
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			switch mf.GetName() {
			case "exgate_handler_call_duration_seconds":
				counts[mt.GetLabel()[0].GetValue()] = mt.GetHistogram().GetSampleCount()
			case "exgate_handler_errors_total":
				errs[mt.GetLabel()[0].GetValue()+"/"+mt.GetLabel()[1].GetValue()] = mt.GetCounter().GetValue()
			}
		}
	}
	if len(counts) != 2 || counts["OnReceivedBytes"] != 400 || counts["OnSocketCreated"] != 1 {
		t.Fatalf("observations per callback: %v", counts)
	}
	if len(errs) != 1 || errs["OnSocketCreated/Unavailable"] != 1 {
		t.Fatalf("errors: %v", errs)
	}
}

// BenchmarkHandlerCall is the metrics cost of one device event.
func BenchmarkHandlerCall(b *testing.B) {
	m := New()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.HandlerCall("OnReceivedBytes", time.Millisecond, "")
		}
	})
}
