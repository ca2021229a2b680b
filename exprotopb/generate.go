// Package exprotopb holds the generated Go code for the ExProto wire contract
// (package emqx.exproto.v1, proto/exproto.proto). It is committed so that a
// build needs no protoc; `go generate ./exprotopb` (or `make proto`)
// regenerates it with Debian's protoc and the pinned protoc-gen-go,
// protoc-gen-go-grpc and protoc-gen-go-vtproto (the last one's fast
// encoders and decoders are what internal/pbcodec uses on the wire).
package exprotopb

//go:generate protoc --proto_path=../proto --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative --go-vtproto_out=. --go-vtproto_opt=paths=source_relative,features=marshal+unmarshal+size ../proto/exproto.proto
