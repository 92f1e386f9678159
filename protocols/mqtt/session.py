"""The MQTT 3.1 / 3.1.1 / 5.0 connection state machine (sans-IO).

Bytes come in through ``data_received(data, now)``; packets to send are appended to
``outbound``. The session calls the core directly and never awaits. Deliveries are in
``delivery.py``, SUBSCRIBE/UNSUBSCRIBE in ``subscriptions.py``, the state that outlives a
connection in ``sessions.py``.

States and what moves them:

    CONNECTING --CONNECT accepted---------------> CONNECTED (CONNACK 0, resend inflight)
    CONNECTING --CONNECT refused----------------> CLOSED    (CONNACK with the code)
    CONNECTING --malformed CONNECT--------------> CLOSED    (5.0: CONNACK 0x81/0x82/0x95;
                                                             3.x: close [MQTT-4.8.0-1])
    CONNECTING --another packet, or 10 s--------> CLOSED    [MQTT-3.1.0-1]
    CONNECTED  --DISCONNECT---------------------> CLOSED    (will dropped [MQTT-3.1.2-10],
                                                             except 5.0 reason 0x04)
    CONNECTED  --bad packet, second CONNECT-----> CLOSED    (5.0: DISCONNECT with the reason;
                                                             3.x: close), will sent
    CONNECTED  --1.5 x keep alive of silence----> CLOSED    [MQTT-3.1.2-24], will sent
    CONNECTED  --same client id connects--------> CLOSED    (5.0: DISCONNECT 0x8E) [MQTT-3.1.4-3]
    any        --socket closed------------------> CLOSED    (will sent when CONNECTED)

On CLOSED the connection leaves its session (a clean one ends, a persistent one waits for
its expiry) and the transport flushes ``outbound`` and closes the socket.
"""

from __future__ import annotations

import enum
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mqemu.broker.errors import AuthenticationFailed, BrokerError
from mqemu.protocols.transport import OUTBOUND_HIGH_WATER, ClosedReason

from .codec import NEED_DATA, MqttDecoder, MqttError, UnsupportedProtocolVersion
from .delivery import DeliveryMixin, MqttConsumer
from .fastpath import scan
from .inbound import ProtocolViolation, PublishMixin
from .packets import (
    Auth,
    Connack,
    Connect,
    Disconnect,
    Pingreq,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Subscribe,
    Unsubscribe,
    encode,
)
from .sessions import (
    NEVER_EXPIRES,
    SessionState,
    acl_filters,
    end_session,
    expiry_due,
    publish_will,
    registry,
    will_due,
)
from .subscriptions import SubscribeMixin

if TYPE_CHECKING:
    from mqemu.broker.core import Broker
    from mqemu.broker.queue import Queue

log = logging.getLogger("mqemu.protocols.mqtt")

LINGER = 1.0  # seconds a socket stays open after a DISCONNECT or refusal sent by the server
CONNECT_TIMEOUT = 10.0  # RabbitMQ closes a socket that sends no CONNECT within 10 s
MAX_PACKET_BEFORE_CONNECT = 65536  # RabbitMQ's max_packet_size_unauthenticated
MAX_PACKET_SIZE = 268435455  # the largest the Remaining Length allows (5.0 1.5.5)
RECEIVE_MAXIMUM = 1024  # QoS 2 publishes a 5.0 client may have unreleased
TOPIC_ALIAS_MAXIMUM = 10  # Mosquitto's default max_topic_alias
SERVER_KEEP_ALIVE = 60  # 5.0 clients asking for longer are told this (Server Keep Alive)
MAX_INFLIGHT_311 = 100  # unacknowledged QoS 1/2 deliveries to a 3.x client

# Reason codes used here (5.0 Table 2-6).
PROTOCOL_ERROR = 0x82
CLIENT_ID_NOT_VALID = 0x85
BAD_USER_NAME_OR_PASSWORD = 0x86
NOT_AUTHORIZED = 0x87
BAD_AUTHENTICATION_METHOD = 0x8C
KEEP_ALIVE_TIMEOUT = 0x8D
SESSION_TAKEN_OVER = 0x8E
PACKET_ID_NOT_FOUND = 0x92
RECEIVE_MAXIMUM_EXCEEDED = 0x93
TOPIC_ALIAS_INVALID = 0x94

