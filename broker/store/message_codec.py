"""A message's metadata as one blob of a store row (``messages.properties`` in
``mqemu.sqlite``, ``pages.properties`` in the page file).

The blob is a pickle (see ``sqlite_schema``: the file is the node's own) of a tuple:

- ``(properties, routing_keys)``: every message of a schema 1 file, and a message without
  protocol fields in a schema 2 file;
- ``(properties, routing_keys, fields)``: a message with protocol fields
  (``Message.fields``: a dict of ``str``/``int``/``bool`` keyed ``"<protocol>.<name>"``),
  schema 2.

A message without fields is written exactly as schema 1 wrote it, so most blobs (and the
loaders' cache of decoded blobs) are unchanged; both forms are read.
"""

from __future__ import annotations

import pickle
from typing import Any

from ..message import Message

Meta = tuple[dict[str, Any], "list[str] | None", "dict[str, Any] | None"]


def dump_meta(message: Message) -> bytes:
    fields = message.fields
    if fields:
        value: tuple = (message.properties, message.routing_keys, dict(fields))
    else:
        value = (message.properties, message.routing_keys)
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def load_meta(blob: bytes) -> Meta:
    """(properties, routing_keys, fields or None) from a blob of either form."""
    value = pickle.loads(blob)
    if len(value) == 2:
        return value[0], value[1], None
    return value[0], value[1], value[2]


def make_message(exchange: str, routing_key: str, body: bytes, meta: Meta) -> Message:
    properties, routing_keys, fields = meta
    msg = Message(exchange, routing_key, body, properties, fields=fields)
    msg.routing_keys = routing_keys
    return msg
