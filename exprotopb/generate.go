// Package exprotopb holds the generated Go code for the ExProto wire contract
// (package emqx.exproto.v1, proto/exproto.proto). It is committed so that a
// build needs no protoc; `go generate ./exprotopb` (or `make proto`)
// regenerates it with Debian's protoc and the pinned protoc-gen-go and
// protoc-gen-go-grpc.
package exprotopb

//go:generate protoc --proto_path=../proto --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative ../proto/exproto.proto
