"""STOMP headers to and from the core's neutral message properties (sans-IO).

The core keeps a message's properties under the AMQP 0-9-1 basic property names
(``mqemu.broker.message``). A SEND frame's headers are mapped onto them as each engine's
STOMP adapter does, and a MESSAGE frame's headers are built back from them:

- RabbitMQ: the STOMP plugin maps ``content-type``, ``content-encoding``, ``persistent``
  (``delivery_mode`` 2), ``priority``, ``correlation-id``, ``reply-to``, ``expiration``,
  ``amqp-message-id`` (``message_id``), ``timestamp``, ``type``, ``user-id``, ``app-id``;
  every other header becomes an AMQP header (a long string).
- ActiveMQ: the JMS header fields ``persistent``, ``priority`` (default 4), ``expires``
  (absolute ms since the epoch, 0 = never), ``correlation-id``, ``reply-to``, ``type``
  and ``timestamp`` (ms); every other header is a message property.

Header values are escaped here for the MESSAGE frames written straight into a
connection's outbound buffer (STOMP 1.2, "Value Encoding").
"""

from __future__ import annotations

from typing import Any

from mqemu.broker.message import Field, check_expiration

from .frames import escape_10, escape_11, escape_12

# Frame-level headers that never become message properties (STOMP 1.2, "SEND": the
# frame's own headers; the rest are "user defined headers" passed on to receivers).
_FRAME_HEADERS = frozenset({
    "destination", "content-length", "receipt", "transaction", "message-id",
    "subscription", "ack", "redelivered",
})

# RabbitMQ: the plugin passes a SEND's receipt header on as an AMQP header.
_RABBIT_FRAME_HEADERS = _FRAME_HEADERS - {"receipt"}

# RabbitMQ: header -> (property, kind); kind s = string, i = integer, e = an expiration
# (a string, checked as RabbitMQ checks it).
_RABBIT_PROPS = {
    "content-type": ("content_type", "s"),
    "content-encoding": ("content_encoding", "s"),
    "priority": ("priority", "i"),
    "correlation-id": ("correlation_id", "s"),
    "reply-to": ("reply_to", "s"),
    "expiration": ("expiration", "e"),
    "amqp-message-id": ("message_id", "s"),
    "timestamp": ("timestamp", "i"),
    "type": ("type", "s"),
    "user-id": ("user_id", "s"),
    "app-id": ("app_id", "s"),
}
# RabbitMQ: the order the plugin writes property headers on MESSAGE frames.
_RABBIT_OUT = (
    ("content_type", "content-type"), ("content_encoding", "content-encoding"),
    ("delivery_mode", "persistent"), ("priority", "priority"),
    ("correlation_id", "correlation-id"), ("reply_to", "reply-to"),
    ("expiration", "expiration"), ("message_id", "amqp-message-id"),
    ("timestamp", "timestamp"), ("type", "type"), ("user_id", "user-id"), ("app_id", "app-id"),
)
# RabbitMQ: destination prefixes a reply-to may already carry (otherwise /reply-queue/).
_RABBIT_DEST_PREFIXES = ("/exchange", "/topic", "/queue", "/amq/queue", "/reply-queue/")

# ActiveMQ: header -> property for the JMS fields it maps; the rest are properties.
_ACTIVEMQ_PROPS = {
    "content-type": "content_type",
    "correlation-id": "correlation_id",
    "reply-to": "reply_to",
    "type": "type",
}
ACTIVEMQ_DEFAULT_PRIORITY = 4  # JMS default priority

# ActiveMQ: a SEND without content-length is a JMS TextMessage, and its MESSAGE frames carry
# no content-length either (a text body cannot hold a NUL). STOMP's own message field
# (``Message.fields``, kept by the store, so the message keeps its form after a restart).
TEXT = Field("stomp", "text", bool)
TEXT_FIELDS = TEXT.add(None, True)  # shared by every text message published here


def is_true(value: str | None) -> bool:
    """ActiveMQ's boolean headers (Java's ``Boolean.parseBoolean``: any case of true)."""
    return value is not None and value.lower() == "true"