_PINGRESP = b"\xd0\x00"
_PUBACK = b"\x40\x02"
_PUBREC = b"\x50\x02"
_PUBCOMP = b"\x70\x02"


class State(enum.Enum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    CLOSED = "closed"


def _settings(broker: Broker) -> dict[str, Any]:
    section = broker.config.extra.get("mqtt", {})
    return section if isinstance(section, dict) else {}


class MqttConnection(PublishMixin, DeliveryMixin, SubscribeMixin):
    """One client connection. See the module docstring for its states."""

    def __init__(self, broker: Broker, peer: str | None = None, conn_id: int = 0,
                 pump: Any = None) -> None:
        self.broker = broker
        self.pump = pump  # defers routing of PUBLISH to the end of the scheduler pass
        self.pending: list[tuple] = []  # (topic, message, qos, retain, packet id, properties)
        self.linger_until: float | None = None
        self.peer = peer
        self.conn_id = conn_id
        cfg = _settings(broker)
        self.max_packet_size = int(cfg.get("max_packet_size", MAX_PACKET_SIZE))
        self.receive_maximum = int(cfg.get("receive_maximum", RECEIVE_MAXIMUM))
        self.alias_in_max = int(cfg.get("topic_alias_maximum", TOPIC_ALIAS_MAXIMUM))
        self.server_keep_alive = int(cfg.get("server_keep_alive", SERVER_KEEP_ALIVE))
        self.max_inflight_311 = int(cfg.get("max_inflight", MAX_INFLIGHT_311))
        self.deny_subscribe = acl_filters(broker, "deny_subscribe")
        self.deny_publish = acl_filters(broker, "deny_publish")
        self.deny_subscribe_code = int(cfg.get("deny_subscribe_code", NOT_AUTHORIZED))
        self.decoder = MqttDecoder(MAX_PACKET_BEFORE_CONNECT)
        self.state = State.CONNECTING
        self.outbound: list[bytes] = []
        self.outbound_bytes = 0
        self.closing = False
        self.close_reason: ClosedReason | None = None
        self.reading_paused = False
        self.blocked = False
        self.level = 4
        self.client_id = ""
        self.vhost: Any = None
        self.session: SessionState = None  # type: ignore[assignment]
        self.will: Any = None
        self.keep_alive = 0
        self.connect_expiry = 0
        self.max_out = MAX_PACKET_SIZE  # the client's Maximum Packet Size
        self.prefetch = self.max_inflight_311
        self.alias_out_max = 0
        self.aliases_out: dict[str, int] = {}
        self.aliases_in: dict[int, str] = {}
        self.consumers: dict[Queue, MqttConsumer] = {}
        self.session_consumer: MqttConsumer | None = None
        self.dirty_queues: set = set()
        self.keys: dict[str, str] = {}  # topic -> routing key cache
        self.last_received = 0.0
        self.deadline: float | None = None
        self._props_msg: Any = None
        self._props_val: dict[str, Any] = {}
        self._wake: Callable[[], None] = lambda: None
        self._resume_reading: Callable[[], None] = lambda: None
        self._now = 0.0

    # -- transport interface ------------------------------------------------------------
    def bind_transport(self, wake: Callable[[], None], resume_reading: Callable[[], None]) -> None:
        self._wake = wake
        self._resume_reading = resume_reading

    def send(self, data: bytes) -> None:
        out = self.outbound
        if not out:
            self._wake()  # the writer sleeps only while outbound is empty
        out.append(data)
        self.outbound_bytes += len(data)
        if self.outbound_bytes > OUTBOUND_HIGH_WATER:
            self.blocked = True

    def data_received(self, data: bytes, now: float) -> None:
        self._now = self.last_received = now
        if self.state is State.CLOSED:
            return
        if self.deadline is None:
            self.deadline = now + CONNECT_TIMEOUT
        dec = self.decoder
        try:
            if self.level < 5 and self.state is State.CONNECTED and not dec.buffered:
                used = scan(data, dec.max_packet_size, self._publish_fast, self._on_puback_id, self._is_closed)
                if used:
                    if used == len(data) or self.state is State.CLOSED:
                        self.end_of_batch()
                        return
                    data = data[used:]
            dec.feed(data)
            while True:
                p = dec.next_packet()
                if p is NEED_DATA:
                    break
                if self.state is State.CONNECTED:
                    if self.pending and p.__class__ is not Publish and p.__class__ is not Puback:
                        self.flush_publishes()  # keep this connection's own order
                    self._handlers[p.__class__](self, p)
                else:
                    self._on_connect(p)
                if self.state is State.CLOSED:
                    break
        except MqttError as e:
            self._codec_error(e, data)
        except ProtocolViolation as e:
            self._violation(e.code, e.text)
        self.end_of_batch()

    def _is_closed(self) -> bool:
        return self.state is State.CLOSED

    def end_of_batch(self) -> None:
        if self.dirty_queues:
            queues = self.dirty_queues
            self.dirty_queues = set()
            for q in queues:
                q.dispatch()

    def next_deadline(self) -> float | None:
        if self.linger_until is not None and not self.closing:
            return self.linger_until
        if self.state is State.CONNECTED:
            return self.last_received + 1.5 * self.keep_alive if self.keep_alive else None
        return self.deadline if self.state is State.CONNECTING else None

    def on_timer(self, now: float) -> None:
        self._now = now
        if self.linger_until is not None:
            if now >= self.linger_until:
                self.closing = True
            return
        if self.state is State.CONNECTING and self.deadline is not None and now >= self.deadline:
            self._close(ClosedReason.PROTOCOL_ERROR, will=False)
        elif self.state is State.CONNECTED and self.keep_alive and now >= self.last_received + 1.5 * self.keep_alive:
            # [MQTT-3.1.2-24]: 1.5 x the keep alive without a packet: close, will included.
            log.info("keep alive of %ds expired", self.keep_alive, extra={"conn": self.conn_id})
            if self.level >= 5:
                self.send(encode(Disconnect(KEEP_ALIVE_TIMEOUT), 5))
            self._close(ClosedReason.HEARTBEAT_TIMEOUT, will=True)

    def on_drained(self) -> None:
        if self.blocked and self.outbound_bytes <= OUTBOUND_HIGH_WATER:
            self.blocked = False
            for q in list(self.consumers):
                q.dispatch()

    def connection_lost(self) -> None:
        self.broker.alarm_listeners.discard(self._on_alarm)
        if self.state is not State.CLOSED:
            self._close(ClosedReason.CLIENT_DISCONNECTED, will=True)

    # -- CONNECT ------------------------------------------------------------------------
    def _on_connect(self, p: Any) -> None:
        if p.__class__ is not Connect:
            raise ProtocolViolation(PROTOCOL_ERROR, "first packet is not CONNECT")  # [MQTT-3.1.0-1]
        self.level = level = p.protocol_level
        props = p.properties
        if "authentication_method" in props:
            # mqemu offers no enhanced authentication (5.0 4.12).
            return self._refuse(BAD_AUTHENTICATION_METHOD, "enhanced authentication is not supported")
        client_id = p.client_id
        assigned = None
        if not client_id:
            if level < 5 and (level == 3 or not p.clean_start):
                # [MQTT-3.1.3-8]: an empty id needs clean session 1 (3.1 needs 1-23 chars).
                return self._refuse(CLIENT_ID_NOT_VALID, "empty client identifier")
            client_id = assigned = "mqemu-" + os.urandom(9).hex()  # [MQTT-3.1.3-6]
        vhost = self._login(p)
        if vhost is None:
            return
        self.vhost, self.client_id = vhost, client_id
        self.keep_alive = p.keep_alive
        server_ka = None
        if level >= 5 and self.server_keep_alive and p.keep_alive > self.server_keep_alive:
            self.keep_alive = server_ka = self.server_keep_alive  # [MQTT-3.2.2-21]
        if level >= 5:
            self.prefetch = props.get("receive_maximum", 65535)
            self.max_out = props.get("maximum_packet_size", MAX_PACKET_SIZE)
            self.alias_out_max = props.get("topic_alias_maximum", 0)
            expiry = props.get("session_expiry_interval", 0)
        else:
            expiry = 0 if p.clean_start else NEVER_EXPIRES
        self.connect_expiry = expiry
        present = self._take_session(client_id, p.clean_start, expiry)
        self.will = p.will
        self.state = State.CONNECTED
        self.deadline = None
        self.decoder.max_packet_size = self.max_packet_size
        self.send(encode(Connack(present, 0, self._connack_props(props, assigned, server_ka)), level))
        self.broker.alarm_listeners.add(self._on_alarm)
        if self.broker.memory_alarm:
            self._on_alarm(True)
        self._attach()

    def _login(self, p: Connect) -> Any:
        """Authenticate (per engine) and open vhost "/". None after refusing the CONNECT."""
        broker = self.broker
        if broker.engine == "activemq":
            # ActiveMQ: without an authentication plugin every connection is accepted.
            return broker.vhosts.get("/")
        username = p.username
        password = (p.password or b"").decode("utf-8", "replace")
        if username is None:
            # RabbitMQ: the MQTT plugin lets anonymous clients in as its default user (guest).
            cfg = _settings(broker)
            if not cfg.get("allow_anonymous", True):
                self._refuse(NOT_AUTHORIZED, "anonymous connections are not allowed")
                return None
            username = cfg.get("default_user", "guest")
            password = cfg.get("default_pass", "guest")
        try:
            user = broker.auth.authenticate(username, password, self.peer)
            return broker.open_vhost(user, "/")
        except AuthenticationFailed as e:
            self._refuse(BAD_USER_NAME_OR_PASSWORD, e.text)
        except BrokerError as e:
            self._refuse(NOT_AUTHORIZED, e.text)
        return None

    def _take_session(self, client_id: str, clean_start: bool, expiry: int) -> bool:
        """Take over, resume or start the client's session; True when one is resumed."""
        reg = registry(self.broker)
        key = (self.vhost.name, client_id)
        old = reg.get(key)
        if old is not None and old.connection is not None:
            old.connection.taken_over(clean_start)
        if old is not None and old.pending_will is not None:
            will, cid = old.pending_will
            old.pending_will = None
            if clean_start:  # the old session ends now, so its delayed will is due [MQTT-3.1.3-9]
                publish_will(self.broker, self.vhost, will, cid)
        present = old is not None and not clean_start and not old.ended
        if present:
            state = old
        else:
            if old is not None:
                old.end()
            state = SessionState(client_id, self.vhost, expiry)
            reg[key] = state
        state.expiry = expiry
        state.generation += 1
        state.connection = self
        self.session = state
        return present

    def _connack_props(self, req: dict[str, Any], assigned: str | None, server_ka: int | None) -> dict[str, Any]:
        if self.level < 5:
            return {}
        props: dict[str, Any] = {}
        if assigned is not None:
            props["assigned_client_identifier"] = assigned
        if server_ka is not None:
            props["server_keep_alive"] = server_ka
        if self.receive_maximum < 65535:
            props["receive_maximum"] = self.receive_maximum
        if self.max_packet_size < MAX_PACKET_SIZE:
            props["maximum_packet_size"] = self.max_packet_size
        props["topic_alias_maximum"] = self.alias_in_max
        props["retain_available"] = 1
        props["wildcard_subscription_available"] = 1
        props["subscription_identifier_available"] = 1
        props["shared_subscription_available"] = 1
        if req.get("request_response_information"):
            props["response_information"] = "response/" + self.client_id
        return props

    def _attach(self) -> None:
        """Resume deliveries: unacknowledged ones first, then the queues' consumers."""
        state = self.session
        self.resend_inflight()
        for sub in state.shared.values():
            self._subscribe_shared(sub, None)
        if state.queue_name in self.vhost.queues:
            self._refresh_session_consumer()

    def _refuse(self, code: int, text: str) -> None:
        """CONNACK with a refusal, then close [MQTT-3.2.2-5] (3.x: the nearest return code)."""
        log.info("CONNECT refused: %s", text, extra={"conn": self.conn_id, "reason_code": code})
        props = {"reason_string": text} if self.level >= 5 else {}
        self.send(encode(Connack(False, code, props), self.level))
        self._close(ClosedReason.AUTH_FAILED if code in (0x86, 0x87) else ClosedReason.PROTOCOL_ERROR,
                    will=False, linger=True)

    # -- packets while CONNECTED ----------------------------------------------------------
    def _on_pingreq(self, p: Pingreq) -> None:
        self.send(_PINGRESP)  # [MQTT-3.12.4-1]

    def _on_disconnect(self, p: Disconnect) -> None:
        expiry = p.properties.get("session_expiry_interval") if self.level >= 5 else None
        if expiry is not None:
            if self.connect_expiry == 0 and expiry:
                raise ProtocolViolation(PROTOCOL_ERROR, "session expiry set after CONNECT had 0")  # [MQTT-3.14.2-2]
            self.session.expiry = expiry
        # [MQTT-3.1.2-10]: a normal DISCONNECT discards the will; 0x04 asks for it (5.0).
        self._close(ClosedReason.CLIENT_CLOSED, will=p.reason_code == 0x04)

    def _on_second_connect(self, p: Connect) -> None:
        raise ProtocolViolation(PROTOCOL_ERROR, "second CONNECT")  # [MQTT-3.1.0-2]

    def _on_auth(self, p: Auth) -> None:
        raise ProtocolViolation(PROTOCOL_ERROR, "AUTH without enhanced authentication")  # [MQTT-4.12.0-1]

    def _on_server_packet(self, p: Any) -> None:
        raise ProtocolViolation(PROTOCOL_ERROR, f"{type(p).__name__} from a client")

    # -- errors and closing ---------------------------------------------------------------
    def _codec_error(self, e: MqttError, data: bytes) -> None:
        if self.state is State.CONNECTING:
            level = _sniff_level(data)
            if isinstance(e, UnsupportedProtocolVersion):
                # 3.1.1 [MQTT-3.1.2-2]: return code 0x01; 5.0 [MQTT-3.1.2-2]: 0x84.
                self.level = 5 if e.protocol_level == 5 else 4
                self._refuse(int(e.reason_code), e.text)
                return
            if level == 5:
                self.level = 5
                self._refuse(int(e.reason_code), e.text)  # 5.0 4.13.1: CONNACK with the reason
                return
            log.info("malformed CONNECT: %s", e.text, extra={"conn": self.conn_id})
            self._close(ClosedReason.PROTOCOL_ERROR, will=False)
            return
        self._violation(int(e.reason_code), e.text)

    def _violation(self, code: int, text: str) -> None:
        """A protocol error: 5.0 sends DISCONNECT with the reason code (4.13); 3.1.1 closes
        [MQTT-4.8.0-1]. The will is published [MQTT-3.1.2-8]."""
        log.info("protocol error: %s", text, extra={"conn": self.conn_id, "reason_code": code})
        if self.state is State.CONNECTING:
            self._close(ClosedReason.PROTOCOL_ERROR, will=False)
            return
        if self.level >= 5:
            self.send(encode(Disconnect(code, {"reason_string": text[:200]}), 5))
        self._close(ClosedReason.PROTOCOL_ERROR, will=True, linger=self.level >= 5)

    def taken_over(self, new_clean_start: bool) -> None:
        """Another connection took the client id [MQTT-3.1.4-3]."""
        if self.state is not State.CONNECTED:
            return
        if self.level >= 5:
            self.send(encode(Disconnect(SESSION_TAKEN_OVER), 5))
        will = self.will
        self.will = None
        self._close(ClosedReason.TAKEN_OVER, will=False)
        if will is not None and (new_clean_start or not will.properties.get("will_delay_interval")):
            publish_will(self.broker, self.vhost, will, self.client_id)

    def server_close(self, text: str = "broker shutdown") -> None:
        if self.state is State.CONNECTED and self.level >= 5:
            self.send(encode(Disconnect(0x8B), 5))  # Server shutting down
        self._close(ClosedReason.SERVER_SHUTDOWN, will=True)

    def _close(self, reason: ClosedReason, will: bool, linger: bool = False) -> None:
        """Leave CONNECTED/CONNECTING. With ``linger`` the socket stays open for LINGER
        seconds, reading and dropping input, so that the client reads the DISCONNECT or
        CONNACK just sent: closing a socket with unread input makes the kernel send a reset,
        which loses what the client has not read yet."""
        if self.state is State.CLOSED:
            return
        was_connected = self.state is State.CONNECTED
        if self.pending:
            self.flush_publishes()
        self.state = State.CLOSED
        self.close_reason = self.close_reason or reason
        if linger:
            self.linger_until = self._now + LINGER
        else:
            self.closing = True
        if was_connected:
            self._detach(will)
        self._wake()

    def _detach(self, send_will: bool) -> None:
        """Leave the session: drop consumers, then end it or let it wait for its expiry."""
        state = self.session
        for q, c in list(self.consumers.items()):
            if c is not self.session_consumer:
                self._release_shared(q, c)
            q.remove_consumer(c)
        self.consumers.clear()
        self.session_consumer = None
        if state.connection is not self:
            return  # taken over: the session is the new connection's now
        state.connection = None
        will = self.will if send_will else None
        broker, vhost = self.broker, self.vhost
        if will is not None:
            delay = min(will.properties.get("will_delay_interval", 0), state.expiry)
            if delay == 0:
                publish_will(broker, vhost, will, self.client_id)
            else:
                state.pending_will = (will, self.client_id)
                gen = state.generation
                vhost.timers.call_at(vhost.clock() + delay, lambda now: will_due(broker, state, gen))
        if state.expiry == 0:
            end_session(broker, state)
        elif state.expiry != NEVER_EXPIRES:
            gen = state.generation
            vhost.timers.call_at(vhost.clock() + state.expiry, lambda now: expiry_due(broker, state, gen))

    # -- memory alarm: stop reading from publishers, as RabbitMQ does ---------------------
    def _on_alarm(self, high: bool) -> None:
        if high:
            self.reading_paused = True
        elif self.reading_paused:
            self.reading_paused = False
            self._resume_reading()

    _handlers: dict[type, Callable[[MqttConnection, Any], None]] = {
        Publish: PublishMixin._on_publish,
        Puback: PublishMixin._on_puback,
        Pubrec: PublishMixin._on_pubrec,
        Pubrel: PublishMixin._on_pubrel,
        Pubcomp: PublishMixin._on_pubcomp,
        Subscribe: SubscribeMixin._on_subscribe,
        Unsubscribe: SubscribeMixin._on_unsubscribe,
        Pingreq: _on_pingreq,
        Disconnect: _on_disconnect,
        Connect: _on_second_connect,
        Auth: _on_auth,
    }


for _cls in ("Connack", "Suback", "Unsuback", "Pingresp"):
    from . import packets as _packets
    MqttConnection._handlers[getattr(_packets, _cls)] = MqttConnection._on_server_packet


def _sniff_level(data: bytes) -> int | None:
    """The protocol level of a CONNECT at the start of data, if it can be read."""
    try:
        i = 1
        while data[i] & 0x80:
            i += 1
        i += 1
        n = (data[i] << 8) | data[i + 1]
        return data[i + 2 + n]
    except IndexError:
        return None
