"""STOMP as each engine speaks it: the two flavour classes the session asks.

The broker's engine profile (``mqemu.broker.profile``) names the engine; ``flavour_for``
picks the class here, once per connection. The class attributes and class methods are the
engine's rules (error wording, which frames it accepts, heart-beat grace, message ids); an
instance, made at CONNECT, holds the connection's destinations (``destinations``: the two
classes grown from there). A session never compares engine names; it asks its flavour.

Each rule says which engine does what; see ``destinations`` for the destination syntaxes.
"""

from __future__ import annotations

import base64
import itertools
import os
import time
from typing import TYPE_CHECKING, Any, Callable

from mqemu.broker.errors import AccessRefused, BrokerError, PreconditionFailed

from .destinations import ActiveMQDestinations, RabbitDestinations
from .errors import StompError, protocol_exception, security_exception
from .mapping import activemq_destination, rabbit_boolean, rabbit_destination

if TYPE_CHECKING:
    from mqemu.broker.profile import EngineProfile

    from .session import StompSession

_session_numbers = itertools.count(1)
_START_MS = int(time.time() * 1000)

# ActiveMQ: its codec's texts for the frame faults it detects the same way.
_ACTIVEMQ_FRAME_ERRORS = {
    "Body longer than content-length": "content-length bytes were read and there was no trailing null byte",
}


class RabbitFlavour(RabbitDestinations):
    """RabbitMQ's STOMP plugin."""

    HEARTBEAT_GRACE = 2.0  # a client is dead after two silent heart-beat periods
    ERROR_ECHOES_RECEIPT = False  # ERROR frames carry no receipt-id
    STRICT_ESCAPES = True  # an undefined escape is a frame error
    SUBSCRIBE_NEEDS_ID = False  # 1.1+ SUBSCRIBE without id: the destination is the id, as in 1.0
    DURABLE_NEEDS_ID = True  # ... but a durable subscription needs one
    TEMP_QUEUE_ID_RESERVED = True  # an id may not start with /temp-queue/
    CONSUMER_PRIORITIES = True  # x-priority on SUBSCRIBE
    UNSUBSCRIBE_BY_DESTINATION = True  # UNSUBSCRIBE without id names the destination, any version
    NACK_IN_10 = True  # NACK is taken in STOMP 1.0 too
    # An ACK's or NACK's receipt is sent once it is processed; the queue's record of the
    # ack reaches the disk later (a kill -9 before then redelivers the message, flagged).
    SETTLE_RECEIPT_ON_DISK = False
    REFUSES_DUPLICATE_BEGIN = False  # BEGIN of an open transaction starts it again
    TELLS_SERVER_CANCEL = True  # a deleted queue's subscription gets an ERROR naming it
    SEND_REFUSES_MESSAGE_ID = True  # message-id is not allowed on SEND
    CACHES_SEND_ROUTES = True  # a destination is resolved (and declared) once per connection
    HOST_NAMES_VHOST = True  # the host header names the virtual host
    INTERNAL_ERROR_MESSAGE = "Processing error"  # the ERROR of a fault inside the broker
    # SEND headers mapped as the plugin maps them (user-id checked); MESSAGE frames with AMQP
    # property headers, redelivered always, content-length always
    AMQP_MESSAGE_FORM = True
    # Every frame ends with NUL then LF (the plugin's trailing_lf, on by default in 3.x).
    FRAME_END = b"\x00\n"
    CONNECTED_ORDER = ("server", "session", "heart-beat", "version")
    # A SEND in a transaction gets its receipt at COMMIT, after the COMMIT's own (none after
    # ABORT).
    TX_SEND_RECEIPT_AT_COMMIT = True
    # A node that stops gracefully closes the socket without a frame: the plugin's reader
    # dies with its supervisor ({connection_died, shutdown}) and sends no ERROR.
    SHUTDOWN_ERROR = False

    destination_name: Callable[[str, str], str] = staticmethod(rabbit_destination)

    @staticmethod
    def refusal(rabbit: StompError, activemq_text: str, activemq_close: bool = False,
                security: bool = False) -> StompError:
        """One refusal worded as each engine words it: this engine's."""
        return rabbit

    @staticmethod
    def broker_error(e: BrokerError) -> StompError:
        """The AMQP error name in lower case (``not_found``) with the text as body, as the
        plugin's ``amqp_death`` writes it; the channel died, so the connection closes too."""
        return StompError(e.name.lower(), f"{e.name} - {e.text}\n", close=True)

    @staticmethod
    def frame_error_text(message: str) -> str:
        return message

    @staticmethod
    def heart_beat_ms(cx: int, cy: int) -> tuple[int, int]:
        """(server sends every, server expects every) in ms: whole seconds (anything under one
        second is one)."""
        return _whole_seconds(cy), _whole_seconds(cx)

    @staticmethod
    def new_session_id(conn_id: int) -> str:
        return "session-" + base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")

    @staticmethod
    def message_id_prefix(session: "StompSession", sub_id: str, destination: str, show_id: bool) -> str:
        """``T_<sub>@@<session>@@`` (the plugin's consumer tag and session), or
        ``Q_<destination>@@<session>@@`` for a subscription without id."""
        return f"{RabbitFlavour.consumer_tag(sub_id if show_id else None, destination)}@@{session.session_id}@@"

    @staticmethod
    def consumer_tag(sub_id: str | None, destination: str) -> str:
        """The plugin's consumer tag: ``T_<id>``, or ``Q_<destination>`` without an id."""
        return f"T_{sub_id}" if sub_id is not None else f"Q_{destination}"

    @classmethod
    def duplicate_subscription(cls, sub_id: str | None, destination: str) -> StompError:
        """A SUBSCRIBE whose id (or, without one, destination) is taken: the ERROR names the
        consumer tag; the channel dies, so the connection closes."""
        return StompError("Duplicated subscription identifier", f"A subscription identified by "
                          f"'{cls.consumer_tag(sub_id, destination)}' already exists.", close=True)

    @staticmethod
    def consumer_options(h: dict[str, str], dest: str) -> tuple[int, Any]:
        """(prefetch, selector): prefetch-count (default: no limit); no selectors."""
        return int(h.get("prefetch-count", "0")), None

    def delivery_tag(self, command: str, value: str) -> int:
        """The delivery tag of ``T_<sub>@@<session>@@<tag>``, whose subscription must exist."""
        parts = value.rsplit("@@", 2)
        if len(parts) != 3 or not parts[2].isdigit():
            raise StompError("Invalid header", f"{command} must include a valid 'message-id' header\n")
        if parts[0][2:] not in self.s.subscriptions:
            raise StompError("Subscription not found", f"Message with id {value} has no subscription\n")
        return int(parts[2])

    @staticmethod
    def nack_requeues(headers: dict[str, str]) -> bool:
        """NACK requeues unless ``requeue`` is false (``false`` or ``False``)."""
        return rabbit_boolean(headers.get("requeue")) is not False

    @staticmethod
    def durable_subscription(headers: dict[str, str]) -> bool:
        """SUBSCRIBE asks for a durable subscription: ``durable`` or ``persistent`` true."""
        return bool(rabbit_boolean(headers.get("durable")) or rabbit_boolean(headers.get("persistent")))

    @staticmethod
    def unknown_delivery(command: str, tag: int) -> BrokerError | StompError:
        # the channel's basic.ack of an unknown tag: a channel error, it closes
        return PreconditionFailed(f"unknown delivery tag {tag}")

    def remove_named_durable(self, headers: dict[str, str], active_here: bool) -> bool:
        """UNSUBSCRIBE naming a durable subscription: not a RabbitMQ header (False: go on)."""
        return False

    def shown_destination(self, key: tuple[str, str]) -> str | None:
        """The destination a MESSAGE shows when it is not derived from (exchange, key)."""
        return None


