#!/usr/bin/env bash
# Overload, measured on fresh processes (an exgate with its default limits
# and two example handlers): a QoS 1 burst to subscribed devices, then a
# long churn of devices at a steady connect rate beside steady echo traffic,
# sampling the gateway's RSS, goroutines and closing devices over time.
#
#   scripts/overload.sh                    # burst + 10 minutes of churn at 500/s
#   CHURN=60s RATE=2000 scripts/overload.sh   # a shorter, harder run
set -euo pipefail
CHURN=${CHURN:-10m}
RATE=${RATE:-500}
# The gateway keeps its defaults (max_conn_rate 1000/s, max_mqueue_len 1000,
# max_messages_per_delivery 0, one per call for these unary handlers): the
# run shows what an operator gets.
source "$(dirname "$0")/lib/gateway.sh"

up
echo "== QoS 1 burst: 5,000 messages as fast as PUBACKs come, to a topic 20 devices subscribe"
./bin/exgate bench burst --gateway 127.0.0.1:27993 --broker 127.0.0.1:21883 --devices 20 --messages 5000 \
  --gateway-metrics "$metrics" 2>/dev/null
echo "   gateway warnings logged: $(grep -c 'delivery dropped' "$dir/gw.log" || true) lines about drops"
down

up
echo "== churn: $RATE connects/s for $CHURN (each device stays 1 s), beside 100 echo devices at 1,000 round trips/s"
./bin/exgate bench churn --gateway 127.0.0.1:27993 --rate "$RATE" --duration "$CHURN" --stay 1s --settle 120s --every 5s \
  --echo-addr 127.0.0.1:27994 --echo-devices 100 --echo-rate 1000 \
  --gateway-pid "$gw" --gateway-metrics "$metrics" 2>/dev/null
echo "   OnSocketClosed calls reported failed in the log: $(grep -c 'OnSocketClosed failed' "$dir/gw.log" || true) lines"
down
