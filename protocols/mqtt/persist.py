"""Durable MQTT state through the store's records API (``Store.put_record``).

What is kept, per namespace (keys start with the vhost name and a NUL):

- ``mqtt.sessions``, key ``vhost\\0client id``: a persistent session (3.1.1 clean session 0,
  5.0 session expiry > 0): its expiry interval, its subscriptions with their options and
  identifiers, and when it was last disconnected (wall clock, for the expiry after a
  restart). JSON. A clean session has no record.
- ``mqtt.qos2in``, key ``vhost\\0client id\\0packet id``: an incoming QoS 2 PUBLISH routed and
  not yet released by PUBREL, so a resent PUBLISH after a restart is not routed again
  [MQTT-4.3.3-2].
- ``mqtt.qos2out``, key as above: an outgoing QoS 2 delivery the client has received
  (PUBREC) but not completed; the message is settled in its queue at PUBREC and the session
  resends PUBREL on reconnect [MQTT-4.4.0-1].
- ``mqtt.retained``, key ``vhost\\0topic``: the retained message (pickled with its AMQP
  properties, publish QoS and wall-clock deadline).

The session's queue is a durable queue and QoS 1/2 messages have ``delivery_mode`` 2, so the
store keeps the queued messages itself; recovery brings the queue and its bindings back, and
``restore`` here rebuilds the session registry and the retained messages from the records
before the listener accepts anyone. Records are written only when the store keeps data
(``Store.keeps_messages``); with the memory store nothing outlives the process anyway.
"""

from __future__ import annotations

import json
import logging
import pickle
import time
from typing import TYPE_CHECKING

from mqemu.broker.message import Message

from .node_state import node_state

if TYPE_CHECKING:
    from mqemu.broker.core import Broker
    from mqemu.broker.store.base import Store

    from .retained import Retained
    from .sessions import SessionState

log = logging.getLogger("mqemu.protocols.mqtt")

SESSIONS = "mqtt.sessions"
QOS2_IN = "mqtt.qos2in"
QOS2_OUT = "mqtt.qos2out"
RETAINED = "mqtt.retained"


def session_key(state: SessionState) -> str:
    return state.vhost.name + "\x00" + state.client_id


# -- sessions ---------------------------------------------------------------------------
def save_session(state: SessionState, disconnected: bool = False) -> None:
    """Write a persistent session's record (a clean session keeps none)."""
    store = state.vhost.store
    if not store.keeps_messages or not state.persistent or state.ended:
        return
    subs = [[s.text, s.qos, s.no_local, s.rap, s.sub_id]
            for s in (*state.subs.values(), *state.shared.values())]
    value = {"client_id": state.client_id, "expiry": state.expiry, "subs": subs,
             "disconnected_at": time.time() if disconnected else None}
    store.put_record(SESSIONS, session_key(state), json.dumps(value).encode())
    state.recorded = True


def forget_session(state: SessionState) -> None:
    """Delete every record of a session that ended."""
    store = state.vhost.store
    if not store.keeps_messages or not state.recorded:
        return
    key = session_key(state)
    store.delete_record(SESSIONS, key)
    for pid in state.awaiting_rel:
        store.delete_record(QOS2_IN, f"{key}\x00{pid}")
    for pid, inf in state.inflight.items():
        if inf.released:
            store.delete_record(QOS2_OUT, f"{key}\x00{pid}")


def qos2_mark(state: SessionState, namespace: str, pid: int, on: bool) -> None:
    """Record (or forget) one QoS 2 packet id of a persistent session."""
    store = state.vhost.store
    if not store.keeps_messages or not state.persistent:
        return
    key = f"{session_key(state)}\x00{pid}"
    if on:
        store.put_record(namespace, key, b"")
    else:
        store.delete_record(namespace, key)


# -- retained messages ------------------------------------------------------------------
def save_retained(store: Store, vhost: str, topic: str, r: Retained | None, now: float) -> None:
    """Write (or, for None, delete) a topic's retained message; ``now`` is the broker clock."""
    if not store.keeps_messages:
        return
    key = vhost + "\x00" + topic
    if r is None:
        store.delete_record(RETAINED, key)
        return
    m = r.message
    wall = None if r.expires_at is None else time.time() + (r.expires_at - now)
    value = (m.routing_key, m.body, m.properties, r.qos, wall)
    store.put_record(RETAINED, key, pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))


