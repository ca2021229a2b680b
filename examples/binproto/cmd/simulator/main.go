// Command simulator drives binproto terminals against an exgate: each logs
// in, sends telemetry every interval and heartbeats, and prints commands.
//
//	go run ./examples/binproto/cmd/simulator -addr 127.0.0.1:7993 -terminals 10
package main

import (
	"flag"
	"fmt"
	"log"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/exgate/exgate/examples/binproto"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:7993", "exgate's device listener")
	n := flag.Int("terminals", 10, "terminals to simulate")
	every := flag.Duration("interval", 2*time.Second, "telemetry interval")
	count := flag.Int("reports", 10, "telemetry reports per terminal (0: for ever)")
	flag.Parse()
	var wg sync.WaitGroup
	for i := 0; i < *n; i++ {
		wg.Go(func() {
			id := fmt.Sprintf("T%06d", i)
			t, err := binproto.DialTerminal(*addr, id)
			if err != nil {
				log.Printf("%s: %v", id, err)
				return
			}
			defer t.Close()
			if r, err := t.Request(binproto.Login, []byte(id)); err != nil || r != binproto.ResultOK {
				log.Printf("%s: login: result %d, %v", id, r, err)
				return
			}
			p := binproto.Position{Lat: 59329300 + int32(i)*100, Lon: 18068600, Speed: 0}
			for k := 0; *count == 0 || k < *count; k++ {
				p.Lat += int32(rand.IntN(200) - 100)
				p.Speed = uint16(rand.IntN(900))
				if r, err := t.Request(binproto.Telemetry, binproto.EncodePosition(p)); err != nil || r != binproto.ResultOK {
					log.Printf("%s: telemetry: result %d, %v", id, r, err)
					return
				}
				if f, err := t.Next(*every); err == nil && f.ID == binproto.Command {
					log.Printf("%s: command %q", id, f.Body)
				}
			}
		})
	}
	wg.Wait()
}
