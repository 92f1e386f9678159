#!/usr/bin/env bash
# STOMP 1.2 throughput of mqemu (shared/bench/loadgen.py, raw client, 100 000 x 256 B), medians
# of interleaved rounds (shared/bench/compare.sh). Targets (issue 4): ack:auto >= ~31 000 msg/s,
# client-individual with prefetch 1000 >= ~25 000 msg/s.
#
# usage: bench/bench_stomp.sh [ROUNDS] [ENGINE]
#   env: SHARED (default ../shared); reference brokers, each a target when set (HOST:PORT):
#        MQEMU_REF_RABBIT_STOMP (RabbitMQ, vhost /), MQEMU_REF_ACTIVEMQ_STOMP (ActiveMQ),
#        MQEMU_REF_STOMP (any other)
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED="${SHARED:-../shared}"
ROUNDS="${1:-3}"
ENGINE="${2:-rabbitmq}"
WORK="$(mktemp -d)"
mqemu serve --engine "$ENGINE" --stomp-port 0 --amqp-port off --mqtt-port off --log-level warning \
    --ready-file "$WORK/ready.json" >"$WORK/broker.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 100); do [ -s "$WORK/ready.json" ] && break; sleep 0.1; done
PORT="$(python3 -c "import json; print(json.load(open('$WORK/ready.json'))['stomp'])")"

targets=(--target "mqemu-$ENGINE=stomp:127.0.0.1:$PORT,--broker-pid=$PID")
[ -n "${MQEMU_REF_RABBIT_STOMP:-}" ] && targets+=(--target "rabbitmq=stomp:$MQEMU_REF_RABBIT_STOMP,--stomp-host=/")
[ -n "${MQEMU_REF_ACTIVEMQ_STOMP:-}" ] && targets+=(--target "activemq=stomp:$MQEMU_REF_ACTIVEMQ_STOMP")
[ -n "${MQEMU_REF_STOMP:-}" ] && targets+=(--target "reference=stomp:$MQEMU_REF_STOMP")
run() {  # run TITLE LOADGEN-ARGS...
    local title="$1"; shift
    "$SHARED/bench/compare.sh" --title "$title" --rounds "$ROUNDS" --warmup-rounds 1 "${targets[@]}" -- "$@"
}
run "STOMP 1.2 ack:auto" --stomp-ack auto
run "STOMP 1.2 client-individual, prefetch 1000" --stomp-ack client-individual --prefetch 1000
run "STOMP 1.2 persistent, client-individual" --stomp-ack client-individual --persistent
