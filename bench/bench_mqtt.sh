#!/usr/bin/env bash
# MQTT throughput of mqemu with the shared load generator: QoS 0, QoS 1 and fan-out to 10
# subscribers, N rounds each (default 3); prints each run's figure and the median.
# usage: bench/bench_mqtt.sh [ROUNDS]
set -eu
ROUNDS="${1:-3}"
LOADGEN="${LOADGEN:-/work/shared/bench/loadgen.py}"
ready="$(mktemp)"; rm -f "$ready"
mqemu serve --mqtt-port 0 --amqp-port off --stomp-port off --ready-file "$ready" >/dev/null 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null' EXIT
for _ in $(seq 50); do [ -s "$ready" ] && break; sleep 0.1; done
port="$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['mqtt'])" "$ready")"
run() {
    local name="$1" key="$2"; shift 2
    local vals=()
    for _ in $(seq "$ROUNDS"); do
        vals+=("$(python3 "$LOADGEN" --proto mqtt --port "$port" "$@" | python3 -c "import json,sys; print(json.loads(sys.stdin.read())['$key'])")")
    done
    python3 - "$name" "${vals[@]}" <<'PY'
import statistics, sys
vals = [int(v) for v in sys.argv[2:]]
print(f"{sys.argv[1]:<28} runs={vals} median={int(statistics.median(vals))}")
PY
}
run "mqtt qos0 msgs/s" msgs_per_s --qos 0
run "mqtt qos1 msgs/s" msgs_per_s --qos 1
run "mqtt fanout10 deliveries/s" deliveries_per_s --workload fanout --subscribers 10
