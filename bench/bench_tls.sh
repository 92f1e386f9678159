#!/usr/bin/env bash
# AMQP and MQTT throughput over TLS against plain TCP, on one mqemu node (started here with
# --tls, plain and TLS listeners side by side), rounds interleaved: each round runs every case
# plain then TLS with the shared load generator (TLS through bench/tls_loadgen.py, which
# verifies the node's certificate with the CA from its ready file). Prints per case the
# median msgs/s and the broker's CPU µs per message, plain and TLS, and the TLS/plain ratios.
# usage: bench/bench_tls.sh [ROUNDS] [N]    (default 5 rounds of 50000 messages)
set -eu
ROUNDS="${1:-5}"
N="${2:-50000}"
HERE="$(cd "$(dirname "$0")" && pwd)"
PY="${BENCH_PY:-python3}"
MQEMU_PY="${MQEMU_PY:-$HERE/../.venv/bin/python}"
LOADGEN="${LOADGEN:-/work/shared/bench/loadgen.py}"
ready="$(mktemp)"; rm -f "$ready"
out="$(mktemp)"
"$MQEMU_PY" -m mqemu.ha.cli serve --tls --amqp-port 0 --mqtt-port 0 --stomp-port off --amqps-port 0 \
    --mqtts-port 0 --stomps-port off --ready-file "$ready" >/dev/null 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -f "$out"' EXIT
for _ in $(seq 100); do [ -s "$ready" ] && break; sleep 0.1; done
get() { "$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$ready" "$1"; }
ca="$(get ca)"
run() {  # case transport proto port args...
    local case="$1" transport="$2" proto="$3" port="$4"; shift 4
    local args=(--proto "$proto" --port "$port" --n "$N" --broker-pid "$pid" --label "$case/$transport" "$@")
    if [ "$transport" = tls ]; then
        "$PY" "$HERE/tls_loadgen.py" --ca "$ca" --loadgen "$LOADGEN" -- "${args[@]}" >>"$out"
    else
        "$PY" "$LOADGEN" "${args[@]}" >>"$out"
    fi
}
for round in $(seq "$ROUNDS"); do
    run "amqp no-ack" plain amqp "$(get amqp)"
    run "amqp no-ack" tls amqp "$(get amqps)"
    run "mqtt qos0" plain mqtt "$(get mqtt)" --qos 0
    run "mqtt qos0" tls mqtt "$(get mqtts)" --qos 0
    run "mqtt qos1" plain mqtt "$(get mqtt)" --qos 1
    run "mqtt qos1" tls mqtt "$(get mqtts)" --qos 1
    echo "round $round done" >&2
done
"$PY" - "$out" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
cases = {}
for r in rows:
    case, transport = r["label"].rsplit("/", 1)
    per = cases.setdefault(case, {}).setdefault(transport, {"rate": [], "us": []})
    per["rate"].append(r["msgs_per_s"])
    per["us"].append(1e6 * r["broker_cpu_s"] / r["n"])
print(f"{'case':<14} {'plain msgs/s':>13} {'tls msgs/s':>11} {'ratio':>6}   {'plain µs/msg':>12} {'tls µs/msg':>10} {'ratio':>6}")
for case, t in cases.items():
    pr, tr = statistics.median(t["plain"]["rate"]), statistics.median(t["tls"]["rate"])
    pu, tu = statistics.median(t["plain"]["us"]), statistics.median(t["tls"]["us"])
    print(f"{case:<14} {pr:>13.0f} {tr:>11.0f} {tr / pr:>6.2f}   {pu:>12.1f} {tu:>10.1f} {tu / pu:>6.2f}")
print(f"({len(rows)} runs, medians of {len(t['tls']['rate'])} rounds; µs/msg: the broker's CPU time per message)")
PY
