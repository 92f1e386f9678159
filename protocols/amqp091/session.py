"""The AMQP 0-9-1 connection state machine (sans-IO).

Bytes come in through ``data_received``; frames to send are appended to ``outbound``. The
session calls the core directly; it never awaits. Channels live in ``channel.py``.

Connection states and what moves them (AMQP 0-9-1 §4.2.1, the connection class):

    HEADER   --protocol header--------------------> START     (send connection.start)
    START    --start-ok, login accepted-----------> TUNE      (send connection.tune)
    START    --start-ok, login refused------------> CLOSING   (403, RabbitMQ's
                                                                authentication_failure_close)
    TUNE     --tune-ok----------------------------> OPEN_WAIT
    OPEN_WAIT--connection.open, vhost allowed-----> OPEN      (send open-ok)
    OPEN     --connection.close-------------------> CLOSED    (send close-ok)
    any      --hard error-------------------------> CLOSING   (send connection.close)
    CLOSING  --close-ok or close, or 2 s----------> CLOSED

In CLOSING every frame but close/close-ok is dropped (§4.2.1, "after sending close ... the
peer discards frames"). In CLOSED the transport flushes ``outbound`` and closes the socket.
"""

from __future__ import annotations

import enum
import logging
import platform
from typing import TYPE_CHECKING, Any

from mqemu.broker.errors import AuthenticationFailed, BrokerError
from mqemu.broker.profile import RABBITMQ
from mqemu.protocols.session_base import ClosedReason, SessionBase

from . import spec
from .channel import Channel
from .codec import (
    FRAME_MIN_SIZE,
    HEARTBEAT_FRAME,
    PROTOCOL_HEADER,
    AMQPFrameError,
    FrameDecoder,
    Heartbeat,
    MethodFrame,
    ProtocolHeader,
    ProtocolHeaderMismatch,
    encode_method,
)
from .fieldtable import decode_table
from .replies import (
    ACCESS_REFUSED, CHANNEL_ERROR, CODE_NAMES, COMMAND_INVALID, CONNECTION_FORCED, INTERNAL_ERROR,
    NOT_ALLOWED, SYNTAX_ERROR, UNEXPECTED_FRAME, HardError,
)

if TYPE_CHECKING:
    from mqemu.broker.profile import EngineProfile
    from mqemu.broker.auth import User
    from mqemu.broker.core import Broker
    from mqemu.broker.vhost import VirtualHost

log = logging.getLogger("mqemu.protocols.amqp091")

FRAME_MAX = 131072  # RabbitMQ's default
CHANNEL_MAX = 2047  # RabbitMQ's default
HEARTBEAT = 60  # seconds, RabbitMQ's default
CLOSE_TIMEOUT = 2.0
HANDSHAKE_TIMEOUT = 10.0  # RabbitMQ's handshake_timeout


class State(enum.Enum):
    HEADER = "header"
    START = "start"
    TUNE = "tune"
    OPEN_WAIT = "open_wait"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


def server_properties(profile: "EngineProfile" = RABBITMQ) -> dict[str, Any]:
    # RabbitMQ's server properties, so clients enable the extensions they look for; the
    # product and version are the emulated engine's (``broker.profile``).
    return {
        "capabilities": {
            "publisher_confirms": True,
            "exchange_exchange_bindings": True,
            "basic.nack": True,
            "consumer_cancel_notify": True,
            "connection.blocked": True,
            "consumer_priorities": True,
            "authentication_failure_close": True,
            "per_consumer_qos": True,
            "direct_reply_to": True,
        },
        "cluster_name": "mqemu@" + platform.node(),
        "copyright": "mqemu contributors",
        "information": f"mqemu: a Python broker emulating {profile.product} {profile.version} "
                       f"(not {profile.product} itself)",
        "platform": f"Python {platform.python_version()}",
        "product": profile.product,
        "version": profile.release,
    }


