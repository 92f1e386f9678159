"""CONNECT and the session it opens: authentication, permissions, taking over, resuming or
starting a session (MQTT 5.0 4.1, 3.1.1 4.1), the CONNACK, and leaving the session again
when the connection closes (a clean session ends, a persistent one waits for its expiry).

Permissions (RabbitMQ flavour) follow RabbitMQ's MQTT plugin: a publish needs ``write`` on
the ``amq.topic`` exchange; a subscription needs ``read`` on that exchange and
``configure``, ``write`` and ``read`` on the queue that serves it (the session queue, or a
shared subscription's group queue). RabbitMQ's topic permissions (per routing key) are not
modelled; ``[mqtt] deny_publish`` / ``deny_subscribe`` are the core's topic rules on
amq.topic (``AuthRegistry.check_topic``), which also hold the ActiveMQ flavour's
authorization entries for topics.
"""

from __future__ import annotations

import enum
import logging
import os
from typing import Any

from mqemu.broker.errors import AccessRefused, AuthenticationFailed, BrokerError

from .delivery import MAX_PACKET_SIZE
from .inbound import ProtocolViolation
from .mapping import PUBLISHER
from .packets import Connack, Connect, encode
from .persist import save_session
from .sessions import (
    NEVER_EXPIRES,
    SessionState,
    end_session,
    expiry_due,
    publish_will,
    registry,
    will_due,
)

log = logging.getLogger("mqemu.protocols.mqtt")


# Reason codes used here (5.0 Table 2-6).
PROTOCOL_ERROR = 0x82
CLIENT_ID_NOT_VALID = 0x85
BAD_USER_NAME_OR_PASSWORD = 0x86
NOT_AUTHORIZED = 0x87
SERVER_UNAVAILABLE = 0x88
BAD_AUTHENTICATION_METHOD = 0x8C