# -- restore at start -------------------------------------------------------------------
def restore(broker: Broker) -> None:
    """Rebuild retained messages and persistent sessions from ``broker.records`` (once per
    broker, before the listener starts); drop MQTT queues no session owns any more."""
    state = node_state(broker)
    if state.restored:
        return
    state.restored = True
    records = broker.records or {}
    _restore_retained(broker, records.get(RETAINED, {}))
    _restore_sessions(broker, records)
    _drop_orphan_queues(broker)


def _split(key: str) -> tuple[str, str]:
    vhost, _, rest = key.partition("\x00")
    return vhost, rest


def _restore_retained(broker: Broker, rows: dict[str, bytes]) -> None:
    from .retained import retained_store

    now_wall = time.time()
    for key, value in rows.items():
        vhost, topic = _split(key)
        vh = broker.vhosts.get(vhost)
        try:
            routing_key, body, props, qos, wall = pickle.loads(value)
        except (pickle.PickleError, EOFError, ValueError, TypeError, AttributeError, ImportError):
            log.warning("unreadable retained message record %r dropped", key)
            broker.store.delete_record(RETAINED, key)
            continue
        if vh is None:
            continue
        expires = None if wall is None else vh.clock() + (wall - now_wall)
        if expires is not None and expires <= vh.clock():
            broker.store.delete_record(RETAINED, key)
            continue
        retained_store(broker, vhost).load(topic, Message("amq.topic", routing_key, body, props), qos, expires)


def _restore_sessions(broker: Broker, records: dict[str, dict[str, bytes]]) -> None:
    from .sessions import (
        NEVER_EXPIRES,
        Inflight,
        SessionState,
        end_session,
        expiry_due,
        registry,
    )

    reg = registry(broker)
    qos2_in = _by_session(records.get(QOS2_IN, {}))
    qos2_out = _by_session(records.get(QOS2_OUT, {}))
    now_wall = time.time()
    for key, value in records.get(SESSIONS, {}).items():
        vhost, client_id = _split(key)
        vh = broker.vhosts.get(vhost)
        if vh is None:
            continue
        try:
            d = json.loads(value)
        except ValueError:
            log.warning("unreadable MQTT session record %r dropped", key)
            broker.store.delete_record(SESSIONS, key)
            continue
        state = SessionState(client_id, vh, int(d["expiry"]))
        state.registry = reg
        state.recorded = True
        reg[(vhost, client_id)] = state
        for text, qos, no_local, rap, sub_id in d["subs"]:
            state.restore_subscription(text, qos, no_local, rap, sub_id)
        state.awaiting_rel.update(qos2_in.get(key, ()))
        for pid in sorted(qos2_out.get(key, ())):
            inf = Inflight(None, None, 2, b"", False)
            inf.released = True
            state.inflight[pid] = inf
        if state.expiry == NEVER_EXPIRES:
            continue
        since = d.get("disconnected_at")
        left = state.expiry - (now_wall - since if since is not None else 0)
        if left <= 0:
            end_session(broker, state)
        else:
            gen = state.generation
            vh.timers.call_at(vh.clock() + left, lambda now, s=state, g=gen: expiry_due(broker, s, g))
    if reg:
        log.info("MQTT: restored %d persistent sessions", len(reg))


def _by_session(rows: dict[str, bytes]) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {}
    for key in rows:
        skey, _, pid = key.rpartition("\x00")
        try:
            out.setdefault(skey, set()).add(int(pid))
        except ValueError:
            continue
    return out


def _drop_orphan_queues(broker: Broker) -> None:
    """Session and shared-subscription queues left by sessions that no longer exist (clean
    sessions' durable group queues, a record deleted before its queue) are deleted."""
    from .sessions import registry

    owned: set[tuple[str, str]] = set()
    for (vhost, _), state in registry(broker).items():
        owned.add((vhost, state.queue_name))
        owned.update((vhost, s.queue) for s in state.shared.values())
    for vh in broker.vhosts.values():
        for name in [n for n in vh.queues if n.startswith(("mqtt-subscription-", "mqtt-shared-"))]:
            if (vh.name, name) not in owned:
                vh.delete_queue(name, internal=True)