def rabbit_boolean(value: str | None) -> bool | None:
    """RabbitMQ's boolean headers (``rabbit_stomp_frame:boolean_header``): only ``true``,
    ``True``, ``false`` and ``False`` count (Python clients write ``True``/``False``); any
    other value, or none, is None (the header's default applies)."""
    if value == "true" or value == "True":
        return True
    if value == "false" or value == "False":
        return False
    return None


ESCAPERS = {"1.0": escape_10, "1.1": escape_11, "1.2": escape_12}


# -- SEND -> properties ---------------------------------------------------------------------
def rabbit_properties(headers: dict[str, str]) -> dict[str, Any]:
    """RabbitMQ's STOMP plugin mapping of SEND headers to basic properties.

    Raises ValueError for an integer header (priority, timestamp) that is not one.
    """
    props: dict[str, Any] = {}
    user: dict[str, Any] = {}
    expiration = None
    for name, value in headers.items():
        spec = _RABBIT_PROPS.get(name)
        if spec is not None:
            key, kind = spec
            if kind == "i":
                props[key] = int(value)
            else:
                if kind == "e":
                    expiration = value
                props[key] = value
        elif name == "persistent":
            if rabbit_boolean(value):
                props["delivery_mode"] = 2
        elif name not in _RABBIT_FRAME_HEADERS:
            user[name] = value
    if user:
        props["headers"] = user
    if expiration is not None:  # checked once every integer header has been read
        check_expiration(expiration)
    return props




