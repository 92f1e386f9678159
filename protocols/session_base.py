"""What every protocol session is and shares, with no I/O and no trio.

A session is the state machine of one connection: bytes in through ``data_received``, bytes
out through its ``outbound`` list, deadlines through ``next_deadline``/``on_timer``. The
trio transport (``transport.py``) drives it; unit tests drive it by hand. ``SessionBase``
holds the outbound buffer and its budget, the transport's wake-ups, the memory-alarm
subscription and the once-per-read redispatch of queues.
"""

from __future__ import annotations

import enum
from typing import Any, Callable, Protocol

# Outbound bytes a connection may hold before its consumers stop receiving deliveries.
OUTBOUND_HIGH_WATER = 1 << 20
# Outbound bytes past which the connection's own input is not read until its peer reads what
# it was sent (replies to a client that writes but never reads must not grow without bound).
READ_PAUSE_BYTES = 8 << 20
# Input not yet whole (a partial frame or message body) past which a connection's input is
# counted by the memory alarm.
HELD_INPUT_MIN = 64 << 10


class ClosedReason(enum.Enum):
    """Why a connection ended: one value per cause, logged on every close."""

    CLIENT_CLOSED = "client_closed"  # a clean protocol close
    CLIENT_DISCONNECTED = "client_disconnected"  # EOF or reset without a protocol close
    PROTOCOL_ERROR = "protocol_error"
    AUTH_FAILED = "auth_failed"
    HEARTBEAT_TIMEOUT = "heartbeat_timeout"
    TAKEN_OVER = "taken_over"
    SERVER_SHUTDOWN = "server_shutdown"
    INTERNAL_ERROR = "internal_error"
    SOCKET_ERROR = "socket_error"


class Session(Protocol):
    outbound: list[bytes]
    outbound_bytes: int
    sending_bytes: int  # bytes the writer took and is sending (the transport sets it)
    closing: bool  # set when the session wants the socket closed once output is flushed
    close_reason: ClosedReason | None
    reading_paused: bool
    drain_after_close: bool  # the peer closed cleanly: read and discard until it hangs up

    def bind_transport(self, wake: Callable[[], None], resume_reading: Callable[[], None]) -> None: ...
    def data_received(self, data: bytes, now: float) -> None: ...
    def next_deadline(self) -> float | None: ...
    def on_timer(self, now: float) -> None: ...
    def on_drained(self) -> None: ...
    def connection_lost(self) -> None: ...
    def internal_error(self) -> None: ...
    # The broker closes the connection, saying why, as the protocol does (AMQP 0-9-1:
    # connection.close 320 CONNECTION_FORCED - text; STOMP: ERROR; MQTT 5: DISCONNECT
    # 0x8B): node shutdown, the management API's DELETE of a connection.
    def server_close(self, text: str | None = None) -> None: ...


def _nothing() -> None:
    pass


