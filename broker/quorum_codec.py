"""Bytes for a quorum queue's log: its machine's commands, batches of them, and the whole
machine state for a snapshot.

A command is one byte (its kind), its time (``now``, an IEEE double, big-endian as every
number here) and its arguments:

- ``enqueue``: 1 | now | the message as ``message_wire.dump_message`` writes it (exchange,
  routing key, properties, routing keys and fields as plain values, then the body)
- ``consumer_added``: 2 | now | u16 tag length | i32 prefetch | i16 priority | u8 no-ack | tag
- ``consumer_removed``, ``cancel``: 3, 10 | now | u16 tag length | tag
- ``settle``, ``requeue``, ``reject``: 4, 5, 6 | now | u16 tag length | u32 count | tag |
  count u64 ids
- ``expire``: 7 | now
- ``take``: 8 | now | u16 holder length | u64 id | u8 no-ack | holder
- ``purge``: 9 | now
- ``configure``: 11 | now | a ``message_wire`` value ``[ttl, max_length, max_length_bytes,
  overflow, delivery_limit]`` (ints or None, overflow a string)

A batch (one log entry carrying every command of one scheduler pass) is the commands each
behind a u32 length. A snapshot is one ``message_wire`` value (nothing is unpickled: a
snapshot travels to a lagging peer)::

    [1, settings, next_id, ready ids, messages, consumers, order, rr, timer]

each message ``[id, message bytes (dump_message), expires_at, delivery_count, redelivered,
stored]``, each consumer ``[tag, prefetch, priority, no_ack, held ids]``. Bytes that are not
a command or a snapshot raise ``CommandError``.
"""

from __future__ import annotations

import struct
from collections import deque
from typing import Any

from .message import Message
from .message_wire import VERSION as WIRE_VERSION
from .message_wire import WireError, dump_message, dump_value, load_message, load_value
from .queue_machine import MachineConsumer, MachineMessage, QueueMachine


class CommandError(ValueError):
    """Bytes that are not a command (a bad kind, a short or long buffer)."""


_ENQ = struct.Struct(">Bd")
_ADD = struct.Struct(">BdHihB")
_TAG = struct.Struct(">BdH")
_IDS = struct.Struct(">BdHI")
_NOW = struct.Struct(">Bd")
_TAKE = struct.Struct(">BdHQB")
_LEN = struct.Struct(">I")

ENQUEUE, CONSUMER_ADDED, CONSUMER_REMOVED, SETTLE, REQUEUE, REJECT, EXPIRE, TAKE, PURGE, CANCEL, CONFIGURE = range(1, 12)
_ID_KINDS = {"settle": SETTLE, "requeue": REQUEUE, "reject": REJECT}
_ID_NAMES = {v: k for k, v in _ID_KINDS.items()}


def encode_enqueue(message: Message, now: float) -> bytes:
    return _ENQ.pack(ENQUEUE, now) + dump_message(message)


_COUNT = struct.Struct(">I")
_COUNT_AT = _IDS.size - 4  # where an id command's count sits


def encode_ids(name: str, tag: str, ids: list[int], now: float) -> bytearray:
    """A ``settle``, ``requeue`` or ``reject`` as a ``bytearray`` that ``add_ids`` can grow
    while it is still in the replicator's open batch."""
    t = tag.encode()
    buf = bytearray(_IDS.pack(_ID_KINDS[name], now, len(t), len(ids)))
    buf += t
    buf += struct.pack(f">{len(ids)}Q", *ids)
    return buf


def add_ids(buf: bytearray, ids: list[int]) -> None:
    """More ids at the end of ``encode_ids``'s command (its count follows)."""
    (n,) = _COUNT.unpack_from(buf, _COUNT_AT)
    _COUNT.pack_into(buf, _COUNT_AT, n + len(ids))
    buf += struct.pack(f">{len(ids)}Q", *ids)


