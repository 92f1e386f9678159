"""The records of the link channel ``queues``: a node's stand-ins talking to the home node of
their classic queues (``remote.py``), sans-IO.

A payload is one ``broker.message_wire`` value: a list of records, each a list whose first
item names it. What a stand-in's node sends the queue's home node (lower case)::

    ["p", batch, [[vhost, queue, [message, ...]], ...]]   publishes (messages: message_wire bytes)
    ["c", vhost, queue, tag, prefetch, no_ack, exclusive, priority, arguments]   a consumer
    ["x", tag]                       cancel that consumer
    ["a", [id, ...]]                 ack deliveries
    ["r", [id, ...], requeue]        reject (requeue true: back to the queue, redelivered)
    ["k", tag, n]                    n more deliveries for a no-ack consumer (its window)
    ["g", vhost, queue, get, no_ack] basic.get
    ["u", vhost, queue]              purge

and what the home node answers (upper case, and ``n``)::

    ["P", batch, [part, i, ...]]     the batch is safe here, but for the messages it refused
                                     (each by its part's place in the batch and its own in the part)
    ["D", tag, [id, redelivered, message, ...]]   deliveries to a consumer (three items each)
    ["O", tag, refusal]              the consumer is registered (refusal "") or refused (the
                                     text of RabbitMQ's 403: another consumer has exclusive use)
    ["C", tag]                       the home cancelled that consumer (its queue went)
    ["G", get, id, redelivered, message, ready]   basic.get's answer (id None: empty)
    ["n", vhost, queue, ready, consumers]         the queue's counts

Ids number a node's deliveries to one peer (one counter per link, so an ack names no
consumer). ``decode`` checks every record's shape and raises ``RemoteError`` (a
``ValueError``) for anything else: the link that carried it is closed.
"""

from __future__ import annotations

from typing import Any

from mqemu.broker.message_wire import WireError, dump_value, load_value


class RemoteError(ValueError):
    """A payload of the ``queues`` channel that is not a list of well-formed records."""


_INT, _STR, _BOOL, _LIST, _DICT, _BYTES = int, str, bool, list, dict, bytes
_OPT_INT = (int, type(None))
_OPT_BYTES = (bytes, type(None))

# the types of each record's items after its kind
SHAPES: dict[str, tuple[Any, ...]] = {
    "p": (_INT, _LIST),
    "c": (_STR, _STR, _STR, _INT, _BOOL, _BOOL, _INT, _DICT),
    "x": (_STR,),
    "a": (_LIST,),
    "r": (_LIST, _BOOL),
    "k": (_STR, _INT),
    "g": (_STR, _STR, _INT, _BOOL),
    "u": (_STR, _STR),
    "P": (_INT, _LIST),
    "D": (_STR, _LIST),
    "C": (_STR,),
    "O": (_STR, _STR),
    "G": (_INT, _OPT_INT, _BOOL, _OPT_BYTES, _INT),
    "n": (_STR, _STR, _INT, _INT),
}


def encode(records: list[list[Any]]) -> bytes:
    return dump_value(records)


def _ok(v: Any, t: Any) -> bool:
    if t is _INT:
        return v.__class__ is int
    if isinstance(t, tuple):
        return any(v.__class__ is x for x in t)
    return v.__class__ is t


def decode(payload: bytes) -> list[list[Any]]:
    """The records of a payload, each checked against ``SHAPES``; raises RemoteError."""
    try:
        records = load_value(payload)
    except WireError as e:
        raise RemoteError(f"not a value: {e}") from None
    if records.__class__ is not list:
        raise RemoteError("a payload is a list of records")
    for r in records:
        if r.__class__ is not list or not r or r[0].__class__ is not str:
            raise RemoteError(f"a record is a list that starts with its kind, not {r!r:.80}")
        shape = SHAPES.get(r[0])
        if shape is None:
            raise RemoteError(f"unknown record kind {r[0]!r}")
        if len(r) != len(shape) + 1 or not all(_ok(v, t) for v, t in zip(r[1:], shape)):
            raise RemoteError(f"a {r[0]!r} record of the wrong shape: {r!r:.120}")
        kind = r[0]
        if kind == "p":
            for part in r[2]:
                if part.__class__ is not list or len(part) != 3 or part[0].__class__ is not str \
                        or part[1].__class__ is not str or part[2].__class__ is not list \
                        or any(m.__class__ is not bytes for m in part[2]):
                    raise RemoteError("a publish part is [vhost, queue, [message bytes, ...]]")
        elif kind in ("a", "r", "P"):
            ids = r[2] if kind == "P" else r[1]
            if any(i.__class__ is not int for i in ids) or (kind == "P" and len(ids) % 2):
                raise RemoteError(f"the ids of an {kind!r} record are ints")
        elif kind == "D":
            items = r[2]
            if len(items) % 3 or any(items[i].__class__ is not int or items[i + 1].__class__ is not bool
                                     or items[i + 2].__class__ is not bytes for i in range(0, len(items), 3)):
                raise RemoteError("deliveries are [id, redelivered, message bytes, ...]")
    return records
