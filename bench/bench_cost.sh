#!/usr/bin/env bash
# What one message costs the broker, for two mqemu builds side by side.
#
# Wall-clock throughput on a small shared machine moves by 10-30 % between rounds. The
# instructions a broker executes for a fixed workload do not depend on what else the machine
# does. This runs one broker from each build, the same fixed-size loadgen workloads against
# each in turn (A B A B ...), and prints the median cost per message and the ratio:
#   COUNT=callgrind (default): instructions, counted by valgrind's callgrind while the
#     workload runs (the broker runs ~50x slower under it, so it is saturated, as in the
#     throughput benchmarks, and reads and writes in large batches);
#   COUNT=cpu: the broker's user+system CPU microseconds from /proc (no valgrind; moves
#     with cache and frequency effects, less than wall-clock time does).
#
#   bench/bench_cost.sh BEFORE_PYTHON AFTER_PYTHON    (Python interpreters that import each build,
#                                                     e.g. two virtualenvs' bin/python)
#   ROUNDS=3 N=10000 CASES="amqp-manual mqtt-qos1" bench/bench_cost.sh ...
#   BEFORE_ARGS= AFTER_ARGS="--engine-version 3.10"   (options for each build's `mqemu serve`)
set -euo pipefail
usage="usage: bench_cost.sh BEFORE_PYTHON AFTER_PYTHON"
# the interpreter itself, not a launcher that execs it (valgrind would count the launcher)
real_python() { "$1" -c "import sys; print(sys.executable)"; }
BEFORE=$(real_python "${1:?$usage}")
AFTER=$(real_python "${2:?$usage}")
ROUNDS=${ROUNDS:-3}
COUNT=${COUNT:-callgrind}
N=${N:-10000}
LOADGEN=${LOADGEN:-$(cd "$(dirname "$0")/../.." && pwd)/shared/bench/loadgen.py}
CASES=${CASES:-"amqp-noack amqp-manual amqp-confirm stomp-auto stomp-ci mqtt-qos0 mqtt-qos1"}
BEFORE_ARGS=${BEFORE_ARGS:-}
AFTER_ARGS=${AFTER_ARGS:-}
W=$(mktemp -d)
trap 'for p in "$W"/*.pid; do kill "$(cat "$p")" 2>/dev/null || true; done; sleep 0.5; rm -rf "$W"' EXIT

case_args() {
  case $1 in
    amqp-noack) echo "--proto amqp --ack auto" ;;
    amqp-manual) echo "--proto amqp --ack manual --prefetch 1000" ;;
    amqp-confirm) echo "--proto amqp --ack manual --confirm" ;;
    amqp-persistent) echo "--proto amqp --ack manual --confirm --persistent" ;;
    stomp-auto) echo "--proto stomp" ;;
    stomp-ci) echo "--proto stomp --stomp-ack client-individual" ;;
    mqtt-qos0) echo "--proto mqtt --qos 0" ;;
    mqtt-qos1) echo "--proto mqtt --qos 1" ;;
    *) echo "unknown case $1" >&2; exit 2 ;;
  esac
}

start() {  # start NAME PYTHON ARGS
  local wrap=()
  [ "$COUNT" = callgrind ] && wrap=(valgrind --tool=callgrind --instr-atstart=no
    --callgrind-out-file="$W/$1.cg.%p" --log-file="$W/$1.vg.log")
  # shellcheck disable=SC2086
  "${wrap[@]}" "$2" -c "from mqemu.ha.cli import main; main()" serve $3 --amqp-port 0 --stomp-port 0 --mqtt-port 0 --log-level warning \
    --ready-file "$W/$1.json" > "$W/$1.log" 2>&1 &
  echo $! > "$W/$1.pid"
  for _ in $(seq 6000); do [ -s "$W/$1.json" ] && return; sleep 0.1; done
  echo "$1 did not start: $(cat "$W/$1.log")" >&2; exit 1
}
port() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$W/$1.json" "$2"; }
cpu_us() { awk '{print ($14 + $15) * 1000000 / '"$(getconf CLK_TCK)"'}' "/proc/$1/stat"; }

_one() {  # one NAME CASE -> "cost_per_msg msgs_per_s"
  local name=$1 args proto pid cost
  args=$(case_args "$2"); proto=$(set -- $args; echo "$2"); pid=$(cat "$W/$name.pid")
  if [ "$COUNT" = callgrind ]; then
    callgrind_control -z "$pid" > /dev/null; callgrind_control -i on "$pid" > /dev/null
  else
    local before; before=$(cpu_us "$pid")
  fi
  # shellcheck disable=SC2086
  python3 "$LOADGEN" $args --port "$(port "$name" "$proto")" --n "$N" --timeout 600 > "$W/run.json"
  if [ "$COUNT" = callgrind ]; then
    rm -f "$W/$name".cg.*.[0-9]*; callgrind_control -d "$pid" > /dev/null
    callgrind_control -i off "$pid" > /dev/null
    cost=$(awk '/^(summary|totals):/ {print $2; exit}' "$W/$name".cg.*.[0-9]*)
  else
    cost=$(python3 -c "import sys; print(float(sys.argv[1]) - float(sys.argv[2]))" "$(cpu_us "$pid")" "$before")
  fi
  python3 - "$cost" "$W/run.json" "$N" <<'PY'
import json, sys
run = json.loads(open(sys.argv[2]).read().strip().splitlines()[-1])
print(float(sys.argv[1]) / int(sys.argv[3]), run.get("msgs_per_s", 0))
PY
}
one() { _one "$@" | tee -a "$W/runs.log"; echo "$1 $2: $(tail -1 "$W/runs.log")" >&2; }

start before "$BEFORE" "$BEFORE_ARGS"; start after "$AFTER" "$AFTER_ARGS"
unit=$([ "$COUNT" = callgrind ] && echo "ins/msg" || echo "cpu us/msg")
printf '%-16s %16s %16s %7s\n' case "before $unit" "after $unit" ratio
for c in $CASES; do
  one before "$c" > /dev/null; one after "$c" > /dev/null   # warm-up
  : > "$W/before.$c"; : > "$W/after.$c"
  for _ in $(seq "$ROUNDS"); do
    one before "$c" >> "$W/before.$c"; one after "$c" >> "$W/after.$c"
  done
  python3 - "$c" "$W/before.$c" "$W/after.$c" <<'PY'
import statistics, sys
def med(path):
    return statistics.median(float(l.split()[0]) for l in open(path) if l.strip())
b, a = med(sys.argv[2]), med(sys.argv[3])
print(f"{sys.argv[1]:<16} {b:16,.1f} {a:16,.1f} {a / b:7.3f}")
PY
done
