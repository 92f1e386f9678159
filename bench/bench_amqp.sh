#!/usr/bin/env bash
# AMQP 0-9-1 throughput and latency of mqemu against the reference RabbitMQ, in one
# interleaved run per case (shared/bench/compare.sh: rounds A B A B ..., medians, ratios).
#
# usage: bench/bench_amqp.sh [ROUNDS]
#   env: MQEMU_REF_AMQP=amqp://guest:guest@127.0.0.1:5682/ (from shared/refbrokers/start.sh;
#        without it only mqemu is measured), SHARED (default ../shared)
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED="${SHARED:-../shared}"
ROUNDS="${1:-5}"
WORK="$(mktemp -d)"
mqemu serve --amqp-port 0 --stomp-port off --mqtt-port off --log-level warning \
    --ready-file "$WORK/ready.json" >"$WORK/broker.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 100); do [ -s "$WORK/ready.json" ] && break; sleep 0.1; done
PORT="$(python3 -c "import json; print(json.load(open('$WORK/ready.json'))['amqp'])")"

targets=(--target "mqemu=amqp:127.0.0.1:$PORT,--broker-pid=$PID")
if [ -n "${MQEMU_REF_AMQP:-}" ]; then
    hostport="${MQEMU_REF_AMQP#*@}"; hostport="${hostport%%/*}"
    targets+=(--target "rabbitmq=amqp:$hostport")
fi
run() {  # run TITLE LOADGEN-ARGS...
    local title="$1"; shift
    "$SHARED/bench/compare.sh" --title "$title" --rounds "$ROUNDS" --warmup-rounds 1 "${targets[@]}" -- "$@"
}
run "AMQP transient, no-ack (100 000 x 256 B)" --ack auto
run "AMQP transient, manual ack, prefetch 1000" --ack manual --prefetch 1000
run "AMQP transient, confirms + manual ack" --ack manual --confirm
run "AMQP latency at 1000 msg/s" --workload latency --n 10000