class ActiveMQFlavour(ActiveMQDestinations):
    """ActiveMQ Classic's STOMP transport."""

    HEARTBEAT_GRACE = 1.5  # ActiveMQ's read-check: 1.5 heart-beat periods
    ERROR_ECHOES_RECEIPT = True  # ERROR frames echo the refused frame's receipt
    STRICT_ESCAPES = False  # an undefined escape is kept as it is
    SUBSCRIBE_NEEDS_ID = True  # STOMP 1.1+, "SUBSCRIBE": the id header is required
    DURABLE_NEEDS_ID = False
    TEMP_QUEUE_ID_RESERVED = False
    CONSUMER_PRIORITIES = False
    UNSUBSCRIBE_BY_DESTINATION = False  # only in STOMP 1.0
    NACK_IN_10 = False  # "NACK received but connection is in v1.0 mode."
    # KahaDB writes a message ack synchronously when its sender waits for a response (a
    # receipt), so a receipted ACK is on disk: the receipt waits for the store.
    SETTLE_RECEIPT_ON_DISK = True
    REFUSES_DUPLICATE_BEGIN = True  # "The transaction was already started"
    TELLS_SERVER_CANCEL = False
    SEND_REFUSES_MESSAGE_ID = False
    CACHES_SEND_ROUTES = False
    HOST_NAMES_VHOST = False  # host is ignored
    INTERNAL_ERROR_MESSAGE = "Internal error"
    # SEND headers mapped to JMS fields, a SEND without content-length is a text message;
    # MESSAGE frames with JMS headers, redelivered only when true, text bodies bare
    AMQP_MESSAGE_FORM = False
    # Every frame ends with NUL then LF (StompWireFormat writes an EOL after the NUL).
    FRAME_END = b"\x00\n"
    CONNECTED_ORDER = ("server", "heart-beat", "session", "version")
    TX_SEND_RECEIPT_AT_COMMIT = False  # a SEND in a transaction is answered at once
    SHUTDOWN_ERROR = True  # a stopping broker sends an ERROR before it closes

    destination_name: Callable[[str, str], str] = staticmethod(activemq_destination)

    @staticmethod
    def refusal(rabbit: StompError, activemq_text: str, activemq_close: bool = False,
                security: bool = False) -> StompError:
        """One refusal worded as each engine words it: a ProtocolException (fatal ones close),
        or with ``security`` a SecurityException (a refused login or destination)."""
        return (security_exception if security else protocol_exception)(activemq_text, activemq_close)

    @staticmethod
    def broker_error(e: BrokerError) -> StompError:
        """The exception text in both the message header and the body; a refused access is
        ActiveMQ's SecurityException."""
        if isinstance(e, AccessRefused):
            return security_exception(e.text)
        return StompError(e.text, f"{type(e).__name__}: {e.text}\n")

    @staticmethod
    def frame_error_text(message: str) -> str:
        return _ACTIVEMQ_FRAME_ERRORS.get(message, message)

    @staticmethod
    def heart_beat_ms(cx: int, cy: int) -> tuple[int, int]:
        return cy, cx

    @staticmethod
    def new_session_id(conn_id: int) -> str:
        return f"ID:mqemu-{os.getpid()}-{_START_MS}-{next(_session_numbers)}:{conn_id}"

    @staticmethod
    def message_id_prefix(session: "StompSession", sub_id: str, destination: str, show_id: bool) -> str:
        """``<session>:<subscription number>:``, a JMS-style id."""
        return f"{session.session_id}:{session.sub_counter}:"

    @staticmethod
    def duplicate_subscription(sub_id: str | None, destination: str) -> StompError:
        """A SUBSCRIBE whose id is taken (mqemu's text; ActiveMQ 5.17 takes it silently)."""
        key = destination if sub_id is None else sub_id
        return StompError("Duplicated subscription identifier",
                          f"A subscription identified by '{key}' already exists.", close=True)

    @classmethod
    def consumer_options(cls, h: dict[str, str], dest: str) -> tuple[int, Any]:
        """(prefetch, selector): activemq.prefetchSize (default by destination kind) and the
        JMS selector."""
        size: Any = h.get("activemq.prefetchSize")
        if size is None:
            topic = dest.startswith(("/topic/", "topic://", "/temp-topic/"))
            size = cls.DEFAULT_TOPIC_PREFETCH if topic else cls.DEFAULT_QUEUE_PREFETCH
        text = h.get("selector")
        selector = None
        if text:
            from mqemu.broker.selector import compile_selector

            # ActiveMQ: STOMP selectors compare string headers with numbers by converting them.
            selector = compile_selector(text, convert_string_expressions=True)
        return max(0, int(size)), selector

    def delivery_tag(self, command: str, value: str) -> int:
        """The delivery tag at the end of ``ID:<session>:<sub>:<tag>``; -1 when not ours."""
        tail = value.rpartition(":")[2]
        return int(tail) if tail.isdigit() else -1

    @staticmethod
    def nack_requeues(headers: dict[str, str]) -> bool:
        """Never: a NACK is a poison ack, the message goes to the dead-letter queue."""
        return False

    @staticmethod
    def durable_subscription(headers: dict[str, str]) -> bool:
        return "true" in (headers.get("durable"), headers.get("persistent"))

    @staticmethod
    def unknown_delivery(command: str, tag: int) -> BrokerError | StompError:
        return protocol_exception(f"Unexpected {command} received for message-id [null]")

    def remove_named_durable(self, headers: dict[str, str], active_here: bool) -> bool:
        """UNSUBSCRIBE naming a durable subscription removes it (it must not be active:
        UNSUBSCRIBE by id first). True when the frame named one."""
        name = headers.get("activemq.subscriptionName") or headers.get("durable-subscription-name")
        if name is None:
            return False
        self.remove_durable(name, active_here)
        return True

    def shown_destination(self, key: tuple[str, str]) -> str | None:
        """The connection's own temporary queue under the name it gave it."""
        return self.temp_shown.get(key[1]) if key[0] == "" else None


StompFlavour = type[RabbitFlavour] | type[ActiveMQFlavour]

FLAVOURS: dict[str, StompFlavour] = {"rabbitmq": RabbitFlavour, "activemq": ActiveMQFlavour}


def flavour_for(profile: "EngineProfile") -> StompFlavour:
    """The flavour class of the broker's engine."""
    return FLAVOURS[profile.name]


def _whole_seconds(ms: int) -> int:
    if ms <= 0:
        return 0
    return max(1, ms // 1000) * 1000
