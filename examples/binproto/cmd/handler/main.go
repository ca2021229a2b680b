// Command handler serves the binproto example handler.
//
//	go run ./examples/binproto/cmd/handler -listen 127.0.0.1:9001 -adapter 127.0.0.1:9100
package main

import (
	"context"
	"flag"
	"log"
	"net"
	"os"
	"os/signal"
	"time"

	"github.com/exgate/exgate/examples/binproto"
	"github.com/exgate/exgate/sdk"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:9001", "where exgate calls this handler")
	adapter := flag.String("adapter", "127.0.0.1:9100", "exgate's ConnectionAdapter")
	token := flag.String("token", "", "exgate's server.auth_token")
	flag.Parse()
	var opts []sdk.ClientOption
	if *token != "" {
		opts = append(opts, sdk.WithToken(*token))
	}
	client, err := sdk.Dial(*adapter, opts...)
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	srv := sdk.NewServer[binproto.State](binproto.Handler{}, client)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	log.Printf("binproto handler on %s, calling exgate at %s", *listen, *adapter)
	if err := srv.Serve(ln); err != nil {
		log.Fatal(err)
	}
}