def encode(command: tuple) -> bytes:
    """A command in the machine's logged form ``(name, *args)`` as bytes."""
    name = command[0]
    if name == "enqueue":
        return encode_enqueue(command[1], command[2])
    if name in _ID_KINDS:
        _, tag, ids, now = command
        t = tag.encode()
        ids = list(ids)
        return b"".join((_IDS.pack(_ID_KINDS[name], now, len(t), len(ids)), t, struct.pack(f">{len(ids)}Q", *ids)))
    if name == "consumer_added":
        _, tag, prefetch, now, *rest = command
        priority = rest[0] if rest else 0
        no_ack = rest[1] if len(rest) > 1 else False
        t = tag.encode()
        return _ADD.pack(CONSUMER_ADDED, now, len(t), prefetch, priority, no_ack) + t
    if name in ("consumer_removed", "cancel"):
        t = command[1].encode()
        return _TAG.pack(CONSUMER_REMOVED if name == "consumer_removed" else CANCEL, command[2], len(t)) + t
    if name == "take":
        _, holder, mid, no_ack, now = command
        t = holder.encode()
        return _TAKE.pack(TAKE, now, len(t), mid, no_ack) + t
    if name == "expire":
        return _NOW.pack(EXPIRE, command[1])
    if name == "purge":
        return _NOW.pack(PURGE, command[1])
    if name == "configure":
        return _NOW.pack(CONFIGURE, command[6]) + dump_value(list(command[1:6]))
    raise CommandError(f"unknown queue command {name!r}")


def decode(data: bytes | memoryview) -> tuple:
    """The logged form of one command (raises CommandError)."""
    try:
        return _decode(memoryview(data))
    except (struct.error, UnicodeDecodeError, WireError) as e:
        raise CommandError(f"bad queue command: {e}") from None


def _decode(b: memoryview) -> tuple:
    if not b:
        raise CommandError("empty queue command")
    kind = b[0]
    if kind == ENQUEUE:
        _, now = _ENQ.unpack_from(b)
        return ("enqueue", _load_enqueue(bytes(b), _ENQ.size), now)
    if kind in _ID_NAMES:
        _, now, lt, n = _IDS.unpack_from(b)
        at = _IDS.size + lt
        if at + 8 * n != len(b):
            raise CommandError(f"{_ID_NAMES[kind]} of {len(b)} bytes, {at + 8 * n} expected")
        return (_ID_NAMES[kind], str(b[_IDS.size:at], "utf-8"), list(struct.unpack_from(f">{n}Q", b, at)), now)
    if kind == CONSUMER_ADDED:
        _, now, lt, prefetch, priority, no_ack = _ADD.unpack_from(b)
        _exact(b, _ADD.size + lt)
        return ("consumer_added", str(b[_ADD.size:], "utf-8"), prefetch, now, priority, bool(no_ack))
    if kind in (CONSUMER_REMOVED, CANCEL):
        _, now, lt = _TAG.unpack_from(b)
        _exact(b, _TAG.size + lt)
        return ("consumer_removed" if kind == CONSUMER_REMOVED else "cancel", str(b[_TAG.size:], "utf-8"), now)
    if kind == TAKE:
        _, now, lt, mid, no_ack = _TAKE.unpack_from(b)
        _exact(b, _TAKE.size + lt)
        return ("take", str(b[_TAKE.size:], "utf-8"), mid, bool(no_ack), now)
    if kind in (EXPIRE, PURGE):
        _exact(b, _NOW.size)
        return ("expire" if kind == EXPIRE else "purge", _NOW.unpack_from(b)[1])
    if kind == CONFIGURE:
        _, now = _NOW.unpack_from(b)
        limits = load_value(bytes(b[_NOW.size:]))
        if (limits.__class__ is not list or len(limits) != 5 or limits[3].__class__ is not str
                or any(v is not None and v.__class__ is not int for i, v in enumerate(limits) if i != 3)):
            raise CommandError("configure: [ttl, max_length, max_length_bytes, overflow, delivery_limit] expected")
        return ("configure", *limits, now)
    raise CommandError(f"unknown queue command kind {kind}")


_U16 = struct.Struct(">H")
# A message's meta bytes -> its decoded (properties, routing_keys, fields): the values are
# shared by the messages that carry the same meta, as the store's loader shares them.
_METAS: dict[bytes, tuple] = {}
_METAS_MAX = 4096


