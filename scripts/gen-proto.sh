#!/usr/bin/env bash
# Regenerates the committed protobuf code with Debian's protoc and the pinned
# Go plugins from the module proxy.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v protoc >/dev/null || { apt-get update -qq && apt-get install -y -qq protobuf-compiler; }
export GOBIN="$PWD/bin/tools"
go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
# The version grpc-go itself requires, so the generated code and its runtime
# (protohelpers) come from one module version.
go install github.com/planetscale/vtprotobuf/cmd/protoc-gen-go-vtproto@v0.6.1-0.20240319094008-0393e58bdf10
PATH="$GOBIN:$PATH" go generate ./exprotopb ./nativepb
