#!/usr/bin/env bash
# Run the shared conformance suites against fresh `mqemu serve` nodes and fail below the
# minimum counts. Usage: scripts/conformance.sh PATH/TO/shared/conformance [suite ...]
# Suites: pika (AMQP), stomp-rabbitmq, stomp-activemq, mqtt, mqtt-deny.
#
# The suites mostly wait (the paho ones about 200 s each, on the suite's own timeouts), so
# they run side by side, each against its own node: the stomp.py suites one after the other
# in one lane (two of their tests dial localhost:61613 whatever port they are given), every
# other suite in a lane of its own. Each lane's report is printed when it is done.
set -uo pipefail
CONF="$(cd "$1" && pwd)"; shift
SUITES="${*:-pika stomp-rabbitmq stomp-activemq mqtt mqtt-deny}"
ROOT="$(mktemp -d)"
trap 'for p in "$ROOT"/*/pid; do [ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null; done; rm -rf "$ROOT"' EXIT

start_broker() {  # start_broker ARGS...: a node in the background; ports in $WORK/ready.json
    rm -f "$WORK/ready.json"
    mqemu serve --ready-file "$WORK/ready.json" --log-level warning "$@" >"$WORK/broker.log" 2>&1 &
    echo $! > "$WORK/pid"
    for _ in $(seq 200); do [ -s "$WORK/ready.json" ] && return 0; sleep 0.1; done
    echo "broker did not start:"; cat "$WORK/broker.log"; return 1
}
stop_broker() {
    kill "$(cat "$WORK/pid")" 2>/dev/null; wait "$(cat "$WORK/pid")" 2>/dev/null; rm -f "$WORK/pid"
}
port_of() { python3 -c "import json,sys; print(json.load(open('$WORK/ready.json'))['$1'])"; }
check() {  # check NAME MINIMUM OUTPUT_FILE: prints the count; returns 1 below the minimum
    local line passed
    line="$(grep -E '^[a-z0-9-]+: [0-9]+ passed' "$3" | tail -n 1)"
    passed="$(echo "$line" | sed -E 's/^[^:]+: ([0-9]+) passed.*/\1/')"
    echo "conformance $1: ${line:-no summary} (minimum $2)"
    if [ -z "$passed" ] || [ "$passed" -lt "$2" ]; then tail -n 30 "$3"; return 1; fi
}

run_suite() {  # run_suite SUITE: one suite against a fresh node in $WORK
    local suite=$1 out="$WORK/$1.out" engine min version
    case $suite in
    pika)
        # RabbitMQ 4.x: the suite expects a 406 channel close for an unknown exchange type
        # (3.x closes the connection with 503 and fails that one test).
        start_broker --engine-version 4.2 --amqp-port 0 --stomp-port off --mqtt-port off || return 1
        bash "$CONF/pika-acceptance.sh" 127.0.0.1 "$(port_of amqp)" >"$out" 2>&1
        stop_broker; check pika-acceptance 158 "$out" ;;
    stomp-rabbitmq|stomp-activemq)
        engine="${suite#stomp-}"; min=42; version=4.2; [ "$engine" = activemq ] && min=51 && version=5.18
        start_broker --engine "$engine" --engine-version "$version" --stomp-port 61613 --amqp-port 0 --mqtt-port off || return 1
        bash "$CONF/stompy.sh" 127.0.0.1 61613 >"$out" 2>&1
        stop_broker; check "stompy-$engine" "$min" "$out" ;;
    mqtt)
        start_broker --mqtt-port 0 --amqp-port 0 --stomp-port off || return 1
        bash "$CONF/paho-interop.sh" 127.0.0.1 "$(port_of mqtt)" >"$out" 2>&1
        # 35 is every test but the two test_subscribe_failure (3.1.1 and 5.0), which pass
        # only on a broker configured to refuse test/nosubscribe: that is the next suite.
        stop_broker; check paho-interop 35 "$out" ;;
    mqtt-deny)
        # The suite's 5.0 client accepts only 0x80 in the refusing SUBACK; mqemu answers 0x87
        # (not authorized) unless told otherwise.
        printf '[mqtt]\ndeny_subscribe = ["test/nosubscribe"]\ndeny_subscribe_code = 0x80\n' > "$WORK/deny.toml"
        start_broker --mqtt-port 0 --amqp-port 0 --stomp-port off --config "$WORK/deny.toml" || return 1
        bash "$CONF/paho-interop.sh" 127.0.0.1 "$(port_of mqtt)" >"$out" 2>&1
        stop_broker; check paho-interop-deny 37 "$out" ;;
    *) echo "conformance: unknown suite $suite"; return 1 ;;
    esac
}

run_lane() {  # run_lane NAME SUITE...: the suites one after another; exit status 1 if any failed
    local name=$1 failed=0 suite; shift
    WORK="$ROOT/$name"; mkdir -p "$WORK"
    for suite in "$@"; do
        local started=$SECONDS
        run_suite "$suite" || failed=1
        echo "  ($suite: $((SECONDS - started)) s)"
    done
    return $failed
}

# Lanes: the stomp.py suites together, every other suite on its own.
lanes=(); stomp=()
for suite in $SUITES; do
    case $suite in stomp-*) stomp+=("$suite") ;; *) lanes+=("$suite") ;; esac
done
[ ${#stomp[@]} -gt 0 ] && lanes+=("${stomp[*]}")
pids=()
for lane in "${lanes[@]}"; do
    name="${lane%% *}"
    # shellcheck disable=SC2086  # a lane is a space-separated list of suites
    run_lane "$name" $lane >"$ROOT/$name.report" 2>&1 &
    pids+=($!)
done
failed=0
for i in "${!lanes[@]}"; do
    wait "${pids[$i]}" || failed=1
    cat "$ROOT/${lanes[$i]%% *}.report"
done
exit $failed