class State(enum.Enum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    CLOSED = "closed"


def settings(broker: Any) -> dict[str, Any]:
    """The config file's ``[mqtt]`` section."""
    section = broker.config.extra.get("mqtt", {})
    return section if isinstance(section, dict) else {}


class Access:
    """What the connection's user may do, for the parts that check it (CONNECT, SUBSCRIBE):
    RabbitMQ's configure/write/read permissions and the core's topic rules."""

    __slots__ = ("broker", "conn_id", "user", "vhost_name")

    def __init__(self, broker: Any, user: Any, vhost_name: str, conn_id: int) -> None:
        self.broker = broker
        self.user = user  # None on the ActiveMQ flavour without users: nothing is checked
        self.vhost_name = vhost_name
        self.conn_id = conn_id

    def allowed(self, what: str, kind: str, name: str) -> bool:
        """RabbitMQ's configure/write/read check for the connection's user (see the module
        docstring); always True on the ActiveMQ flavour."""
        try:
            self.broker.auth.check(self.user, self.vhost_name, what, kind, name)
        except AccessRefused as e:
            log.info("%s", e.text, extra={"conn": self.conn_id})
            return False
        return True

    def may_read(self, binding: str) -> bool:
        """The core's topic rules for a subscription's binding key (``AuthRegistry.check_topic``):
        a filter inside a denied area (``secret/+`` against ``secret/#``) is refused; a wider
        one (``#``, ``+/pw``) is granted and never sees a denied topic, live (amq.topic
        routes it to no one) or retained (``Subscriber._queue_retained``); on ActiveMQ, read
        on ``topic://<filter>``."""
        try:
            self.broker.auth.check_topic(self.user, self.vhost_name, "read", binding)
        except AccessRefused as e:
            log.info("%s", e.text, extra={"conn": self.conn_id})
            return False
        return True

    def may_subscribe(self, queue: str) -> bool:
        allowed = self.allowed
        return (allowed("read", "exchange", "amq.topic") and allowed("configure", "queue", queue)
                and allowed("write", "queue", queue) and allowed("read", "queue", queue))


class Connector:
    """CONNECT and leaving the session (``MqttConnection.connector``). It owns the login (the
    user, ``Access``), the will and the session expiry the client asked for; it tells the
    connection the outcome through ``MqttConnection.refuse`` and ``accepted``, and opens the
    other parts (``Deliveries.open``, ``Inbound.open``, ``Subscriber.open``)."""

    def __init__(self, conn: Any, server_keep_alive: int) -> None:
        self.conn = conn
        self.broker = conn.broker
        self.server_keep_alive = server_keep_alive
        self.user: Any = None
        self.access: Access | None = None
        self.publish_refused = False
        self.will: Any = None
        self.connect_expiry = 0

    # -- CONNECT ------------------------------------------------------------------------
    def on_connect(self, p: Any) -> None:
        conn = self.conn
        if p.__class__ is not Connect:
            raise ProtocolViolation(PROTOCOL_ERROR, "first packet is not CONNECT")  # [MQTT-3.1.0-1]
        level = p.protocol_level
        conn.connecting(level)  # the CONNACK, refused or not, is written at this level
        props = p.properties
        if "authentication_method" in props:
            # mqemu offers no enhanced authentication (5.0 4.12).
            return conn.refuse(BAD_AUTHENTICATION_METHOD, "enhanced authentication is not supported")
        client_id = p.client_id
        assigned = None
        if not client_id:
            if level < 5 and (level == 3 or not p.clean_start):
                # [MQTT-3.1.3-8]: an empty id needs clean session 1 (3.1 needs 1-23 chars).
                return conn.refuse(CLIENT_ID_NOT_VALID, "empty client identifier")
            client_id = assigned = "mqemu-" + os.urandom(9).hex()  # [MQTT-3.1.3-6]
        vhost = self._login(p)
        if vhost is None:
            return
        keep_alive = p.keep_alive
        server_ka = None
        if level >= 5 and self.server_keep_alive and p.keep_alive > self.server_keep_alive:
            keep_alive = server_ka = self.server_keep_alive  # [MQTT-3.2.2-21]
        prefetch = None
        max_out, alias_out_max = MAX_PACKET_SIZE, 0
        if level >= 5:
            prefetch = props.get("receive_maximum", 65535)
            max_out = props.get("maximum_packet_size", MAX_PACKET_SIZE)
            alias_out_max = props.get("topic_alias_maximum", 0)
            expiry = props.get("session_expiry_interval", 0)
        else:
            expiry = 0 if p.clean_start else NEVER_EXPIRES
        self.connect_expiry = expiry
        if not self._may_take(vhost, client_id):
            # RabbitMQ 3.10 answers 3, server unavailable (5.0: 0x88), as its queue declare
            # fails; it has already closed a connected owner by then, mqemu keeps it (a
            # DELIBERATE difference: a user who may not have the session cannot end it).
            return conn.refuse(SERVER_UNAVAILABLE, f"access to the session of client id '{client_id}' "
                               f"refused for user '{self.user.name}'")
        present, state = self.take_session(vhost, client_id, p.clean_start, expiry)
        conn.accepted(client_id, vhost, state, keep_alive)
        conn.deliveries.open(level, client_id, vhost, state, prefetch, max_out, alias_out_max)
        inbound = conn.inbound
        inbound.open(level, state, vhost, self.user, PUBLISHER.add(None, client_id), self.publish_refused)
        conn.subscriber.open(level, state, vhost, self.access)
        will = p.will  # a will is a publish too
        if will is not None and (self.publish_refused or (inbound.topic_guard and not inbound.may_publish(will.topic))):
            will = None
        self.will = will
        conn.send(encode(Connack(present, 0, self._connack_props(props, assigned, server_ka)), level))
        if self.broker.memory_alarm:
            conn.on_alarm(True)
        self._attach(state)

    def _login(self, p: Connect) -> Any:
        """Authenticate as the engine does (``AuthRegistry.login``) and open vhost "/".
        None after refusing the CONNECT. RabbitMQ: an anonymous client logs in as the
        plugin's default user (``[mqtt] allow_anonymous``, ``default_user``,
        ``default_pass``); bad credentials get 0x86 (3.x: 4). ActiveMQ: its authentication
        plugin's SecurityException, which its MQTT converter answers with "not authorized"
        (3.x: 5, 5.0: 0x87; MQTTProtocolConverter.onMQTTConnect in 5.17)."""
        broker, conn = self.broker, self.conn
        cfg = settings(broker)
        default = ((cfg.get("default_user", "guest"), cfg.get("default_pass", "guest"))
                   if cfg.get("allow_anonymous", True) else None)
        password = None if p.password is None else p.password.decode("utf-8", "replace")
        try:
            self.user = user = broker.auth.login(p.username, password, conn.peer, default, conn.tls_subject)
            self.access = Access(broker, user, "/", conn.conn_id)
            vhost = broker.open_vhost(user, "/")
            self.access.vhost_name = vhost.name
            self.publish_refused = not self.access.allowed("write", "exchange", "amq.topic")
            return vhost
        except AuthenticationFailed as e:
            conn.refuse(NOT_AUTHORIZED if e.not_authorized else BAD_USER_NAME_OR_PASSWORD, e.text)
        except BrokerError as e:
            conn.refuse(NOT_AUTHORIZED, e.text)
        return None

    def _may_take(self, vhost: Any, client_id: str) -> bool:
        """May this user take over (or clean) the session the client id already has? As on
        RabbitMQ, whose MQTT plugin redeclares (or, clean, deletes) the session's queue as
        the connecting user: any user may, given configure, write and read on that queue
        (``mqtt-subscription-<client id>qos1``), whoever opened the session. On the ActiveMQ
        flavour there are no queue permissions: the new user takes it (ActiveMQ's link
        stealing) and each resumed subscription is authorised again (``take_session``)."""
        old = registry(self.broker).get((vhost.name, client_id))
        if old is None or old.ended or self.user is None:
            return True
        return self.access.may_subscribe(old.queue_name)  # type: ignore[union-attr]

    def take_session(self, vhost: Any, client_id: str, clean_start: bool,
                     expiry: int) -> tuple[bool, SessionState]:
        """Take over, resume or start the client's session; (True when one is resumed, it)."""
        reg = registry(self.broker)
        key = (vhost.name, client_id)
        old = reg.get(key)
        if old is not None and old.connection is not None:
            old.connection.taken_over(clean_start)
        if old is not None and old.pending_will is not None:
            will, cid = old.pending_will
            old.pending_will = None
            if clean_start:  # the old session ends now, so its delayed will is due [MQTT-3.1.3-9]
                publish_will(self.broker, vhost, will, cid)
        if old is not None and not clean_start and not old.ended:
            present, state = True, old
            if self.broker.auth.guards_topics:
                self._authorize_resumed(state)
        else:
            if old is not None:
                old.end()
            present, state = False, SessionState(client_id, vhost, expiry)
            state.registry = reg
            reg[key] = state
        state.expiry = expiry
        state.generation += 1
        state.connection = self.conn
        save_session(state)
        return present, state

    def _authorize_resumed(self, state: SessionState) -> None:
        """Resumed subscriptions are authorised again for the connecting user, as ActiveMQ
        restores an MQTT client's durable subscriptions (each a new consumer the
        authorization broker checks): one refused is dropped, with what it had queued."""
        may_read = self.access.may_read  # type: ignore[union-attr]
        for text, sub in list(state.subs.items()):
            if not may_read(sub.binding):
                del state.subs[text]
                state.unbind(sub.binding)
        for text, sub in list(state.shared.items()):
            if not may_read(sub.binding):
                del state.shared[text]
                state.leave_group(sub)

    def _connack_props(self, req: dict[str, Any], assigned: str | None, server_ka: int | None) -> dict[str, Any]:
        conn = self.conn
        if conn.level < 5:
            return {}
        props: dict[str, Any] = {}
        if assigned is not None:
            props["assigned_client_identifier"] = assigned
        if server_ka is not None:
            props["server_keep_alive"] = server_ka
        if conn.receive_maximum < 65535:
            props["receive_maximum"] = conn.receive_maximum
        if conn.max_packet_size < MAX_PACKET_SIZE:
            props["maximum_packet_size"] = conn.max_packet_size
        props["topic_alias_maximum"] = conn.alias_in_max
        props["retain_available"] = 1
        props["wildcard_subscription_available"] = 1
        props["subscription_identifier_available"] = 1
        props["shared_subscription_available"] = 1
        if req.get("request_response_information"):
            props["response_information"] = "response/" + conn.client_id
        return props

    def _attach(self, state: SessionState) -> None:
        """Resume deliveries: unacknowledged ones first, then the queues' consumers."""
        deliveries = self.conn.deliveries
        deliveries.resend_inflight()
        subscriber = self.conn.subscriber
        for sub in state.shared.values():
            subscriber.serve_shared(sub)
        if state.queue_name in state.vhost.queues:
            deliveries.refresh_session_consumer()

    # -- leaving ------------------------------------------------------------------------
    def take_will(self) -> Any:
        """The will, now the connection's to publish or drop (taken over)."""
        will, self.will = self.will, None
        return will

    def disconnect_expiry(self, expiry: int) -> None:
        """A 5.0 DISCONNECT's Session Expiry Interval."""
        if self.connect_expiry == 0 and expiry:
            raise ProtocolViolation(PROTOCOL_ERROR, "session expiry set after CONNECT had 0")  # [MQTT-3.14.2-2]
        self.conn.session.expiry = expiry

    def detach(self, send_will: bool) -> None:
        """Leave the session: drop consumers, then end it or let it wait for its expiry."""
        conn = self.conn
        state = conn.session
        conn.deliveries.detach()
        if state.connection is not conn:
            return  # taken over: the session is the new connection's now
        state.connection = None
        will = self.will if send_will else None
        broker, vhost = self.broker, conn.vhost
        if will is not None:
            delay = min(will.properties.get("will_delay_interval", 0), state.expiry)
            if delay == 0:
                publish_will(broker, vhost, will, conn.client_id)
            else:
                state.pending_will = (will, conn.client_id)
                gen = state.generation
                vhost.timers.call_at(vhost.clock() + delay, lambda now: will_due(broker, state, gen))
        if state.expiry == 0:
            end_session(broker, state)
            return
        save_session(state, disconnected=True)
        if state.expiry != NEVER_EXPIRES:
            gen = state.generation
            vhost.timers.call_at(vhost.clock() + state.expiry, lambda now: expiry_due(broker, state, gen))
