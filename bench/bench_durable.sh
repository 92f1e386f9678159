#!/usr/bin/env bash
# Durable throughput of mqemu with --data-dir (SQLite, group commit) against the reference
# brokers, one interleaved run per case (shared/bench/compare.sh: rounds A B A B ..., medians,
# ratios): AMQP persistent + confirms + manual ack against RabbitMQ; STOMP persistent
# client-individual with a receipt per SEND against RabbitMQ and ActiveMQ; MQTT QoS 1 to a
# persistent session against Mosquitto.
# Afterwards it prints how many commits (= fsyncs of the WAL) mqemu made, from the store's
# closing log line.
#
# usage: bench/bench_durable.sh [ROUNDS] [N]
#   env: MQEMU_REF_AMQP, MQEMU_REF_RABBIT_STOMP, MQEMU_REF_ACTIVEMQ_STOMP, MQEMU_REF_MOSQUITTO
#        (from /tmp/mqemu-ref/env or shared/refbrokers/start.sh; each reference is left out
#        when its variable is unset), SHARED (default ../shared)
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED="${SHARED:-../shared}"
ROUNDS="${1:-5}"
N="${2:-100000}"
if [ -z "${MQEMU_REF_AMQP:-}" ] && [ -f /tmp/mqemu-ref/env ]; then . /tmp/mqemu-ref/env; fi
WORK="$(mktemp -d)"
mqemu serve --amqp-port 0 --stomp-port 0 --mqtt-port 0 --log-level info \
    --data-dir "$WORK/data" --ready-file "$WORK/ready.json" >"$WORK/broker.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 100); do [ -s "$WORK/ready.json" ] && break; sleep 0.1; done
port() { python3 -c "import json; print(json.load(open('$WORK/ready.json'))['$1'])"; }
PORT="$(port amqp)"
STARTED=$(date +%s.%N)

targets=(--target "mqemu=amqp:127.0.0.1:$PORT,--broker-pid=$PID")
if [ -n "${MQEMU_REF_AMQP:-}" ]; then
    hostport="${MQEMU_REF_AMQP#*@}"; hostport="${hostport%%/*}"
    targets+=(--target "rabbitmq=amqp:$hostport")
fi
"$SHARED/bench/compare.sh" --title "AMQP durable: persistent, confirms, manual ack ($N x 256 B)" \
    --rounds "$ROUNDS" --warmup-rounds 1 "${targets[@]}" -- \
    --n "$N" --persistent --confirm --ack manual

targets=(--target "mqemu=stomp:127.0.0.1:$(port stomp),--broker-pid=$PID")
[ -n "${MQEMU_REF_RABBIT_STOMP:-}" ] && targets+=(--target "rabbitmq=stomp:$MQEMU_REF_RABBIT_STOMP,--stomp-host=/")
[ -n "${MQEMU_REF_ACTIVEMQ_STOMP:-}" ] && targets+=(--target "activemq=stomp:$MQEMU_REF_ACTIVEMQ_STOMP")
"$SHARED/bench/compare.sh" --title "STOMP durable: persistent, receipts, client-individual ($N x 256 B)" \
    --rounds "$ROUNDS" --warmup-rounds 1 "${targets[@]}" -- \
    --n "$N" --persistent --confirm --stomp-ack client-individual

targets=(--target "mqemu=mqtt:127.0.0.1:$(port mqtt),--broker-pid=$PID")
[ -n "${MQEMU_REF_MOSQUITTO:-}" ] && targets+=(--target "mosquitto=mqtt:$MQEMU_REF_MOSQUITTO")
"$SHARED/bench/compare.sh" --title "MQTT durable: QoS 1 to a persistent session ($N x 256 B)" \
    --rounds "$ROUNDS" --warmup-rounds 1 "${targets[@]}" -- \
    --n "$N" --qos 1 --clean 0

kill -TERM $PID; wait $PID || true
ENDED=$(date +%s.%N)
line="$(grep 'store closed' "$WORK/broker.log" || true)"
echo "mqemu store: $line"
python3 - "$line" "$STARTED" "$ENDED" <<'PY'
import re, sys
line, t0, t1 = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
m = re.search(r"commits=(\d+)", line)
b = re.search(r"busy_seconds=([\d.]+)", line)
if m:
    commits = int(m.group(1))
    print(f"commits (fsyncs of the WAL): {commits} in {t1 - t0:.1f} s of node time, "
          f"{commits / (t1 - t0):.0f}/s on average"
          + (f"; {commits / float(b.group(1)):.0f}/s while committing" if b and float(b.group(1)) else ""))
PY
