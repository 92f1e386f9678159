"""The STOMP 1.0 / 1.1 / 1.2 connection state machine (sans-IO).

Bytes come in through ``data_received(data, now)``; frames to send are appended to
``outbound``. The session calls the core directly and never awaits; time is passed in.

States and what moves them (STOMP 1.2, "Connecting", "DISCONNECT", "ERROR"):

    CONNECTING --CONNECT or STOMP, login and version accepted--> CONNECTED  (send CONNECTED)
    CONNECTING --another frame, a refused login or version-----> CONNECTING (send ERROR)
    CONNECTING --not CONNECTED within the connect timeout of the accept, or LOGIN_TIMEOUT after a
                 refused login (whichever is first)-----------> CLOSED    (no frame)
    CONNECTED  --DISCONNECT------------------------------------> CLOSED    (RECEIPT if asked)
    CONNECTED  --a refused frame-------------------------------> CONNECTED (send ERROR)
    any        --a fatal refusal, a frame that cannot be read--> CLOSED    (send ERROR)
    CONNECTED  --nothing received for the heart-beat grace-----> CLOSED    (no frame)
    any        --the socket went away--------------------------> CLOSED

In CLOSED every further byte is ignored; the transport flushes ``outbound`` and closes the
socket (``closing``). STOMP 1.2 "ERROR" says the server closes after an ERROR; both engines
answer most refusals with an ERROR and go on, so mqemu does as each engine does
(``StompError.close``; checked by ``tests/differential/test_stomp_differential.py``).
RabbitMQ writes no ``receipt-id`` in ERROR frames; ActiveMQ echoes the refused frame's
receipt. A frame that cannot be read (its framing is lost) always closes.

Engine flavours (``flavours``, picked from ``broker.profile``) differ in login, ``host``,
destinations, header mapping and error texts; the session asks its flavour class
(``self.flavour``) and, once connected, its flavour instance (``self.destinations``).
"""

from __future__ import annotations

import enum
import logging
import time
from typing import TYPE_CHECKING, Any, Callable

from mqemu.broker.errors import AuthenticationFailed, BrokerError
from mqemu.protocols.session_base import ClosedReason, SessionBase

from .acks import Deliveries, SettleMixin
from .codec import NEED_DATA, Frame, StompDecoder, StompFrameError, negotiate_version
from .errors import StompError
from .flavours import ActiveMQFlavour, RabbitFlavour, flavour_for
from .frames_out import connected_frame, error_frame, receipt_frame
from .mapping import ESCAPERS, escape_10
from .sending import SendMixin
from .subscribing import SubscribeMixin
from .subscription import Subscription, destination_header

if TYPE_CHECKING:
    from mqemu.broker.auth import User
    from mqemu.broker.core import Broker
    from mqemu.broker.vhost import VirtualHost
    from mqemu.broker.promise import Promise

log = logging.getLogger("mqemu.protocols.stomp")

# Seconds from accept to CONNECTED, a silent socket included ([stomp] connect_timeout):
# RabbitMQ closes it after 10 s, ActiveMQ after 30 s (transport.connectAttemptTimeout).
LOGIN_TIMEOUT = 10.0  # RabbitMQ's stomp.login_timeout, counted from a refused CONNECT
# Largest frame before CONNECTED: a CONNECT with a long token as passcode fits; an
# unauthenticated client cannot make the connection hold more. After CONNECTED the limit is
# the engine version's (profile.stomp_max_frame_size).
MAX_FRAME_BEFORE_CONNECT = 16384
HEARTBEAT_EOL = b"\n"


