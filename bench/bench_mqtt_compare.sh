#!/usr/bin/env bash
# MQTT throughput of mqemu against Mosquitto (the reference) and amqtt (the other Python
# broker, run from pip), in one interleaved run per case (shared/bench/compare.sh).
#
# usage: bench/bench_mqtt_compare.sh [ROUNDS]
#   env: MQEMU_REF_MOSQUITTO=127.0.0.1:1903 (from shared/refbrokers/start.sh; without it
#        Mosquitto is left out), SHARED (default ../shared), AMQTT_PORT (default 1923)
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED="${SHARED:-../shared}"
ROUNDS="${1:-5}"
WORK="$(mktemp -d)"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait "${pids[@]}" 2>/dev/null; rm -rf "$WORK"' EXIT

mqemu serve --mqtt-port 0 --amqp-port off --stomp-port off --log-level warning \
    --ready-file "$WORK/ready.json" >"$WORK/mqemu.log" 2>&1 &
pids+=($!); MQEMU_PID=$!
for _ in $(seq 100); do [ -s "$WORK/ready.json" ] && break; sleep 0.1; done
PORT="$(python3 -c "import json; print(json.load(open('$WORK/ready.json'))['mqtt'])")"
targets=(--target "mqemu=mqtt:127.0.0.1:$PORT,--broker-pid=$MQEMU_PID")
[ -n "${MQEMU_REF_MOSQUITTO:-}" ] && targets+=(--target "mosquitto=mqtt:$MQEMU_REF_MOSQUITTO")

if command -v amqtt >/dev/null; then
    AMQTT_PORT="${AMQTT_PORT:-1923}"
    printf 'listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:%s\nplugins:\n  amqtt.plugins.authentication.AnonymousAuthPlugin:\n    allow_anonymous: true\n' \
        "$AMQTT_PORT" > "$WORK/amqtt.yaml"
    amqtt -c "$WORK/amqtt.yaml" >"$WORK/amqtt.log" 2>&1 &
    pids+=($!)
    sleep 3
    # amqtt runs at a few thousand messages a second: fewer messages keep a round short.
    targets+=(--target "amqtt=mqtt:127.0.0.1:$AMQTT_PORT,--n=20000,--broker-pid=$!")
fi

run() {  # run TITLE LOADGEN-ARGS...
    local title="$1"; shift
    "$SHARED/bench/compare.sh" --title "$title" --rounds "$ROUNDS" --warmup-rounds 1 --timeout 300 \
        "${targets[@]}" -- "$@"
}
run "MQTT QoS 0 (256 B)" --qos 0
run "MQTT QoS 1 (256 B)" --qos 1
run "MQTT fan-out to 10 subscribers, QoS 0" --workload fanout --subscribers 10