def _load_enqueue(b: bytes, at: int) -> Message:
    """``message_wire.load_message`` of ``b[at:]``, the meta's decoding cached by its bytes
    (a follower decodes every enqueue; a publisher's messages mostly share their meta)."""
    end = len(b)
    if at + 3 <= end and b[at] == WIRE_VERSION:
        (lex,) = _U16.unpack_from(b, at + 1)
        p = at + 3 + lex
        if p + 2 <= end:
            (lrk,) = _U16.unpack_from(b, p)
            q = p + 2 + lrk
            if q + 4 <= end:
                (lmeta,) = _LEN.unpack_from(b, q)
                m1 = q + 4 + lmeta
                if m1 <= end:
                    meta = b[q + 4:m1]
                    got = _METAS.get(meta)
                    if got is not None:
                        msg = Message(str(b[at + 3:p], "utf-8"), str(b[p + 2:q], "utf-8"), b[m1:], got[0],
                                      fields=got[2])
                        msg.routing_keys = got[1]
                        return msg
                    msg = load_message(b[at:])  # checks everything
                    if len(_METAS) >= _METAS_MAX:
                        _METAS.clear()
                    _METAS[meta] = (msg.properties, msg.routing_keys, msg.fields)
                    return msg
    return load_message(b[at:])  # its error


def _exact(b: memoryview, size: int) -> None:
    if len(b) != size:
        raise CommandError(f"queue command of {len(b)} bytes, {size} expected")


def join(commands: "list[bytes] | list[bytes | bytearray]") -> bytes:
    """Encoded commands as one batch (one log entry)."""
    if len(commands) == 1:
        c = commands[0]
        return _LEN.pack(len(c)) + c
    return b"".join(_LEN.pack(len(c)) + c for c in commands)


def split(batch: bytes) -> list[bytes]:
    """The commands of a batch (raises CommandError if it does not divide exactly). Each is
    its own ``bytes``: a leader compares its own commands with what it proposed at C speed."""
    b = bytes(batch)
    out = []
    at, end = 0, len(b)
    unpack = _LEN.unpack_from
    while at < end:
        if at + 4 > end:
            raise CommandError("a torn command length")
        (n,) = unpack(b, at)
        at += 4
        if at + n > end:
            raise CommandError("a torn command")
        out.append(b[at:at + n])
        at += n
    return out


# -- the whole machine (snapshots) -----------------------------------------------------------
def dump(m: QueueMachine) -> bytes:
    messages = [[mid, dump_message(x.message), x.expires_at, x.delivery_count, x.redelivered, x.stored]
                for mid, x in m.messages.items()]
    consumers = [[c.tag, c.prefetch, c.priority, c.no_ack, list(c.checked_out)] for c in m.consumers.values()]
    return dump_value([1, list(m.settings()), m.next_id, list(m.ready), messages, consumers, list(m.order), m.rr,
                       m.timer])


def load(data: bytes, log: Any = None) -> QueueMachine:
    """The machine a snapshot holds; raises CommandError for bytes that are not one."""
    try:
        return _load(data, log)
    except (WireError, TypeError, ValueError, KeyError, AttributeError) as e:
        raise CommandError(f"bad queue snapshot: {e}") from None


def _load(data: bytes, log: Any) -> QueueMachine:
    value = load_value(data)
    if value.__class__ is not list or len(value) != 9:
        raise CommandError("a queue snapshot is a list of 9 values")
    version, settings, next_id, ready, messages, consumers, order, rr, timer = value
    if version != 1:
        raise CommandError(f"queue snapshot version {version}")
    if settings.__class__ is not list or len(settings) != 7:
        raise CommandError("a queue snapshot's settings are 7 values")
    m = QueueMachine.from_settings(tuple(settings), log)
    m.next_id = _int(next_id)
    for mid, wire, expires_at, count, redelivered, stored in messages:
        x = MachineMessage(load_message(wire), expires_at, bool(stored))
        x.delivery_count = _int(count)
        x.redelivered = bool(redelivered)
        m.messages[_int(mid)] = x
    m.ready = deque(_int(i) for i in ready)
    m.bytes_ready = sum(m.messages[mid].size for mid in m.ready)
    for tag, prefetch, priority, no_ack, held in consumers:
        if tag.__class__ is not str:
            raise CommandError("a consumer tag that is not a str")
        c = m.consumers[tag] = MachineConsumer(tag, _int(prefetch), _int(priority), bool(no_ack))
        c.checked_out = dict.fromkeys(_int(i) for i in held)
        if priority:
            m.priorities += 1
    m.order = [str(t) for t in order]
    m.rr = _int(rr)
    m.timer = timer if timer is None else float(timer)
    return m


def _int(v: Any) -> int:
    if v.__class__ is not int:
        raise CommandError(f"{v!r} where a number was expected")
    return v
