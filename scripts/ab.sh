#!/bin/bash
# A/B of two builds (or two settings) on one scenario, in interleaved pairs
# (A B, B A, A B, …) on fresh processes, with the medians of each side: on
# a shared, noisy machine a difference is worth quoting only when it holds
# pair by pair.
#
#   scripts/ab.sh [-r rounds] A B scenario
#
# A and B are exgate binaries, each optionally followed by ",jsondemo" to
# pair it with its own handler build (default: bin/jsondemo), e.g.
#   scripts/ab.sh -r 5 /tmp/exgate-old,/tmp/jsondemo-old bin/exgate storm
# NODE_A and NODE_B, if set, go into each side's `node:` settings, e.g.
#   NODE_B='gc_min_heap: 64MiB' scripts/ab.sh bin/exgate bin/exgate fanout
# ENV_A and ENV_B, if set, are environment assignments for each side's
# gateway, e.g. ENV_B='GOMAXPROCS=1'; HENV_A and HENV_B the same for each
# side's handler.
# scenario: storm, storm-unary (10,000 devices), echo, echo-unary,
# echo-nowait (100 devices, 8 s), latency (one device, NoWait, 8 s: the
# rate is one over the mean round trip), paced (100 devices, NoWait, 2,000
# round trips/s: the CPU per round trip at light load), fanin (QoS 1, 100 devices),
# fanout (1,000 devices, 200 messages), fanout10k (10,000 devices, 20
# messages), onepub (one publish to 10,000 devices: the rate is devices
# over the time to the last). Prints, per run
# and then as medians, the rate, the gateway's and the handler's CPU per
# operation (for fanout and onepub from the first publish to the last
# delivery) and the p99 latency (µs; for fanout and onepub of arrivals).
set -euo pipefail
rounds=3
if [ "${1:-}" = -r ]; then rounds=$2; shift 2; fi
[ $# -eq 3 ] || { sed -n 2,25p "$0"; exit 2; }
A=$1 B=$2 scenario=$3
cd "$(dirname "$0")/.."
[ -x bin/exgate ] || go build -o bin/exgate ./cmd/exgate
[ -x bin/jsondemo ] || go build -o bin/jsondemo ./examples/jsondemo

base=$((20000 + ($$ % 400) * 10)) # loopback ports base..base+5
adapter=127.0.0.1:$base handler=127.0.0.1:$((base + 1)) mqtt=127.0.0.1:$((base + 2))
api=127.0.0.1:$((base + 3)) unary=127.0.0.1:$((base + 4)) native=127.0.0.1:$((base + 5))
hflags=(-quiet) bench=()
case $scenario in
storm | storm-unary) bench=(storm --devices 10000) ;;
echo | echo-unary) hflags+=(-echo); bench=(echo --devices 100 --duration 8s) ;;
echo-nowait) hflags+=(-echo -nowait); bench=(echo --devices 100 --duration 8s) ;;
latency) hflags+=(-echo -nowait); bench=(echo --devices 1 --duration 8s) ;;
paced) hflags+=(-echo -nowait); bench=(echo --devices 100 --rate 2000 --duration 8s) ;;
fanin) bench=(fanin --broker "$mqtt" --devices 100 --qos 1 --window 1000 --duration 8s) ;;
fanout) bench=(fanout --broker "$mqtt" --devices 1000 --messages 200) ;;
fanout10k) bench=(fanout --broker "$mqtt" --devices 10000 --messages 20) ;;
onepub) bench=(fanout --broker "$mqtt" --devices 10000 --messages 1) ;;
*) echo "unknown scenario $scenario" >&2; exit 2 ;;
esac
addr=$native
case $scenario in *-unary) addr=$unary ;; esac
case ${bench[0]} in storm | fanin | fanout) bench+=(--gateway "$addr") ;; *) bench+=(--addr "$addr") ;; esac

tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT
for side in A B; do
	node=NODE_$side
	cat >"$tmp/$side.yaml" <<EOF
log: {level: warn}
node: {${!node:-}}
api: {bind: "$api", auth: none}
broker: {embedded: {listeners: {tcp: {bind: "$mqtt"}}}}
gateway:
  exproto:
    server: {bind: "$adapter"}
    handler: {address: "http://$handler"}
    idle_timeout: 10m
    listeners:
      tcp:
        unary: {bind: "$unary", max_conn_rate: 0}
        native: {bind: "$native", max_conn_rate: 0, handler: {service_name: native}}
EOF
done

# run BUILD SIDE: one run on fresh processes with SIDE's settings; appends
# "rate gw handler" to $tmp/SIDE
run() {
	local exg=${1%%,*} jd=bin/jsondemo
	[[ $1 == *,* ]] && jd=${1#*,}
	local henv=HENV_$2
	# shellcheck disable=SC2086 # the assignments split on purpose
	env ${!henv:-} "$jd" -listen "$handler" -adapter "$adapter" "${hflags[@]}" >"$tmp/h.log" 2>&1 &
	local hp=$!
	local env=ENV_$2
	# shellcheck disable=SC2086 # the assignments split on purpose
	env ${!env:-} "$exg" -c "$tmp/$2.yaml" >"$tmp/g.log" 2>&1 &
	local gp=$!
	pids=("$hp" "$gp")
	for _ in $(seq 100); do
		(exec 3<>"/dev/tcp/${api%:*}/${api#*:}") 2>/dev/null && break
		sleep 0.1
	done
	sleep 0.5
	# One load tool for both sides (this checkout's), so that two builds
	# differ only in the gateway and handler under test.
	bin/exgate bench "${bench[@]}" --gateway-pid "$gp" --handler-pid "$hp" --json >"$tmp/r.json" 2>/dev/null
	python3 - "$tmp/r.json" <<'PY' | tee -a "$tmp/$2"
import json, sys
r = json.load(open(sys.argv[1]))
p = r.get("procs", {})
print("%.0f %.1f %.1f %.0f" % (r["rate"], p.get("gateway", {}).get("cpu_per_op_us", 0), p.get("handler", {}).get("cpu_per_op_us", 0), r.get("p99_us", 0)))
PY
	kill "$gp" "$hp" 2>/dev/null || true
	wait "$gp" "$hp" 2>/dev/null || true
	pids=()
}

for r in $(seq "$rounds"); do
	if [ $((r % 2)) -eq 1 ]; then order=("A" "B"); else order=("B" "A"); fi
	for side in "${order[@]}"; do
		printf '%s round %d: ' "$side" "$r"
		if [ "$side" = A ]; then run "$A" A; else run "$B" B; fi
	done
done
python3 - "$tmp/A" "$tmp/B" <<'PY'
import statistics, sys
print("medians        rate/s   gateway µs/op   handler µs/op    p99 µs")
for name, path in zip("AB", sys.argv[1:]):
    rows = [list(map(float, l.split())) for l in open(path) if l.strip()]
    m = [statistics.median(c) for c in zip(*rows)]
    print("%s (%d runs) %10.0f %15.1f %15.1f %9.0f" % (name, len(rows), *m))
PY
