# Sourced by the measuring scripts: builds exgate and the Go example
# handler, and defines up/down, which start and stop a fresh gateway (API
# on 127.0.0.1:28083 without auth, MQTT 21883, adapter 29100) with two
# handlers: listener json (27993, the JSON demo handler) and echo (27994,
# the echo handler). LISTENER_OPTS is added to both listeners' options,
# e.g. "max_conn_rate: 0". UPSTREAM=mosquitto (UPSTREAM_VERSION 5 or 4)
# puts Debian's mosquitto (127.0.0.1:21884, started by up) upstream instead
# of the embedded broker. After up, $gw is the gateway's pid and $dir holds
# the logs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
go build -o bin/exgate ./cmd/exgate
go build -o bin/jsondemo ./examples/jsondemo
ulimit -n 20000 2>/dev/null || true
dir=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
opts=${LISTENER_OPTS:+, $LISTENER_OPTS}

cat >"$dir/exgate.yaml" <<YAML
log: {level: warn}
api: {bind: 127.0.0.1:28083, auth: none}
broker: $(if [ -n "${UPSTREAM:-}" ]; then echo "{mqtt: {servers: [\"tcp://127.0.0.1:21884\"], protocol_version: ${UPSTREAM_VERSION:-5}}}"; else echo "{embedded: {listeners: {tcp: {bind: 127.0.0.1:21883}}}}"; fi)
gateway:
  exproto:
    server: {bind: 127.0.0.1:29100}
    handler: {address: "http://127.0.0.1:29001"}
    idle_timeout: 10m
    listeners:
      tcp:
        json: {bind: 127.0.0.1:27993$opts}
        echo: {bind: 127.0.0.1:27994$opts, handler: {address: "http://127.0.0.1:29002"}}
YAML

up() {
  if [ -n "${UPSTREAM:-}" ]; then
    printf 'listener 21884 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest none\n%s' "$( [ "$(id -u)" -eq 0 ] && echo 'user root')" >"$dir/mosquitto.conf"
    mosquitto -c "$dir/mosquitto.conf" >"$dir/mosquitto.log" 2>&1 & pids+=($!)
    for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/21884) 2>/dev/null && break; sleep 0.1; done
  fi
  ./bin/jsondemo -listen 127.0.0.1:29001 -adapter 127.0.0.1:29100 -quiet >"$dir/h1.log" 2>&1 & pids+=($!)
  ./bin/jsondemo -listen 127.0.0.1:29002 -adapter 127.0.0.1:29100 -echo -quiet >"$dir/h2.log" 2>&1 & pids+=($!)
  ./bin/exgate -c "$dir/exgate.yaml" >"$dir/gw.log" 2>&1 & gw=$!; pids+=($gw)
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/27993) 2>/dev/null && break; sleep 0.1; done
  sleep 1 # let the handlers connect
}
down() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; pids=(); }
metrics=http://127.0.0.1:28083/metrics