def activemq_properties(headers: dict[str, str], now_ms: int) -> dict[str, Any]:
    """ActiveMQ's mapping of SEND headers to the neutral properties.

    ``expires`` (absolute ms) becomes a relative ``expiration`` (ms), what the core's
    queues honour; the original header stays among the headers so MESSAGE frames show it.
    Raises ValueError for a priority or expires that is not an integer.
    """
    props: dict[str, Any] = {"timestamp": now_ms // 1000}
    user: dict[str, Any] = {"timestamp": str(now_ms)}
    for name, value in headers.items():
        key = _ACTIVEMQ_PROPS.get(name)
        if key is not None:
            props[key] = value
        elif name == "persistent":
            if is_true(value):
                props["delivery_mode"] = 2
        elif name == "priority":
            props["priority"] = max(0, min(9, int(value)))
        elif name == "expires":
            expires = int(value)
            if expires > 0:
                props["expiration"] = str(max(0, expires - now_ms))
                user["expires"] = value
        elif name not in _FRAME_HEADERS and name != "timestamp":
            user[name] = value
    props["headers"] = user
    return props


# -- properties -> MESSAGE headers ----------------------------------------------------------
def _header_value(value: Any) -> str | None:
    """RabbitMQ passes on long-string and integer AMQP headers and drops the rest."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def rabbit_message_headers(props: dict[str, Any]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for key, name in _RABBIT_OUT:
        value = props.get(key)
        if value is None:
            continue
        if key == "delivery_mode":
            if value == 2:
                out.append((name, "true"))
            continue
        if key == "reply_to" and not value.startswith(_RABBIT_DEST_PREFIXES):
            value = "/reply-queue/" + value
        if key == "timestamp" and not isinstance(value, int):
            value = int(value.timestamp()) if hasattr(value, "timestamp") else value
        out.append((name, str(value)))
    headers = props.get("headers")
    if headers:
        for name, value in headers.items():
            text = _header_value(value)
            if text is not None:
                out.append((name, text))
    return out


def activemq_message_headers(props: dict[str, Any]) -> list[tuple[str, str]]:
    headers = props.get("headers") or {}
    ts = headers.get("timestamp")
    if ts is None:
        seconds = props.get("timestamp")
        ts = str(int(seconds) * 1000) if isinstance(seconds, int) else "0"
    expires = headers.get("expires")
    if expires is None:
        exp = props.get("expiration")
        expires = "0"
        if exp is not None and ts != "0" and str(exp).isascii() and str(exp).isdigit():
            try:  # a timestamp header from another protocol may be any value
                expires = str(int(ts) + int(exp))
            except (TypeError, ValueError):
                pass
    priority = props.get("priority")
    out = [("expires", str(expires)), ("timestamp", str(ts)),
           ("priority", str(ACTIVEMQ_DEFAULT_PRIORITY if priority is None else priority))]
    if props.get("delivery_mode") == 2:
        out.append(("persistent", "true"))
    for key, name in (("content_type", "content-type"), ("correlation_id", "correlation-id"),
                      ("reply_to", "reply-to"), ("type", "type")):
        value = props.get(key)
        if value is not None:
            out.append((name, str(value)))
    for name, value in headers.items():
        if name in ("timestamp", "expires"):
            continue
        text = _header_value(value)
        if text is not None:
            out.append((name, text))
    return out


_RABBIT_OUT_NAMES = dict(_RABBIT_OUT)


def rabbit_header_block(props: dict[str, Any], esc: Any) -> bytes:
    """The property and user headers of a MESSAGE frame, escaped, in one pass over the
    (usually few) properties a message has; the same headers as rabbit_message_headers."""
    lines = []
    names = _RABBIT_OUT_NAMES
    for key, value in props.items():
        if value is None:
            continue
        if key == "headers":
            for name, v in value.items():
                text = v if v.__class__ is str else _header_value(v)
                if text is not None:
                    lines.append(f"{esc(name)}:{esc(text)}\n")
            continue
        name = names.get(key)
        if name is None:
            continue
        if key == "delivery_mode":
            if value == 2:
                lines.append("persistent:true\n")
            continue
        if key == "reply_to" and not value.startswith(_RABBIT_DEST_PREFIXES):
            value = "/reply-queue/" + value
        elif key == "timestamp" and not isinstance(value, int):
            value = int(value.timestamp()) if hasattr(value, "timestamp") else value
        lines.append(f"{name}:{esc(str(value))}\n")
    text = "".join(lines)
    try:
        return text.encode("utf-8")  # the common case, without a call per message
    except UnicodeEncodeError:
        return to_utf8(text)


def encode_header_block(pairs: list[tuple[str, str]], version: str) -> bytes:
    """``name:value\\n`` lines, escaped for version (names never repeat a frame header)."""
    if not pairs:
        return b""
    esc = ESCAPERS[version]
    return to_utf8("".join(f"{esc(n)}:{esc(v)}\n" for n, v in pairs))


def to_utf8(text: str) -> bytes:
    """Header text as UTF-8 (STOMP 1.2, "Value Encoding"). Text decoded from another
    protocol's bytes that were not UTF-8 (an AMQP header name, a routing key) holds them
    as lone surrogates: each such byte becomes U+FFFD rather than failing the delivery."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        try:
            return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace").encode("utf-8")
        except UnicodeEncodeError:  # a surrogate that stands for no byte
            return text.encode("utf-8", "replace")


# -- destinations on MESSAGE frames ---------------------------------------------------------
def _escape_dest(text: str) -> str:
    # RabbitMQ percent-encodes '/', '%' and bytes outside printable ASCII in destinations.
    if text.isascii() and text.isprintable() and "/" not in text and "%" not in text:
        return text
    out = []
    for ch in text:
        if ch == "/":
            out.append("%2F")
        elif ch == "%":
            out.append("%25")
        elif 32 <= ord(ch) <= 127:
            out.append(ch)
        else:  # a byte that was not UTF-8 (kept as a lone surrogate) is escaped as itself
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8", "surrogateescape"))
    return "".join(out)


def rabbit_destination(exchange: str, routing_key: str) -> str:
    """The ``destination`` header RabbitMQ writes for a message's exchange and key."""
    if exchange == "":
        return "/queue/" + _escape_dest(routing_key)
    if exchange == "amq.topic":
        return "/topic/" + _escape_dest(routing_key)
    if routing_key == "":
        return "/exchange/" + _escape_dest(exchange)
    return f"/exchange/{_escape_dest(exchange)}/{_escape_dest(routing_key)}"


def activemq_destination(exchange: str, routing_key: str) -> str:
    if exchange == "":
        return "/queue/" + routing_key
    return "/topic/" + routing_key
