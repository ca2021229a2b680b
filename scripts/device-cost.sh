#!/usr/bin/env bash
# What one device costs the gateway process, measured on fresh processes
# (an exgate and its example handlers, started anew for every figure so no
# earlier load inflates the heap): RSS and goroutines per authenticated,
# subscribed, idle device at 5,000 and 15,000 devices, per connected but
# unauthenticated device, the connect rate, and the CPU an idle gateway
# spends on 15,000 devices (mochi's per-second housekeeping walks them all).
#
#   scripts/device-cost.sh            # ~2 minutes on 2 cores
#   UPSTREAM=mosquitto [UPSTREAM_VERSION=4] scripts/device-cost.sh
#                                     # external broker mode, 5,000 devices (two
#                                     # sockets each: the file limit allows no more)
set -euo pipefail
LISTENER_OPTS="max_conn_rate: 0" # the gateway measures itself, not its limiter
source "$(dirname "$0")/lib/gateway.sh"
cpu() { awk '{print $14+$15}' "/proc/$1/stat"; } # clock ticks (1/100 s)

sizes="5000 15000"
[ -n "${UPSTREAM:-}" ] && sizes=5000
for n in $sizes; do
  up
  echo "== $n devices connect, authenticate and subscribe (fresh gateway)"
  ./bin/exgate bench storm --gateway 127.0.0.1:27993 --devices "$n" --source-ips 4 \
    --gateway-pid "$gw" --gateway-metrics http://127.0.0.1:28083/metrics --hold 40s 2>/dev/null &
  bench=$!
  sleep $((n / 1000 + 10))
  c0=$(cpu "$gw"); sleep 10; c1=$(cpu "$gw")
  echo "   idle gateway CPU with $n devices held: $(awk -v t=$((c1 - c0)) 'BEGIN { printf "%.1f", t / 10 }')% of a core over 10 s"
  wait "$bench"
  down
done

[ -n "${UPSTREAM:-}" ] && exit 0 # an unauthenticated device has no upstream session
up
echo "== 5000 devices connect and stay unauthenticated (fresh gateway)"
./bin/exgate bench echo --addr 127.0.0.1:27994 --devices 5000 --rate 500 --duration 15s --hold 25s --source-ips 4 \
  --gateway-pid "$gw" --gateway-metrics http://127.0.0.1:28083/metrics 2>/dev/null
down