class SessionBase:
    """What every protocol session shares: the outbound buffer and its budget, the transport's
    wake-ups, the memory-alarm subscription and the once-per-read redispatch of queues.

    Subclasses override ``budget_changed`` (stop or resume deliveries when the outbound
    buffer passes ``OUTBOUND_HIGH_WATER`` or drains) and ``on_alarm`` (the broker's memory
    alarm), and call ``redispatch`` at the end of each ``data_received``.
    """

    #: the protocol as RabbitMQ's management API names it (``connection_info``)
    protocol_name = "unknown"
    #: (peer (host, port), local (host, port)) of the socket, set by the transport
    addresses: tuple | None = None
    #: the subject of the client's verified TLS certificate (``tls.certificate_subject``),
    #: set by the transport; the EXTERNAL login's name comes from it
    tls_subject: tuple | None = None
    #: how the client logged in, as the management API shows it
    auth_mechanism: str = "PLAIN"

    def __init__(self, broker: Any, peer: str | None, conn_id: int) -> None:
        self.broker = broker
        self.peer = peer
        self.conn_id = conn_id
        self.outbound: list[bytes] = []
        self.outbound_bytes = 0
        self.closing = False
        self.close_reason: ClosedReason | None = None
        self.reading_paused = False
        self.drain_after_close = False
        self.over_budget = False
        self.sending_bytes = 0  # what the writer is sending now (set by the transport)
        self.input_counted = False  # in broker.held_input: a large partial frame or body
        self.dirty_queues: set = set()  # queues whose consumers got credit back in this read
        self.last_received = 0.0
        self.last_sent = 0.0
        self._now = 0.0
        self._wake: Callable[[], None] = _nothing
        self._resume_reading: Callable[[], None] = _nothing

    def bind_transport(self, wake: Callable[[], None], resume_reading: Callable[[], None]) -> None:
        self._wake = wake
        self._resume_reading = resume_reading
        self.broker.alarm_listeners.add(self.on_alarm)

    def release_transport(self) -> None:
        """Call from ``connection_lost``."""
        self.broker.alarm_listeners.discard(self.on_alarm)
        self.broker.held_outbound.discard(self)
        self.broker.held_input.discard(self)

    def send(self, data: bytes) -> None:
        """Queue bytes for the writer. The writer sleeps only while the buffer is empty, so
        only the first append after it drained needs to wake it."""
        out = self.outbound
        if not out:
            self._wake()
        out.append(data)
        self.outbound_bytes += len(data)
        if self.outbound_bytes > OUTBOUND_HIGH_WATER and not self.over_budget:
            self.over_budget = True
            self.broker.held_outbound.add(self)  # the memory alarm counts this buffer now
            self.budget_changed(True)

    def on_drained(self) -> None:
        self.last_sent = self._now
        if self.over_budget:
            self.over_budget = False
            self.broker.held_outbound.discard(self)
            self.budget_changed(False)

    def redispatch(self) -> None:
        """Acks of one read redispatch each queue they touched once. Also, at the end of
        each read: a connection that began publishing while the alarm was already on is
        blocked now, like those that published before it was set; and a connection holding a
        large partial frame or body is counted by the memory alarm (``Broker.held_input``)."""
        if self.dirty_queues:
            queues, self.dirty_queues = self.dirty_queues, set()
            for q in queues:
                q.dispatch()
        if self.broker.memory_alarm and not self.reading_paused:
            self.on_alarm(True)
        held = self.input_held() >= HELD_INPUT_MIN
        if held is not self.input_counted:
            self.input_counted = held
            if held:
                self.broker.held_input.add(self)  # the memory alarm counts it now
            else:
                self.broker.held_input.discard(self)

    def after_routing(self) -> None:
        """``redispatch`` after routing done outside a read (MQTT's publish pump), skipped when
        it has nothing to do: routing reads no input, so the held-input count can only change
        for a connection already counted."""
        if self.dirty_queues or self.broker.memory_alarm or self.input_counted:
            self.redispatch()

    def input_held(self) -> int:
        """Bytes received that are not yet whole frames or messages (each protocol says)."""
        return 0

    def pause_publisher(self, high: bool, publishes: bool) -> None:
        """The memory alarm's effect on reading: a connection that publishes stops being read
        while the alarm is on (RabbitMQ blocks publishing connections)."""
        if high and publishes:
            self.reading_paused = True
        elif not high and self.reading_paused:
            self.reading_paused = False
            self._resume_reading()

    def connection_info(self) -> dict[str, Any] | None:
        """What a management view shows of this connection, the same for every protocol:
        ``protocol``, ``user`` (name), ``vhost`` (name), ``channels``, ``client_properties``;
        None while it is not open (no login yet). Subclasses override the parts they keep
        elsewhere. Closing one is ``server_close(text)`` (AMQP 320 CONNECTION_FORCED with
        the text, STOMP an ERROR, MQTT 5 DISCONNECT)."""
        user = getattr(self, "user", None)
        vhost = getattr(self, "vhost", None)
        if vhost is None:
            return None
        return {"protocol": self.protocol_name, "user": getattr(user, "name", None) or "",
                "vhost": getattr(vhost, "name", vhost), "channels": 0, "client_properties": {},
                "auth_mechanism": self.auth_mechanism}

    def internal_error(self) -> None:
        """One of this session's methods raised (a bug). Queue the protocol's internal-error
        frame and set ``closing``; the transport flushes the output, then closes the socket.
        Subclasses send their protocol's error; this default only closes."""
        self.close_reason = ClosedReason.INTERNAL_ERROR
        self.closing = True
        self._wake()

    def budget_changed(self, over: bool) -> None:
        pass

    def on_alarm(self, high: bool) -> None:
        pass
