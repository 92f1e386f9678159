#!/usr/bin/env bash
# Latency at a low rate (issue 11 item 13): p50 and p99 of one message at a time, 1000 msg/s,
# 256 B (shared/bench/loadgen.py --workload latency), per protocol, mqemu against the
# reference brokers in one interleaved run per protocol (shared/bench/compare.sh: rounds
# A B C A B C ..., medians, ratios to mqemu). Results and how to read them: bench/LATENCY.md.
#
# usage: bench/bench_latency.sh [ROUNDS] [N]
#   ROUNDS: measured rounds per target (default 5, plus one warm-up round); N: messages per
#   round (default 10000, the first tenth left out of the percentiles)
#   env: MQEMU (default .venv/bin/mqemu, else mqemu on PATH): the mqemu to measure;
#        MQEMU_BEFORE: a second mqemu command (e.g. an older checkout's .venv/bin/mqemu),
#          measured in the same rounds as "before";
#        reference brokers, each a target when set (from shared/refbrokers/start.sh):
#          MQEMU_REF_AMQP (RabbitMQ, amqp://user:pass@host:port/), MQEMU_REF_RABBIT_STOMP,
#          MQEMU_REF_RABBIT_MQTT, MQEMU_REF_MOSQUITTO, MQEMU_REF_ACTIVEMQ_STOMP,
#          MQEMU_REF_ACTIVEMQ_MQTT (HOST:PORT);
#        SHARED (default ../shared), BENCH_PY (default python3), RATE (default 1000),
#        PROTOCOLS (default "amqp mqtt stomp"), JSON (a file: every run appended as JSON).
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED="${SHARED:-../shared}"
ROUNDS="${1:-5}"
N="${2:-10000}"
RATE="${RATE:-1000}"
PROTOCOLS="${PROTOCOLS:-amqp mqtt stomp}"
PY="${BENCH_PY:-python3}"
if [ -z "${MQEMU:-}" ]; then
    if [ -x .venv/bin/mqemu ]; then MQEMU=.venv/bin/mqemu; else MQEMU=mqemu; fi
fi
WORK="$(mktemp -d)"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait "${pids[@]}" 2>/dev/null; rm -rf "$WORK"' EXIT

start_node() {  # start_node NAME COMMAND: an mqemu with the three listeners on free ports
    local name="$1" cmd="$2"
    $cmd serve --amqp-port 0 --stomp-port 0 --mqtt-port 0 --log-level warning \
        --ready-file "$WORK/$name.json" >"$WORK/$name.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 200); do [ -s "$WORK/$name.json" ] && return 0; sleep 0.1; done
    echo "$name did not start:" >&2; cat "$WORK/$name.log" >&2; exit 1
}
field() { "$PY" -c "import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$@"; }

start_node mqemu "$MQEMU"
[ -n "${MQEMU_BEFORE:-}" ] && start_node before "$MQEMU_BEFORE"

for proto in $PROTOCOLS; do
    targets=(--target "mqemu=$proto:127.0.0.1:$(field "$WORK/mqemu.json" "$proto"),--broker-pid=$(field "$WORK/mqemu.json" pid)")
    [ -n "${MQEMU_BEFORE:-}" ] && targets+=(--target "before=$proto:127.0.0.1:$(field "$WORK/before.json" "$proto"),--broker-pid=$(field "$WORK/before.json" pid)")
    case "$proto" in
    amqp)
        if [ -n "${MQEMU_REF_AMQP:-}" ]; then
            hostport="${MQEMU_REF_AMQP#*@}"; hostport="${hostport%%/*}"
            targets+=(--target "rabbitmq=amqp:$hostport")
        fi ;;
    mqtt)
        [ -n "${MQEMU_REF_MOSQUITTO:-}" ] && targets+=(--target "mosquitto=mqtt:$MQEMU_REF_MOSQUITTO")
        [ -n "${MQEMU_REF_RABBIT_MQTT:-}" ] && targets+=(--target "rabbitmq=mqtt:$MQEMU_REF_RABBIT_MQTT")
        [ -n "${MQEMU_REF_ACTIVEMQ_MQTT:-}" ] && targets+=(--target "activemq=mqtt:$MQEMU_REF_ACTIVEMQ_MQTT") ;;
    stomp)
        [ -n "${MQEMU_REF_ACTIVEMQ_STOMP:-}" ] && targets+=(--target "activemq=stomp:$MQEMU_REF_ACTIVEMQ_STOMP")
        [ -n "${MQEMU_REF_RABBIT_STOMP:-}" ] && targets+=(--target "rabbitmq=stomp:$MQEMU_REF_RABBIT_STOMP,--stomp-host=/") ;;
    esac
    BENCH_PY="$PY" "$SHARED/bench/compare.sh" --title "$proto latency at $RATE msg/s ($N x 256 B)" \
        --rounds "$ROUNDS" --warmup-rounds 1 --timeout 600 ${JSON:+--json "$JSON"} "${targets[@]}" \
        -- --workload latency --rate "$RATE" --n "$N"
done