class AMQPConnection(SessionBase):
    protocol_name = "AMQP 0-9-1"
    """One client connection. See the module docstring for its states."""

    def __init__(self, broker: "Broker", peer: str | None = None, conn_id: int = 0,
                 heartbeat: int = HEARTBEAT, frame_max: int = FRAME_MAX, channel_max: int = CHANNEL_MAX) -> None:
        super().__init__(broker, peer, conn_id)
        # Until tune-ok a frame may be at most 4096 octets (RabbitMQ's frame_max before
        # tuning): an unauthenticated client cannot make the connection buffer more.
        self.decoder = FrameDecoder(FRAME_MIN_SIZE)
        self.handshake_timeout = broker.config.seconds("amqp", "handshake_timeout", HANDSHAKE_TIMEOUT)
        # rabbitmq.conf's consumer_timeout ([amqp] consumer_timeout, ms; 0 or absent: off),
        # in seconds (``Channel._ack_tick``)
        self.ack_timeout = broker.config.extra.get("amqp", {}).get("consumer_timeout", 0) / 1000.0
        self.state = State.HEADER
        self.channels: dict[int, Channel] = {}
        self.user: User | None = None
        self.vhost: VirtualHost | None = None
        self._released = False  # the vhost was told the connection closed (``_release``)
        self.client_properties: dict[str, Any] = {}
        self.capabilities: dict[str, Any] = {}
        self.server_heartbeat = heartbeat
        self.server_frame_max = frame_max
        self.server_channel_max = channel_max
        self.heartbeat = 0
        self.frame_max = frame_max
        self.channel_max = channel_max
        self.deadline: float | None = None
        self.confirming: set[Channel] = set()
        self.blocked_sent = False
        self.published = False
        self.converted = 0  # deliveries whose properties were converted (basic.wire_properties)
        self.topic_guard = broker.auth.guards_topics  # topic rules to check on amq.topic publishes
        self.topics_allowed: set[str] = set()
        self.partial_bodies = 0  # body frames of incomplete contents, on every channel

    # -- transport interface ------------------------------------------------------------
    def budget_changed(self, over: bool) -> None:
        for ch in list(self.channels.values()):
            ch.update_blocked()
            if not over:
                ch.resume_consumers()

    def data_received(self, data: bytes, now: float) -> None:
        self._now = self.last_received = now
        if self.state is State.CLOSED:
            return
        dec = self.decoder
        dec.feed(data)
        handle = self._handle_frame
        try:
            while True:
                frames = dec.read_frames()
                if not frames:
                    break
                for frame in frames:
                    handle(frame)
                    if self.state is State.CLOSED:
                        break
                else:
                    continue
                break
        except ProtocolHeaderMismatch:
            # §4.2.2: answer with the header we speak and close, no connection.close.
            self.send(PROTOCOL_HEADER)
            self._closed(ClosedReason.PROTOCOL_ERROR)
        except AMQPFrameError as e:
            self.connection_error(e.reply_code, e.text, e.class_id, e.method_id, prefixed=True)
        except HardError as e:
            self.connection_error(e.code, e.text, e.class_id, e.method_id)
        self.end_of_batch()

    def handle_held(self, frames: list[Any]) -> None:
        """Frames a channel held while a synchronous method waited (``Channel.release``),
        handled as a read's are."""
        if self.state is State.CLOSED:
            return
        handle = self._handle_frame
        try:
            for i, frame in enumerate(frames):
                ch = self.channels.get(frame.channel)
                if ch is not None and ch.held is not None:  # held again: the rest wait behind it
                    ch.held.extend(frames[i:])
                    break
                handle(frame)
                if self.state is State.CLOSED:
                    break
        except AMQPFrameError as e:
            self.connection_error(e.reply_code, e.text, e.class_id, e.method_id, prefixed=True)
        except HardError as e:
            self.connection_error(e.code, e.text, e.class_id, e.method_id)
        except Exception:  # a bug: this connection ends, not the caller (a cluster link's reader)
            log.exception("handling the frames a channel held failed")
            self.internal_error()
        self.end_of_batch()

    def input_held(self) -> int:
        """A partial frame plus the bodies of publishes whose content is not complete."""
        return self.decoder.buffered + self.partial_bodies

    def end_of_batch(self) -> None:
        """Work deferred to the end of a read: redispatch queues, coalesced confirms."""
        self.redispatch()
        if self.confirming:
            chans = self.confirming
            self.confirming = set()
            for ch in chans:
                ch.flush_confirms()

    def next_deadline(self) -> float | None:
        if self.state is State.OPEN and self.heartbeat:
            return min(self.last_sent + self.heartbeat / 2, self.last_received + 2 * self.heartbeat)
        return self.deadline

    def connection_made(self, now: float) -> None:
        """A client that never completes the handshake is closed (RabbitMQ's handshake_timeout)."""
        self._now = self.last_received = now
        self.deadline = now + self.handshake_timeout

    def on_timer(self, now: float) -> None:
        self._now = now
        if self.state is State.OPEN and self.heartbeat:
            if now >= self.last_received + 2 * self.heartbeat:
                # RabbitMQ closes a silent peer's socket without connection.close.
                log.info("missed heartbeats from client, timeout: %ds", self.heartbeat,
                         extra={"conn": self.conn_id})
                self._closed(ClosedReason.HEARTBEAT_TIMEOUT)
                return
            if now >= self.last_sent + self.heartbeat / 2 and not self.outbound:
                self.send(HEARTBEAT_FRAME)
            return
        if self.deadline is not None and now >= self.deadline and self.state is not State.OPEN:
            self._closed(ClosedReason.PROTOCOL_ERROR if self.state is not State.CLOSING
                         else ClosedReason.CLIENT_CLOSED)

    def connection_lost(self) -> None:
        self.release_transport()
        self._release()
        self.state = State.CLOSED

    def _release(self) -> None:
        """Tear the channels down (their unacked messages go back) and give up the connection's
        exclusive queues; once. A client's connection.close does it before close-ok leaves, so
        a client that has close-ok finds them gone from every other connection."""
        for ch in list(self.channels.values()):
            ch.teardown()
        self.channels.clear()
        if self.vhost is not None and not self._released:
            self._released = True
            self.vhost.connection_closed(self)

    # -- frames -------------------------------------------------------------------------
    def _handle_frame(self, frame: Any) -> None:
        state = self.state
        if frame.__class__ is Heartbeat:
            if frame.channel != 0 and state is not State.CLOSING:
                # RabbitMQ (rabbit_reader): a heartbeat off channel 0 is unexpected_frame
                raise HardError(UNEXPECTED_FRAME, f"type 8, heartbeat on channel {frame.channel}")
            return
        if state is State.OPEN:
            ch = self.channels.get(frame.channel)
            if ch is not None:
                ch.handle(frame)
                return
            self._frame_without_channel(frame)
            return
        if state is State.CLOSING:
            if frame.__class__ is MethodFrame and frame.channel == 0:
                m = frame.method
                if m.__class__ is spec.ConnectionCloseOk:
                    self._closed(self.close_reason or ClosedReason.PROTOCOL_ERROR)
                elif m.__class__ is spec.ConnectionClose:
                    self.send(encode_method(0, spec.ConnectionCloseOk()))
                    self._closed(self.close_reason or ClosedReason.PROTOCOL_ERROR)
            return
        if frame.__class__ is ProtocolHeader:
            self._start()
            return
        if frame.__class__ is not MethodFrame or frame.channel != 0:
            raise HardError(UNEXPECTED_FRAME, f"expected a connection method on channel 0 "
                                   f"during the handshake, got {type(frame).__name__} on channel {frame.channel}")
        handler = self._handshake.get((state, frame.method.__class__))
        if handler is None:
            m = frame.method
            if m.__class__ is spec.ConnectionClose:
                self.send(encode_method(0, spec.ConnectionCloseOk()))
                self.drain_after_close = True
                self._closed(ClosedReason.CLIENT_CLOSED)
                return
            raise HardError(COMMAND_INVALID, f"unexpected method {m.NAME} during the handshake",
                                   m.CLASS_ID, m.METHOD_ID)
        handler(self, frame.method)

    def _frame_without_channel(self, frame: Any) -> None:
        if frame.channel == 0:
            if frame.__class__ is not MethodFrame:
                raise HardError(UNEXPECTED_FRAME, f"unexpected {type(frame).__name__} on channel 0")
            m = frame.method
            if m.__class__ is spec.ConnectionClose:
                self._release()
                self.send(encode_method(0, spec.ConnectionCloseOk()))
                self.drain_after_close = True
                self._closed(ClosedReason.CLIENT_CLOSED)
            elif m.__class__ is spec.ConnectionCloseOk:
                self._closed(ClosedReason.CLIENT_CLOSED)
            elif m.__class__ is spec.ConnectionUpdateSecret:
                self.send(encode_method(0, spec.ConnectionUpdateSecretOk()))
            elif m.__class__ in (spec.ConnectionBlocked, spec.ConnectionUnblocked):
                pass
            else:
                # RabbitMQ (rabbit_reader:handle_method0): any other method here is a channel_error
                raise HardError(CHANNEL_ERROR, "unexpected method in connection state running",
                                m.CLASS_ID, m.METHOD_ID)
            return
        if frame.__class__ is MethodFrame and frame.method.__class__ is spec.ChannelOpen:
            self._open_channel(frame.channel)
            return
        m = getattr(frame, "method", None)
        raise HardError(CHANNEL_ERROR, f"expected 'channel.open' on channel {frame.channel}",
                               m.CLASS_ID if m else 0, m.METHOD_ID if m else 0)

    def _open_channel(self, number: int) -> None:
        # RabbitMQ 3.10 (rabbit_reader:create_channel) limits how many channels are open, not
        # their numbers, and names no method in the close.
        if self.channel_max and len(self.channels) >= self.channel_max:
            raise HardError(NOT_ALLOWED, f"number of channels opened ({len(self.channels)}) has "
                            f"reached the negotiated channel_max ({self.channel_max})")
        self.channels[number] = Channel(self, number)
        self.send(encode_method(number, spec.ChannelOpenOk()))

    # -- handshake ----------------------------------------------------------------------
    def _start(self) -> None:
        self.state = State.START
        self.send(encode_method(0, spec.ConnectionStart(
            version_major=0, version_minor=9, server_properties=server_properties(self.broker.profile),
            mechanisms=self._mechanisms().encode(), locales=b"en_US")))

    def _mechanisms(self) -> str:
        """RabbitMQ's auth_mechanisms; EXTERNAL only on a connection with a verified client
        certificate (rabbit_auth_mechanism_ssl's should_offer)."""
        return " ".join(m for m in self.broker.auth.mechanisms if m != "EXTERNAL" or self.tls_subject is not None)

    def _on_start_ok(self, m: spec.ConnectionStartOk) -> None:
        self.client_properties = m.client_properties or {}
        caps = self.client_properties.get("capabilities")
        self.capabilities = caps if isinstance(caps, dict) else {}
        try:
            if m.mechanism == "EXTERNAL" and self.tls_subject is not None and self.broker.auth.external:
                self.user = self.broker.auth.certificate_login(self.tls_subject, self.peer)  # the response is ignored
                self.auth_mechanism = "EXTERNAL"
            else:
                username, password = self._credentials(m.mechanism, m.response)
                self.user = self.broker.auth.authenticate(username, password, self.peer)
                self.auth_mechanism = m.mechanism
        except AuthenticationFailed as e:
            log.info("authentication failed", extra={"conn": self.conn_id, "reason": e.text})
            if self.capabilities.get("authentication_failure_close"):
                # RabbitMQ sends this close with class and method 0
                self.connection_error(ACCESS_REFUSED, f"ACCESS_REFUSED - {e.text}", 0, 0,
                                      reason=ClosedReason.AUTH_FAILED, prefixed=True)
            else:
                self._closed(ClosedReason.AUTH_FAILED)
            return
        self.state = State.TUNE
        self.send(encode_method(0, spec.ConnectionTune(
            channel_max=self.server_channel_max, frame_max=self.server_frame_max,
            heartbeat=self.server_heartbeat)))

    def _credentials(self, mechanism: str, response: bytes) -> tuple[str, str]:
        if mechanism == "PLAIN":
            parts = bytes(response).split(b"\x00")
            if len(parts) != 3:
                raise AuthenticationFailed("Login was refused: malformed PLAIN response")
            return parts[1].decode("utf-8", "replace"), parts[2].decode("utf-8", "replace")
        if mechanism == "AMQPLAIN":
            try:
                table = decode_table(bytes(response))
            except AMQPFrameError as e:
                # a field table that cannot be read is a syntax error wherever it is
                raise AMQPFrameError(SYNTAX_ERROR, f"{e.text} (the AMQPLAIN response of "
                                     "connection.start-ok)", 10, 11) from None
            login, password = table.get("LOGIN", ""), table.get("PASSWORD", "")
            as_str = lambda v: v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
            return as_str(login), as_str(password)
        raise HardError(COMMAND_INVALID, f"unknown authentication mechanism '{mechanism}'", 10, 11)

    def _on_tune_ok(self, m: spec.ConnectionTuneOk) -> None:
        floor = self.broker.profile.amqp_frame_min_size  # RabbitMQ 4.1+: 8192
        if m.frame_max and m.frame_max < floor:
            raise HardError(NOT_ALLOWED, f"frame_max={m.frame_max} < {floor} min size", 10, 31)
        if m.frame_max > self.server_frame_max:
            raise HardError(NOT_ALLOWED, f"frame_max={m.frame_max} > {self.server_frame_max} max size", 10, 31)
        if m.channel_max > self.server_channel_max:
            raise HardError(NOT_ALLOWED, f"channel_max={m.channel_max} > {self.server_channel_max} max",
                                   10, 31)
        self.frame_max = m.frame_max or self.server_frame_max
        self.channel_max = m.channel_max or self.server_channel_max
        self.heartbeat = m.heartbeat
        self.decoder.frame_max = self.frame_max
        self.state = State.OPEN_WAIT

    def _on_open(self, m: spec.ConnectionOpen) -> None:
        try:
            self.vhost = self.broker.open_vhost(self.user, m.virtual_host)
        except BrokerError as e:
            self.connection_error(NOT_ALLOWED, f"NOT_ALLOWED - {e.text}", 10, 40, prefixed=True)
            return
        self.state = State.OPEN
        self.deadline = None
        self.send(encode_method(0, spec.ConnectionOpenOk()))
        if self.broker.memory_alarm:
            self.on_alarm(True)

    _handshake = {
        (State.START, spec.ConnectionStartOk): _on_start_ok,
        (State.TUNE, spec.ConnectionTuneOk): _on_tune_ok,
        (State.OPEN_WAIT, spec.ConnectionOpen): _on_open,
    }

    # -- errors and closing -------------------------------------------------------------
    def connection_error(self, code: int, text: str, class_id: int = 0, method_id: int = 0,
                         reason: ClosedReason = ClosedReason.PROTOCOL_ERROR, prefixed: bool = False,
                         logged: bool = True) -> None:
        """Send connection.close with the error and wait (briefly) for close-ok. ``logged``
        false: the caller has logged it already."""
        if self.state in (State.CLOSING, State.CLOSED):
            return
        if not prefixed:
            text = f"{CODE_NAMES.get(code, 'ERROR')} - {text}"
        if logged:
            log.info("closing connection: %s", text, extra={"conn": self.conn_id, "reply_code": code})
        self.send(encode_method(0, spec.ConnectionClose(reply_code=code, reply_text=text[:255],
                                                         class_id=class_id, method_id=method_id)))
        self.state = State.CLOSING
        self.close_reason = reason
        self.deadline = self._now + CLOSE_TIMEOUT
        for ch in list(self.channels.values()):
            ch.teardown()
        self.channels.clear()

    def _closed(self, reason: ClosedReason) -> None:
        self.state = State.CLOSED
        self.close_reason = self.close_reason or reason
        self.closing = True
        self._wake()

    def server_close(self, text: str | None = None) -> None:
        """Close from the broker side: 320 CONNECTION_FORCED, with the reason an operator gave
        (the management API's DELETE) or the node's shutdown."""
        if text is None:
            text = "broker forced connection closure with reason 'shutdown'"
        if self.state is State.OPEN:
            self.connection_error(CONNECTION_FORCED, f"CONNECTION_FORCED - {text}",
                                  reason=ClosedReason.SERVER_SHUTDOWN, prefixed=True)
        else:
            self._closed(ClosedReason.SERVER_SHUTDOWN)

    def internal_error(self) -> None:
        """A bug while handling this connection (the transport caught it): connection.close
        541 INTERNAL_ERROR once the client has had connection.start, as RabbitMQ closes a
        connection whose channel crashed; before that the socket is just closed."""
        if self.state in (State.START, State.TUNE, State.OPEN_WAIT, State.OPEN):
            try:
                self.connection_error(INTERNAL_ERROR, "INTERNAL_ERROR - the broker failed to handle "
                                      "a frame on this connection", reason=ClosedReason.INTERNAL_ERROR,
                                      prefixed=True, logged=False)  # the transport logs, rate-limited
                return
            except Exception:  # the teardown failed too: close without more ado
                self.state = State.CLOSING
        self._closed(ClosedReason.INTERNAL_ERROR)

    def connection_info(self) -> dict[str, Any] | None:
        info = super().connection_info()
        if info is not None:
            info["channels"] = len(self.channels)
            info["client_properties"] = self.client_properties
        return info

    def channel_closed(self, number: int) -> None:
        self.channels.pop(number, None)

    # -- memory alarm (RabbitMQ's connection.blocked extension) -------------------------
    def on_alarm(self, high: bool) -> None:
        if self.state is not State.OPEN:
            return
        if self.capabilities.get("connection.blocked") and high != self.blocked_sent:
            self.blocked_sent = high
            self.send(encode_method(0, spec.ConnectionBlocked(reason=self.broker.alarm_reason) if high
                                    else spec.ConnectionUnblocked()))
        self.pause_publisher(high, self.published)


