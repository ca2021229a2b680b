package main

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	pb "github.com/exgate/exgate/exprotopb"
)

type bearerToken string

func (b bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}
func (bearerToken) RequireTransportSecurity() bool { return false }

// The real binary's ConnectionAdapter refuses every call without the
// configured bearer token, or with a wrong one, before looking at it; with
// the token the same calls are answered.
func TestAdapterTokenRequired(t *testing.T) {
	n := startNode(t, `
api: {bind: "127.0.0.1:0"}
broker: {embedded: {listeners: {tcp: {bind: "127.0.0.1:0"}}}}
gateway:
  exproto:
    server: {bind: "127.0.0.1:0", auth_token: the-adapter-token}
    listeners: {tcp: {default: {bind: "127.0.0.1:0"}}}
`)
	adapter := n.addr(t, "adapter")
	for _, tc := range []struct {
		name  string
		token string
		want  codes.Code
	}{{"no token", "", codes.Unauthenticated}, {"wrong token", "not-the-token", codes.Unauthenticated}, {"the token", "the-adapter-token", codes.OK}} {
		t.Run(tc.name, func(t *testing.T) {
			opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
			if tc.token != "" {
				opts = append(opts, grpc.WithPerRPCCredentials(bearerToken(tc.token)))
			}
			cc, err := grpc.NewClient(adapter, opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			a := pb.NewConnectionAdapterClient(cc)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			resp, err := a.RawPublish(ctx, &pb.RawPublishRequest{Topic: "token/test", Payload: []byte("x")})
			if status.Code(err) != tc.want {
				t.Fatalf("RawPublish: %v, want %v", err, tc.want)
			}
			if tc.want == codes.OK && resp.Code != pb.ResultCode_SUCCESS {
				t.Fatalf("RawPublish with the token: %v", resp)
			}
			_, err = a.Send(ctx, &pb.SendBytesRequest{Conn: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", Bytes: []byte("x")})
			if status.Code(err) != tc.want {
				t.Fatalf("Send: %v, want %v", err, tc.want)
			}
		})
	}
}
