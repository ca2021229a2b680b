#!/usr/bin/env bash
# staticcheck at a pinned version, fetched from the Go module proxy and
# built on first use (nothing to install by hand; the build is cached).
# It catches what vet does not: dead fields, results never used, calls of
# deprecated APIs.
set -euo pipefail
cd "$(dirname "$0")/.."
exec go run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...