class State(enum.Enum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    CLOSED = "closed"


class StompSession(SendMixin, SettleMixin, SubscribeMixin, SessionBase):
    protocol_name = "STOMP"
    """One client connection. See the module docstring for its states."""

    def __init__(self, broker: "Broker", peer: str | None = None, conn_id: int = 0,
                 wallclock: Callable[[], float] = time.time) -> None:
        SessionBase.__init__(self, broker, peer, conn_id)
        # The engine's STOMP rules (a class); an instance of it holds the destinations.
        self.flavour = flavour_for(broker.profile)
        self.amqp_form = self.flavour.AMQP_MESSAGE_FORM  # SENDs map as RabbitMQ's plugin does
        self.wallclock = wallclock
        self.decoder = StompDecoder(max_frame_size=MAX_FRAME_BEFORE_CONNECT)
        self.connect_timeout = broker.config.seconds("stomp", "connect_timeout", broker.profile.connect_timeout)
        self.state = State.CONNECTING
        self.version = "1.0"
        self.escape: Callable[[str], str] = escape_10
        self.user: User | None = None
        self.vhost: VirtualHost | None = None
        self.client_id: str | None = None
        self.login_refused = False
        self.session_id = ""
        self.sub_counter = 0
        self.subscriptions: dict[str, Subscription] = {}
        self.deliveries = Deliveries()  # delivery tags and unsettled deliveries (acks.py)
        self.transactions: dict[str, list[Frame]] = {}
        self.destinations: RabbitFlavour | ActiveMQFlavour | None = None
        self.send_routes: dict[str, list[tuple[str, str]]] = {}
        self.send_checked: dict[str, list[tuple[str, str]]] = {}  # routes whose write checks passed
        self.write_allowed: set[str | tuple[str, str]] = set()
        self.topic_guard = broker.auth.guards_topics  # topic rules on amq.topic (check_topic)
        self.authorizing = False  # ActiveMQ: authorization entries apply to this user
        self.destinations_seen: dict[tuple[str, str], bytes] = {}
        self.published = False
        self.send_interval = 0.0  # seconds between our heart-beats (0 = none)
        self.receive_interval = 0.0  # the client's promised interval (0 = none)
        self.deadline: float | None = None

    # -- transport interface ------------------------------------------------------------
    def budget_changed(self, over: bool) -> None:
        for sub in list(self.subscriptions.values()):
            sub.blocked = over
        if not over:
            for sub in list(self.subscriptions.values()):
                sub.resume()

    def data_received(self, data: bytes, now: float) -> None:
        self._now = self.last_received = now
        if self.state is State.CLOSED:
            return
        if self.deadline is None and self.state is State.CONNECTING:
            self.deadline = now + self.connect_timeout  # driven without connection_made
        dec = self.decoder
        dec.feed(data)
        frame = None
        try:
            while self.state is not State.CLOSED:
                frame = dec.next_frame()
                if frame is NEED_DATA:
                    break
                self.handle_frame(frame)
        except StompFrameError as e:
            self._frame_error(e)
        self.end_of_batch()

    def _frame_error(self, e: StompFrameError) -> None:
        """A frame that cannot be read ends the connection (its framing is lost). RabbitMQ
        drops the socket without a word; mqemu sends an ERROR naming the fault first (a
        DELIBERATE difference). ActiveMQ sends its own text, with no receipt-id."""
        self.error(self.flavour.frame_error_text(e.message), e.detail, None)

    def connection_made(self, now: float) -> None:
        """The connect timeout runs from the accept: a socket that never sends a byte is
        closed too."""
        self._now = self.last_received = now
        self.deadline = now + self.connect_timeout

    def end_of_batch(self) -> None:
        """Acks of one read redispatch each queue they touched once."""
        self.redispatch()

    def input_held(self) -> int:
        return self.decoder.buffered

    def next_deadline(self) -> float | None:
        if self.state is State.CONNECTED:
            deadline = None
            if self.send_interval:
                deadline = self.last_sent + self.send_interval
            if self.receive_interval:
                limit = self.last_received + self.receive_interval * self.flavour.HEARTBEAT_GRACE
                deadline = limit if deadline is None else min(deadline, limit)
            return deadline
        return self.deadline

    def on_timer(self, now: float) -> None:
        self._now = now
        if self.state is State.CONNECTED:
            if self.receive_interval and now >= self.last_received + self.receive_interval * self.flavour.HEARTBEAT_GRACE:
                # STOMP 1.2, "Heart-beating": the peer is considered dead; no ERROR is sent.
                log.info("no heart-beat from client for %.1f s", now - self.last_received,
                         extra={"conn": self.conn_id})
                self._closed(ClosedReason.HEARTBEAT_TIMEOUT)
                return
            if self.send_interval and now >= self.last_sent + self.send_interval:
                self.last_sent = now
                if not self.outbound:
                    self.send(HEARTBEAT_EOL)
            return
        if self.deadline is not None and now >= self.deadline and self.state is State.CONNECTING:
            # Both engines close without a frame.
            log.debug("no CONNECT within the connect timeout", extra={"conn": self.conn_id})
            self._closed(ClosedReason.PROTOCOL_ERROR)

    def connection_lost(self) -> None:
        self.release_transport()
        for sub in list(self.subscriptions.values()):
            sub.cancel()
        self.subscriptions.clear()
        self._requeue_unacked()
        self.transactions.clear()
        if self.vhost is not None:
            self.vhost.connection_closed(self)
        self.state = State.CLOSED

    def _requeue_unacked(self) -> None:
        """Deliveries never acknowledged go back to their queues, marked redelivered."""
        for consumer, entries in self.deliveries.take_all().items():
            consumer.queue.release_consumer_entries(consumer, entries)

    # -- frames -------------------------------------------------------------------------
    def handle_frame(self, frame: Frame) -> None:
        """Handle one frame; a refusal sends ERROR (and closes when it is fatal). Never raises."""
        try:
            if self.state is State.CONNECTING:
                if frame.command not in ("CONNECT", "STOMP"):
                    raise self.flavour.refusal(StompError("Illegal command",
                                                          "You must log in using CONNECT first"),
                                               "Not connected.")
                self._on_connect(frame)
                return
            handler = _HANDLERS.get(frame.command)
            if handler is None:
                raise self.flavour.refusal(StompError("Bad command",
                                                      f'Could not interpret command "{frame.command}"\n'),
                                           f"Unknown STOMP action: {frame.command}", activemq_close=True)
            if not handler(self, frame):
                self._receipt(frame)
        except StompError as e:
            self.refuse(e, frame)
        except BrokerError as e:
            self.refuse(self.flavour.broker_error(e), frame)
        except ValueError as e:  # a header that should be a number is not
            self.refuse(StompError("Invalid header", f"{e}\n"), frame)

    def refuse(self, e: StompError, frame: Frame) -> None:
        """The ERROR for a refused frame. RabbitMQ writes no receipt-id in ERROR frames;
        ActiveMQ echoes the frame's receipt. Only a fatal refusal closes the connection."""
        receipt = frame.headers.get("receipt") if self.flavour.ERROR_ECHOES_RECEIPT else None
        if e.close or self.state is State.CLOSED:
            self.error(e.message, e.detail, receipt)
            return
        log.info("STOMP error: %s", e.message, extra={"conn": self.conn_id})
        self.send(error_frame(e.message, e.detail, receipt,
                              self.version if self.state is State.CONNECTED else "1.0",
                              end=self.flavour.FRAME_END))
        if self.login_refused and self.state is State.CONNECTING:
            # RabbitMQ: after a refused CONNECT the socket stays open, answering ERROR,
            # until the login timeout; a client may still CONNECT with other credentials.
            self.deadline = min(self.deadline or self._now + LOGIN_TIMEOUT, self._now + LOGIN_TIMEOUT)

    def _receipt(self, frame: Frame) -> None:
        receipt = frame.headers.get("receipt")
        if receipt is not None and self.state is not State.CLOSED:
            self.send(receipt_frame(receipt, self.version, self.flavour.FRAME_END))

    # -- CONNECT ------------------------------------------------------------------------
    def _on_connect(self, f: Frame) -> None:
        h = f.headers
        self.login_refused, self.close_reason = False, None
        version = negotiate_version(h.get("accept-version"))
        if version is None:
            raise self.flavour.refusal(StompError("Version mismatch", "Supported versions are 1.0,1.1,1.2\n"),
                                       f"Invalid Protocol version[{h.get('accept-version')}], supported "
                                       "versions are: [1.2, 1.1, 1.0]", activemq_close=True)
        self.version = self.decoder.version = version
        self.escape = ESCAPERS[version]
        flavour = self.flavour
        cx, cy = _heart_beat(h.get("heart-beat", "0,0"), flavour)
        self._login(h)
        if flavour.HOST_NAMES_VHOST:
            self._open_vhost_rabbit(h)
        else:
            # ActiveMQ: host is ignored.
            self.vhost = self.broker.vhosts["/"]
            self.client_id = h.get("client-id")
        send_ms, recv_ms = flavour.heart_beat_ms(cx, cy)
        self.session_id = flavour.new_session_id(self.conn_id)
        self.destinations = flavour(self)
        self.amqp_form = flavour.AMQP_MESSAGE_FORM
        self.decoder.strict_escapes = flavour.STRICT_ESCAPES
        # RabbitMQ 3.13+: stomp.max_frame_size (4 MiB); 3.10: only max_message_size bounds it.
        self.decoder.max_frame_size = self.broker.profile.stomp_max_frame_size
        self.send_interval = send_ms / 1000.0
        self.receive_interval = recv_ms / 1000.0
        self.state = State.CONNECTED
        self.deadline = None
        self.last_sent = self._now
        self.send(connected_frame(version, self.session_id, f"{send_ms},{recv_ms}",
                                  self.broker.profile.server, flavour.CONNECTED_ORDER, flavour.FRAME_END))
        if self.broker.memory_alarm:
            self.on_alarm(True)

    def _login(self, h: dict[str, str]) -> None:
        """The engine's login (``AuthRegistry.login``). RabbitMQ: a CONNECT without login
        uses the plugin's default user (guest/guest), the connection stays open after a
        refusal. ActiveMQ: its SecurityException text, and the connection closes."""
        login = h.get("login")
        try:
            self.user = self.broker.auth.login(login, h.get("passcode"), self.peer,
                                               default=("guest", "guest"), certificate=self.tls_subject)
            self.authorizing = self.user is not None and self.broker.auth.authorization is not None
            if self.user is not None:
                self.broker.auth.grant_holders.add(self)
        except AuthenticationFailed as e:
            log.info("STOMP login failed for user '%s': %s", login, e.text, extra={"conn": self.conn_id})
            self.close_reason = ClosedReason.AUTH_FAILED
            self.login_refused = True
            detail = ("non-loopback access denied" if "localhost" in e.text
                      else f"Access refused for user '{login or 'guest'}'\n")
            raise self.flavour.refusal(StompError("Bad CONNECT", detail), e.text, activemq_close=True,
                                       security=True) from None

    def _open_vhost_rabbit(self, h: dict[str, str]) -> None:
        # RabbitMQ: the host header names the virtual host (the plugin's default_vhost is /).
        host = h.get("host", "/")
        try:
            self.vhost = self.broker.open_vhost(self.user, host)
        except BrokerError:
            self.close_reason = ClosedReason.AUTH_FAILED
            self.login_refused = True
            self.user = None
            raise StompError("Bad CONNECT", f"Virtual host '{host}' access denied") from None

    def _receipt_when(self, f: Frame, safe: Promise | None) -> bool:
        """The frame's receipt once ``safe`` is kept. True when the promise sends it; False
        when no receipt was asked or there is nothing to wait for (the dispatch sends it now)."""
        receipt = f.headers.get("receipt")
        if receipt is None or safe is None:
            return False
        safe.then(lambda: self._late_receipts([receipt]))
        return True

    def _late_receipts(self, receipts: list[str]) -> None:
        if self.state is State.CONNECTED:
            for receipt in receipts:
                self.send(receipt_frame(receipt, self.version, self.flavour.FRAME_END))

    # -- DISCONNECT ---------------------------------------------------------------------
    def _on_disconnect(self, f: Frame) -> bool:
        self._receipt(f)  # STOMP 1.2, "DISCONNECT": the receipt, then the server closes
        self.drain_after_close = True
        self._closed(ClosedReason.CLIENT_CLOSED)
        return True

    def _on_connect_again(self, f: Frame) -> bool:
        # RabbitMQ drops the socket without a word (a DELIBERATE difference: mqemu says why).
        raise self.flavour.refusal(StompError("Already connected", "A CONNECT frame was received on a "
                                              "connection that is already connected\n", close=True),
                                   "Already connected.")

    # -- helpers ------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self.state is State.CONNECTED

    def forget_grants(self) -> None:
        """Users or permissions changed (``AuthRegistry.revoke_grants``): check again."""
        self.write_allowed.clear()
        self.send_checked.clear()

    def check(self, what: str, kind: str, name: str) -> None:
        """RabbitMQ: the user's configure/write/read permission (ActiveMQ authorises
        destinations instead: ``check_destination``)."""
        if self.user is not None:
            self.broker.auth.check(self.user, self.vhost.name, what, kind, name)

    def check_destination(self, what: str, kind: str, name: str, exists: bool = True,
                          temporary: bool = False) -> None:
        """ActiveMQ: the authorization entries for ``kind://name`` (see ``AuthRegistry``)."""
        self.broker.auth.check_destination(self.user, what, kind, name, exists, temporary)

    def check_topic(self, what: str, key: str) -> None:
        """Publishing to / binding with ``key`` on amq.topic (``AuthRegistry.check_topic``)."""
        self.broker.auth.check_topic(self.user, self.vhost.name, what, key)

    def destination_line(self, key: tuple[str, str]) -> bytes:
        shown = self.destinations.shown_destination(key)  # ActiveMQ: its own temporary queues
        if shown is not None:
            line = b"destination:" + self.escape(shown).encode("utf-8") + b"\n"
        else:
            line = destination_header(self.flavour.destination_name, key[0], key[1], self.escape)
        if len(self.destinations_seen) < 1024:
            self.destinations_seen[key] = line
        return line

    def error(self, message: str, detail: str, receipt_id: str | None,
              extra: list[tuple[str, str]] | None = None) -> None:
        """Send one ERROR frame and close (STOMP 1.2, "ERROR")."""
        if self.state is State.CLOSED:
            return
        log.info("STOMP error: %s", message, extra={"conn": self.conn_id})
        self.send(error_frame(message, detail, receipt_id, self.version if self.state is State.CONNECTED
                              else "1.0", extra, self.flavour.FRAME_END))
        self._closed(self.close_reason or ClosedReason.PROTOCOL_ERROR)

    def _closed(self, reason: ClosedReason) -> None:
        self.state = State.CLOSED
        self.close_reason = self.close_reason or reason
        self.closing = True
        self._wake()

    def internal_error(self) -> None:
        """A bug while handling this connection (the transport caught it): an ERROR frame,
        then close, as the engines do when a frame's processing fails."""
        self.close_reason = ClosedReason.INTERNAL_ERROR
        if self.state is State.CLOSED:
            self.closing = True
            return
        message = self.flavour.INTERNAL_ERROR_MESSAGE
        try:  # not logged here: the transport logs it, rate-limited
            self.send(error_frame(message, "The broker failed to handle a frame on this connection; it is "
                                  "closed\n", None, self.version if self.state is State.CONNECTED else "1.0",
                                  end=self.flavour.FRAME_END))
        finally:
            self._closed(ClosedReason.INTERNAL_ERROR)

    def server_close(self, text: str | None = None) -> None:
        """Without ``text`` the node stops: an ERROR then close, or just close (the flavour
        says which). With it an operator closes this connection (the management API's
        DELETE): an ERROR naming the reason, as RabbitMQ 3.10's plugin sends it when the
        connection is force-closed (its AMQP channel dies with the 320 close)."""
        if text is not None:
            self.error("AMQP channel died", "Reason: {shutdown,{connection_closing,{server_initiated_close,"
                       f'320,"{text}"}}}}}}\n', None)
            self.close_reason = ClosedReason.SERVER_SHUTDOWN
        elif self.flavour.SHUTDOWN_ERROR:
            self.error("Server shutdown", "broker shutdown\n", None)
            self.close_reason = ClosedReason.SERVER_SHUTDOWN
        else:
            self._closed(ClosedReason.SERVER_SHUTDOWN)

    def on_alarm(self, high: bool) -> None:
        """Memory alarm: stop reading from a connection that publishes (RabbitMQ blocks it)."""
        if self.state is State.CONNECTED:
            self.pause_publisher(high, self.published)


def _heart_beat(value: str, flavour: Any) -> tuple[int, int]:
    """STOMP 1.2, "Heart-beating": ``cx,cy`` in milliseconds, both non-negative."""
    parts = value.split(",")
    try:
        cx, cy = (int(p.strip()) for p in parts)
    except ValueError:
        cx = cy = -1
    if len(parts) != 2 or cx < 0 or cy < 0:
        # RabbitMQ: the plugin's parser crashes on it and answers "Processing error".
        raise flavour.refusal(StompError("Processing error", f"heart-beat '{value}' must be two "
                                         "non-negative integers separated by a comma\n"),
                              f"Invalid heart-beat header:{value}", activemq_close=True)
    return cx, cy


_HANDLERS: dict[str, Callable[[StompSession, Frame], bool]] = {
    "SEND": StompSession._on_send,
    "SUBSCRIBE": StompSession._on_subscribe,
    "UNSUBSCRIBE": StompSession._on_unsubscribe,
    "ACK": StompSession._on_ack,
    "NACK": StompSession._on_nack,
    "BEGIN": StompSession._on_begin,
    "COMMIT": StompSession._on_commit,
    "ABORT": StompSession._on_abort,
    "DISCONNECT": StompSession._on_disconnect,
    "CONNECT": StompSession._on_connect_again,
    "STOMP": StompSession._on_connect_again,
}
