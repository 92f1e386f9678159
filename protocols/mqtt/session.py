"""The MQTT 3.1 / 3.1.1 / 5.0 connection state machine (sans-IO).

Bytes come in through ``data_received(data, now)``; packets to send are appended to
``outbound`` (``session_base.SessionBase``: budget, wake-ups, alarm, redispatch). The session
calls the core directly and never awaits. CONNECT and leaving the session are in
``connect.py``, PUBLISH and the acks in ``inbound.py``, deliveries in ``delivery.py``,
SUBSCRIBE/UNSUBSCRIBE in ``subscriptions.py``, the state that outlives a connection in
``sessions.py`` and its records in the store in ``persist.py``.

States and what moves them:

    CONNECTING --CONNECT accepted---------------> CONNECTED (CONNACK 0, resend inflight)
    CONNECTING --CONNECT refused----------------> CLOSED    (CONNACK with the code)
    CONNECTING --malformed CONNECT--------------> CLOSED    (5.0: CONNACK 0x81/0x82/0x95;
                                                             3.x: close [MQTT-4.8.0-1])
    CONNECTING --another packet-----------------> CLOSED    [MQTT-3.1.0-1]
    CONNECTING --connect timeout after accept-> CLOSED    (no packet; RabbitMQ 10 s, ActiveMQ 30 s)
    CONNECTED  --DISCONNECT---------------------> CLOSED    (will dropped [MQTT-3.1.2-10],
                                                             except 5.0 reason 0x04)
    CONNECTED  --bad packet, second CONNECT-----> CLOSED    (5.0: DISCONNECT with the reason;
                                                             3.x: close), will sent
    CONNECTED  --1.5 x keep alive of silence----> CLOSED    [MQTT-3.1.2-24], will sent
    CONNECTED  --same client id connects--------> CLOSED    (5.0: DISCONNECT 0x8E) [MQTT-3.1.4-3]
    any        --a bug (the transport caught it)> CLOSED    (5.0: CONNACK or DISCONNECT 0x83;
                                                             3.x: close)
    any        --socket closed------------------> CLOSED    (will sent when CONNECTED)

On CLOSED the connection leaves its session (a clean one ends, a persistent one waits for
its expiry) and the transport flushes ``outbound`` and closes the socket.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mqemu.protocols.session_base import ClosedReason, SessionBase

from .codec import NEED_DATA, MqttDecoder, MqttError, UnsupportedProtocolVersion
from .connect import Connector, State, settings
from .delivery import MAX_PACKET_SIZE, Deliveries
from .fastpath import scan
from .inbound import Inbound, ProtocolViolation
from . import packets as _packets
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
from .sessions import SessionState, publish_will
from .subscriptions import Subscriber

if TYPE_CHECKING:
    from mqemu.broker.core import Broker

__all__ = ["MqttConnection", "State"]

log = logging.getLogger("mqemu.protocols.mqtt")

LINGER = 1.0  # seconds a socket stays open after a DISCONNECT or refusal sent by the server
# Seconds from accept to CONNECT, a silent socket included ([mqtt] connect_timeout); the
# keep-alive applies only after CONNECT. RabbitMQ closes after 10 s, ActiveMQ after 30 s
# (transport.connectAttemptTimeout).
# Largest packet before CONNECT is accepted: RabbitMQ 3.12's max_packet_size_unauthenticated
# (3.10 takes a CONNECT of any size; mqemu bounds what an unauthenticated client makes it hold).
MAX_PACKET_BEFORE_CONNECT = 65536
RECEIVE_MAXIMUM = 1024  # QoS 2 publishes a 5.0 client may have unreleased
TOPIC_ALIAS_MAXIMUM = 10  # Mosquitto's default max_topic_alias
SERVER_KEEP_ALIVE = 60  # 5.0 clients asking for longer are told this (Server Keep Alive)
MAX_INFLIGHT_311 = 100  # unacknowledged QoS 1/2 deliveries to a 3.x client
# QoS 0 PUBLISH packets a client that does not read may have waiting past the outbound
# high-water mark before further ones are dropped (Mosquitto's max_queued_messages default).
MAX_QUEUED_MESSAGES = 1000

# Reason codes used here (5.0 Table 2-6).
PROTOCOL_ERROR = 0x82
IMPLEMENTATION_SPECIFIC_ERROR = 0x83
NOT_AUTHORIZED = 0x87
KEEP_ALIVE_TIMEOUT = 0x8D
SESSION_TAKEN_OVER = 0x8E

_PINGRESP = b"\xd0\x00"


class MqttConnection(SessionBase):
    protocol_name = "MQTT"
    """One client connection. See the module docstring for its states.

    The connection owns the protocol state (``state``, ``level``, the decoder, keep-alive and
    lingering) and what CONNECT gave it (``client_id``, ``vhost``, ``session``: written
    once, by ``accepted``). Its parts own the rest and reach each other by named methods:
    ``connector`` (CONNECT, the login, the will, leaving the session), ``inbound``
    (PUBLISH, acks, held acks), ``deliveries`` (the consumer owner: deliveries, consumers,
    the client's limits, QoS 0 drops) and ``subscriber`` (SUBSCRIBE/UNSUBSCRIBE)."""

    def __init__(self, broker: Broker, peer: str | None = None, conn_id: int = 0,
                 pump: Any = None) -> None:
        SessionBase.__init__(self, broker, peer, conn_id)
        self.linger_until: float | None = None
        cfg = settings(broker)
        self.max_packet_size = int(cfg.get("max_packet_size", MAX_PACKET_SIZE))
        self.receive_maximum = int(cfg.get("receive_maximum", RECEIVE_MAXIMUM))
        self.alias_in_max = int(cfg.get("topic_alias_maximum", TOPIC_ALIAS_MAXIMUM))
        self.decoder = MqttDecoder(MAX_PACKET_BEFORE_CONNECT)
        self.connect_timeout = broker.config.seconds("mqtt", "connect_timeout", broker.profile.connect_timeout)
        self.state = State.CONNECTING
        self.level = 4
        self.client_id = ""
        self.vhost: Any = None
        self.session: SessionState = None  # type: ignore[assignment]
        self.keep_alive = 0
        self.deadline: float | None = None
        # What the fast path (``fastpath.scan``) needs, bound once when a 3.x CONNECT is
        # accepted; None before, and for 5.0 (its PUBLISH may carry properties).
        self._fast: tuple | None = None
        self.deliveries = Deliveries(self, int(cfg.get("max_inflight", MAX_INFLIGHT_311)),
                                     int(cfg.get("max_queued_messages", MAX_QUEUED_MESSAGES)))
        self.inbound = inbound = Inbound(self, pump, self.receive_maximum, self.alias_in_max)
        self.subscriber = subscriber = Subscriber(self, int(cfg.get("deny_subscribe_code", NOT_AUTHORIZED)))
        self.connector = Connector(self, int(cfg.get("server_keep_alive", SERVER_KEEP_ALIVE)))
        self._handlers: dict[type, Callable[[Any], None]] = {
            Publish: inbound.on_publish,
            Puback: inbound.on_puback,
            Pubrec: inbound.on_pubrec,
            Pubrel: inbound.on_pubrel,
            Pubcomp: inbound.on_pubcomp,
            Subscribe: subscriber.on_subscribe,
            Unsubscribe: subscriber.on_unsubscribe,
            Pingreq: self._on_pingreq,
            Disconnect: self._on_disconnect,
            Connect: self._on_second_connect,
            Auth: self._on_auth,
        }
        for cls in _SERVER_PACKETS:
            self._handlers[cls] = self._on_server_packet

    @property
    def blocked(self) -> bool:
        return self.deliveries.blocked

    @property
    def dropped(self) -> int:
        """QoS 0 PUBLISH dropped for this connection (``Deliveries.drop_qos0``)."""
        return self.deliveries.dropped

    def connecting(self, level: int) -> None:
        """CONNECT read (``Connector``): the protocol level every answer is written at."""
        self.level = level

    def accepted(self, client_id: str, vhost: Any, session: SessionState, keep_alive: int) -> None:
        """CONNECT accepted (``Connector``): the connection's identity for its whole life."""
        self.client_id, self.vhost, self.session, self.keep_alive = client_id, vhost, session, keep_alive
        self.state = State.CONNECTED
        self.deadline = None
        self.decoder.max_packet_size = self.max_packet_size
        if self.level < 5:
            inbound = self.inbound
            self._fast = (inbound.publish, inbound.on_puback_id, self._is_closed, inbound.scan_cache)

    # -- transport interface ------------------------------------------------------------
    def data_received(self, data: bytes, now: float) -> None:
        self._now = self.last_received = now
        if self.state is State.CLOSED:
            return
        if self.deadline is None and self.state is State.CONNECTING:
            self.deadline = now + self.connect_timeout  # driven without connection_made
        dec = self.decoder
        try:
            fast = self._fast
            # 3.x and CONNECTED (not CLOSED: above), nothing buffered (the decoder empties its
            # buffer whenever it has used all of it: ``dec.buffered`` without the property)
            if fast is not None and not dec._buf:
                used = scan(data, dec.max_packet_size, *fast)
                if used:
                    if used == len(data):
                        # what redispatch does when no input is held (none is: the decoder
                        # holds nothing), in three tests instead of a call
                        if self.dirty_queues or self.broker.memory_alarm or self.input_counted:
                            self.redispatch()
                        return
                    if self.state is State.CLOSED:
                        self.redispatch()
                        return
                    data = data[used:]
            dec.feed(data)
            while True:
                p = dec.next_packet()
                if p is NEED_DATA:
                    break
                if self.state is State.CONNECTED:
                    if self.inbound.pending and p.__class__ is not Publish and p.__class__ is not Puback:
                        self.inbound.flush()  # keep this connection's own order
                    self._handlers[p.__class__](p)
                else:
                    self.connector.on_connect(p)
                if self.state is State.CLOSED:
                    break
        except MqttError as e:
            self._codec_error(e, data)
        except ProtocolViolation as e:
            self._violation(e.code, e.text)
        self.redispatch()

    def connection_made(self, now: float) -> None:
        """The connect timeout runs from the accept: a socket that never sends a byte is
        closed too."""
        self._now = self.last_received = now
        self.deadline = now + self.connect_timeout

    def _is_closed(self) -> bool:
        return self.state is State.CLOSED

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

    def budget_changed(self, over: bool) -> None:
        self.deliveries.budget_changed(over)

    def input_held(self) -> int:
        return self.decoder.buffered

    def on_alarm(self, high: bool) -> None:
        """The memory (or disk) alarm: a connected client is no longer read, as RabbitMQ
        stops reading from publishers."""
        if self.state is State.CONNECTED or not high:
            self.pause_publisher(high, True)

    def connection_lost(self) -> None:
        self.release_transport()
        if self.state is not State.CLOSED:
            self._close(ClosedReason.CLIENT_DISCONNECTED, will=True)

    # -- packets while CONNECTED ----------------------------------------------------------
    def _on_pingreq(self, p: Pingreq) -> None:
        self.send(_PINGRESP)  # [MQTT-3.12.4-1]

    def _on_disconnect(self, p: Disconnect) -> None:
        expiry = p.properties.get("session_expiry_interval") if self.level >= 5 else None
        if expiry is not None:
            self.connector.disconnect_expiry(expiry)
        # [MQTT-3.1.2-10]: a normal DISCONNECT discards the will; 0x04 asks for it (5.0).
        self.drain_after_close = True
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
                self.refuse(int(e.reason_code), e.text)
                return
            if level == 5:
                self.level = 5
                self.refuse(int(e.reason_code), e.text)  # 5.0 4.13.1: CONNACK with the reason
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
        will = self.connector.take_will()
        self._close(ClosedReason.TAKEN_OVER, will=False)
        if will is not None and (new_clean_start or not will.properties.get("will_delay_interval")):
            publish_will(self.broker, self.vhost, will, self.client_id)

    def internal_error(self) -> None:
        """A bug while handling this connection (the transport caught it). 5.0: CONNACK 0x83
        before CONNECT was accepted, DISCONNECT 0x83 after; 3.x has no such code: close. The
        will is published as for any close the client did not ask for."""
        self.close_reason = ClosedReason.INTERNAL_ERROR
        text = "the broker failed to handle a packet on this connection"
        try:  # not logged here: the transport logs it, rate-limited
            if self.state is State.CONNECTING and self.level >= 5:
                self.send(encode(Connack(False, IMPLEMENTATION_SPECIFIC_ERROR, {"reason_string": text}), 5))
            elif self.state is State.CONNECTED and self.level >= 5:
                self.send(encode(Disconnect(IMPLEMENTATION_SPECIFIC_ERROR, {"reason_string": text}), 5))
            self._close(ClosedReason.INTERNAL_ERROR, will=True, linger=self.level >= 5)
        finally:
            if self.state is not State.CLOSED:
                self.state = State.CLOSED
                self.closing = True

    def connection_info(self) -> dict[str, Any] | None:
        info = super().connection_info()
        if info is not None:
            user = self.connector.user
            info["user"] = getattr(user, "name", None) or ""
            info["client_properties"] = {"client_id": self.client_id}
        return info

    def server_close(self, text: str | None = None) -> None:
        if self.state is State.CONNECTED and self.level >= 5:
            self.send(encode(Disconnect(0x8B), 5))  # Server shutting down
        self._close(ClosedReason.SERVER_SHUTDOWN, will=True)

    def publish_lost(self) -> None:
        """A QoS 1/2 publish's promise broke (a cluster queue's home node was lost before it
        stored the message): MQTT 3.1.1 has no negative PUBACK, so the connection ends
        (5.0: DISCONNECT 0x80) and the client sends what was not acknowledged again."""
        if self.state is not State.CONNECTED:
            return
        log.warning("a publish could not be stored (its queue's node is unreachable); connection closed "
                    "so the client sends it again", extra={"conn": self.conn_id, "client_id": self.client_id})
        if self.level >= 5:
            self.send(encode(Disconnect(0x80, {"reason_string": "a queue's node is unreachable: publish again"}),
                             5))
        self._close(ClosedReason.INTERNAL_ERROR, will=True, linger=True)

    def _close(self, reason: ClosedReason, will: bool, linger: bool = False) -> None:
        """Leave CONNECTED/CONNECTING. With ``linger`` the socket stays open for LINGER
        seconds, reading and dropping input, so that the client reads the DISCONNECT or
        CONNACK just sent: closing a socket with unread input makes the kernel send a reset,
        which loses what the client has not read yet."""
        if self.state is State.CLOSED:
            return
        was_connected = self.state is State.CONNECTED
        if self.inbound.pending:
            self.inbound.flush()
        self.inbound.acks.close()
        self.state = State.CLOSED
        self.close_reason = self.close_reason or reason
        if linger:
            self.linger_until = self._now + LINGER
        else:
            self.closing = True
        if was_connected:
            self.connector.detach(will)
        self._wake()

    def refuse(self, code: int, text: str) -> None:
        """CONNACK with a refusal, then close [MQTT-3.2.2-5] (3.x: the nearest return code)."""
        log.info("CONNECT refused: %s", text, extra={"conn": self.conn_id, "reason_code": code})
        props = {"reason_string": text} if self.level >= 5 else {}
        self.send(encode(Connack(False, code, props), self.level))
        self._close(ClosedReason.AUTH_FAILED if code in (0x86, 0x87) else ClosedReason.PROTOCOL_ERROR,
                    will=False, linger=True)


_SERVER_PACKETS = tuple(getattr(_packets, name) for name in ("Connack", "Suback", "Unsuback", "Pingresp"))


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
