#!/usr/bin/env bash
# Installs what the test suite needs beyond Go modules, so that a clean
# machine (CI) needs no hand-work: Debian's mosquitto (the external broker of
# the scale-out tests; it brings mosquitto_passwd) and chromium (the
# dashboard's end-to-end test drives it headless), python3-grpcio and
# python3-protobuf (the Python example's test), Node.js and npm, the Node
# example's npm packages, and nats-server and rabbitmq-server (the clustered
# broker tests start their own nodes on loopback ports; the packages'
# services are kept from starting).
set -euo pipefail
command -v go >/dev/null || { echo "deps: Go toolchain not found"; exit 1; }

need=()
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v chromium >/dev/null || need+=(chromium)
/usr/bin/python3 -c "import grpc, google.protobuf" 2>/dev/null || need+=(python3-grpcio python3-protobuf)
command -v node >/dev/null || need+=(nodejs)
command -v systemd-analyze >/dev/null || need+=(systemd) # verifies the packaged unit
command -v dpkg-deb >/dev/null || need+=(dpkg)
command -v npm >/dev/null || need+=(npm)
[ -x /usr/sbin/nats-server ] || [ -x /usr/bin/nats-server ] || need+=(nats-server)
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || need+=(rabbitmq-server)

if [ ${#need[@]} -gt 0 ]; then
  echo "deps: installing ${need[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  # A package's service must not start (rabbitmq-server's would hold ports
  # and an Erlang port mapper for the rest of the machine's life).
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
    $sudo chmod +x /usr/sbin/policy-rc.d
    trap '$sudo rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# The Node.js example's packages (npm registry).
if [ ! -d examples/node/node_modules/@grpc/grpc-js ]; then
  (cd examples/node && npm ci --no-audit --no-fund --loglevel=error)
fi
go mod download
