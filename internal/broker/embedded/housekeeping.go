package embedded

import (
	"errors"
	"reflect"
	"time"
	"unsafe"

	mqtt "github.com/mochi-mqtt/server/v2"
)

// housekeeping is how often mochi looks for expired sessions and expired
// in-flight messages. mochi does both every second, and each time copies
// its whole map of clients, devices included: at 15,000 devices that is
// a few MiB of garbage a second and a few percent of a core on a gateway
// that does nothing, and the garbage keeps an idle gateway's heap at its
// peak. Every 10 s expiry comes at most 10 s late, which no MQTT client
// can tell from a broker that is busy.
const housekeeping = 10 * time.Second

// slowHousekeeping sets mochi's two per-client tickers to every. They are
// unexported fields of mochi v2.7.9 (Server.loop.clientExpiry and
// .inflightExpiry): TestHousekeepingSlowed fails if an upgrade moves them.
func slowHousekeeping(s *mqtt.Server, every time.Duration) error {
	loop := reflect.ValueOf(s).Elem().FieldByName("loop")
	if !loop.IsValid() || loop.Kind() != reflect.Pointer || loop.IsNil() {
		return errors.New("mochi's Server has no loop: its housekeeping runs every second")
	}
	lv := loop.Elem()
	for _, name := range []string{"clientExpiry", "inflightExpiry"} {
		f := lv.FieldByName(name)
		if !f.IsValid() || f.Type() != reflect.TypeFor[*time.Ticker]() {
			return errors.New("mochi's loop has no ticker " + name + ": its housekeeping runs every second")
		}
		t := *(**time.Ticker)(unsafe.Pointer(f.UnsafeAddr()))
		if t == nil {
			return errors.New("mochi's ticker " + name + " is not made yet")
		}
		t.Reset(every)
	}
	return nil
}
