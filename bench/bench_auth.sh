#!/usr/bin/env bash
# What authentication and authorisation cost per message: the ActiveMQ engine without users
# (nothing checked) against the same engine with users, [[authorization]] entries and a
# topic rule (every check on), STOMP 1.2 SEND to a queue and MQTT QoS 0 publish, 100 000 x
# 256 B, medians of interleaved rounds (shared/bench/compare.sh).
#
# usage: bench/bench_auth.sh [ROUNDS]     env: SHARED (default ../shared)
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED="${SHARED:-../shared}"
ROUNDS="${1:-3}"
WORK="$(mktemp -d)"
cat > "$WORK/auth.toml" <<'CONF'
engine = "activemq"
[[users]]
name = "guest"
password = "guest"
groups = ["admins"]
[[authorization]]
queue = ">"
read = "admins"
write = "admins"
admin = "admins"
[[authorization]]
topic = ">"
read = "admins"
write = "admins"
admin = "admins"
[mqtt]
deny_subscribe = ["secret/#"]
CONF
start() {  # start NAME [ARGS...]: a node; its pid and ports in $WORK/NAME.*
    local name=$1; shift
    mqemu serve --engine activemq --stomp-port 0 --mqtt-port 0 --amqp-port off --log-level error \
        --ready-file "$WORK/$name.json" "$@" >"$WORK/$name.log" 2>&1 &
    echo $! > "$WORK/$name.pid"
    for _ in $(seq 100); do [ -s "$WORK/$name.json" ] && return 0; sleep 0.1; done
    echo "$name did not start"; cat "$WORK/$name.log"; exit 1
}
port() { python3 -c "import json; print(json.load(open('$WORK/$1.json'))['$2'])"; }
trap 'kill $(cat "$WORK"/*.pid) 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT
start open
start auth --config "$WORK/auth.toml"
for proto in stomp mqtt; do
    extra=""
    [ $proto = mqtt ] && extra=",--mqtt-user=guest,--mqtt-password=guest"
    "$SHARED/bench/compare.sh" --title "ActiveMQ engine, $proto: no users vs users + authorization" \
        --rounds "$ROUNDS" --warmup-rounds 1 \
        --target "open=$proto:127.0.0.1:$(port open $proto),--broker-pid=$(cat "$WORK/open.pid")$extra" \
        --target "auth=$proto:127.0.0.1:$(port auth $proto),--broker-pid=$(cat "$WORK/auth.pid")$extra" \
        -- $([ $proto = stomp ] && echo --stomp-ack auto)
done
