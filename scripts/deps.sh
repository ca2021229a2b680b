#!/usr/bin/env bash
# Installs what the test suite needs that Go modules do not bring: nothing
# is required yet beyond the Go toolchain; later parts add Debian packages
# here (mosquitto, python3-grpcio) so a clean machine needs no hand-work.
set -euo pipefail
command -v go >/dev/null || { echo "deps: Go toolchain not found"; exit 1; }
go mod download
