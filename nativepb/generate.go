// Package nativepb holds the generated Go code for exgate's native handler
// service (package exgate.v1, proto/exgate.proto): one batched
// bidirectional stream instead of a gRPC call per event. It is committed so
// that a build needs no protoc; `make proto` regenerates it (with the
// vtprotobuf encoders and decoders internal/pbcodec uses, as exprotopb).
package nativepb

//go:generate protoc --proto_path=../proto --go_out=. --go_opt=paths=source_relative,Mexproto.proto=github.com/exgate/exgate/exprotopb --go-grpc_out=. --go-grpc_opt=paths=source_relative,Mexproto.proto=github.com/exgate/exgate/exprotopb --go-vtproto_out=. --go-vtproto_opt=paths=source_relative,features=marshal+unmarshal+size,Mexproto.proto=github.com/exgate/exgate/exprotopb ../proto/exgate.proto
