"""The AMQP 0-9-1 method table, written once as data, and the classes built from it.

Source: the AMQP 0-9-1 specification (§1 "classes and methods", the XML
``amqp0-9-1.xml``) plus RabbitMQ's extensions as listed in RabbitMQ's
``amqp-rabbitmq-0.9.1.json``:

* RabbitMQ extension: exchange.bind/bind-ok (40,30/31), exchange.unbind/
  unbind-ok (40,40/51), basic.nack (60,120), confirm.select/select-ok
  (85,10/11), connection.blocked/unblocked (10,60/61),
  connection.update-secret/-ok (10,70/71).
* access.request (30,10/11) is deprecated in 0-9-1 but old clients still send
  it; RabbitMQ answers it, so we decode it.

Every method becomes a frozen, slotted dataclass named CamelCase
(``basic.publish`` -> ``BasicPublish``) whose fields are the spec's argument
names with ``-`` -> ``_`` (``nowait`` becomes ``no_wait``; basic.qos's
``global`` is a Python keyword and becomes ``global_``). Reserved arguments
(``reserved-1``/``ticket``, ``capabilities``, ``insist``, ``known-hosts``,
``out-of-band``, ``channel-id``, ``cluster-id``) are not fields: they are
written as zero/empty and skipped when read.

Class attributes: CLASS_ID, METHOD_ID, INDEX (= CLASS_ID << 16 | METHOD_ID),
NAME, SYNCHRONOUS, HAS_CONTENT, FIELDS (tuple of (name, amqp_type, reserved)).

At import :mod:`.methodgen` compiles one straight-line encoder and decoder per
method; they are published here as ``ENCODERS`` / ``DECODERS`` keyed by INDEX.
"""

from __future__ import annotations

import dataclasses
import keyword
from typing import Any

from . import methodgen

__all__ = [
    "METHODS", "CLASS_NAMES", "ENCODERS", "DECODERS", "METHOD_TABLE",
    "method_name", "method_class",
]

# ---------------------------------------------------------------------------
# The table. One line per method:
#   (method_id, name, flags, "field:type field:type ...")
# flags: "S" synchronous (expects a reply), "C" carries content.
# A field name starting with "!" is reserved (not a dataclass field).
# Types are the spec's primitive domains: octet short long longlong bit
# shortstr longstr timestamp table (§4.2.5).

CLASS_NAMES: dict[int, str] = {
    10: "connection",
    20: "channel",
    30: "access",
    40: "exchange",
    50: "queue",
    60: "basic",
    85: "confirm",  # RabbitMQ extension
    90: "tx",
}

METHOD_TABLE: dict[int, list[tuple[int, str, str, str]]] = {
    10: [  # connection, §1.4.2
        (10, "start", "S", "version-major:octet version-minor:octet server-properties:table "
                           "mechanisms:longstr locales:longstr"),
        (11, "start-ok", "", "client-properties:table mechanism:shortstr response:longstr locale:shortstr"),
        (20, "secure", "S", "challenge:longstr"),
        (21, "secure-ok", "", "response:longstr"),
        (30, "tune", "S", "channel-max:short frame-max:long heartbeat:short"),
        (31, "tune-ok", "", "channel-max:short frame-max:long heartbeat:short"),
        (40, "open", "S", "virtual-host:shortstr !capabilities:shortstr !insist:bit"),
        (41, "open-ok", "", "!known-hosts:shortstr"),
        (50, "close", "S", "reply-code:short reply-text:shortstr class-id:short method-id:short"),
        (51, "close-ok", "", ""),
        (60, "blocked", "", "reason:shortstr"),  # RabbitMQ extension
        (61, "unblocked", "", ""),  # RabbitMQ extension
        (70, "update-secret", "S", "new-secret:longstr reason:shortstr"),  # RabbitMQ extension
        (71, "update-secret-ok", "", ""),  # RabbitMQ extension
    ],
    20: [  # channel, §1.5.2
        (10, "open", "S", "!out-of-band:shortstr"),
        (11, "open-ok", "", "!channel-id:longstr"),
        (20, "flow", "S", "active:bit"),
        (21, "flow-ok", "", "active:bit"),
        (40, "close", "S", "reply-code:short reply-text:shortstr class-id:short method-id:short"),
        (41, "close-ok", "", ""),
    ],
    30: [  # access (removed from the 0-9-1 text, kept for old clients)
        (10, "request", "S", "realm:shortstr exclusive:bit passive:bit active:bit write:bit read:bit"),
        (11, "request-ok", "", "!ticket:short"),
    ],
    40: [  # exchange, §1.6.2
        (10, "declare", "S", "!ticket:short exchange:shortstr type:shortstr passive:bit durable:bit "
                             "auto-delete:bit internal:bit no-wait:bit arguments:table"),
        (11, "declare-ok", "", ""),
        (20, "delete", "S", "!ticket:short exchange:shortstr if-unused:bit no-wait:bit"),
        (21, "delete-ok", "", ""),
        (30, "bind", "S", "!ticket:short destination:shortstr source:shortstr routing-key:shortstr "
                          "no-wait:bit arguments:table"),  # RabbitMQ extension
        (31, "bind-ok", "", ""),  # RabbitMQ extension
        (40, "unbind", "S", "!ticket:short destination:shortstr source:shortstr routing-key:shortstr "
                            "no-wait:bit arguments:table"),  # RabbitMQ extension
        (51, "unbind-ok", "", ""),  # RabbitMQ extension (sic: 51, not 41)
    ],
    50: [  # queue, §1.7.2
        (10, "declare", "S", "!ticket:short queue:shortstr passive:bit durable:bit exclusive:bit "
                             "auto-delete:bit no-wait:bit arguments:table"),
        (11, "declare-ok", "", "queue:shortstr message-count:long consumer-count:long"),
        (20, "bind", "S", "!ticket:short queue:shortstr exchange:shortstr routing-key:shortstr "
                          "no-wait:bit arguments:table"),
        (21, "bind-ok", "", ""),
        (30, "purge", "S", "!ticket:short queue:shortstr no-wait:bit"),
        (31, "purge-ok", "", "message-count:long"),
        (40, "delete", "S", "!ticket:short queue:shortstr if-unused:bit if-empty:bit no-wait:bit"),
        (41, "delete-ok", "", "message-count:long"),
        (50, "unbind", "S", "!ticket:short queue:shortstr exchange:shortstr routing-key:shortstr "
                            "arguments:table"),
        (51, "unbind-ok", "", ""),
    ],
    60: [  # basic, §1.8.2
        (10, "qos", "S", "prefetch-size:long prefetch-count:short global:bit"),
        (11, "qos-ok", "", ""),
        (20, "consume", "S", "!ticket:short queue:shortstr consumer-tag:shortstr no-local:bit "
                             "no-ack:bit exclusive:bit no-wait:bit arguments:table"),
        (21, "consume-ok", "", "consumer-tag:shortstr"),
        (30, "cancel", "S", "consumer-tag:shortstr no-wait:bit"),
        (31, "cancel-ok", "", "consumer-tag:shortstr"),
        (40, "publish", "C", "!ticket:short exchange:shortstr routing-key:shortstr mandatory:bit immediate:bit"),
        (50, "return", "C", "reply-code:short reply-text:shortstr exchange:shortstr routing-key:shortstr"),
        (60, "deliver", "C", "consumer-tag:shortstr delivery-tag:longlong redelivered:bit "
                             "exchange:shortstr routing-key:shortstr"),
        (70, "get", "S", "!ticket:short queue:shortstr no-ack:bit"),
        (71, "get-ok", "C", "delivery-tag:longlong redelivered:bit exchange:shortstr routing-key:shortstr "
                            "message-count:long"),
        (72, "get-empty", "", "!cluster-id:shortstr"),
        (80, "ack", "", "delivery-tag:longlong multiple:bit"),
        (90, "reject", "", "delivery-tag:longlong requeue:bit"),
        (100, "recover-async", "", "requeue:bit"),
        (110, "recover", "S", "requeue:bit"),
        (111, "recover-ok", "", ""),
        (120, "nack", "", "delivery-tag:longlong multiple:bit requeue:bit"),  # RabbitMQ extension
    ],
    85: [  # confirm, RabbitMQ extension
        (10, "select", "S", "no-wait:bit"),
        (11, "select-ok", "", ""),
    ],
    90: [  # tx, §1.9.2
        (10, "select", "S", ""),
        (11, "select-ok", "", ""),
        (20, "commit", "S", ""),
        (21, "commit-ok", "", ""),
        (30, "rollback", "S", ""),
        (31, "rollback-ok", "", ""),
    ],
}

# Python type and default per AMQP type. longstr fields are bytes.
_PY_TYPES: dict[str, tuple[type, Any]] = {
    "octet": (int, 0),
    "short": (int, 0),
    "long": (int, 0),
    "longlong": (int, 0),
    "timestamp": (int, 0),
    "bit": (bool, False),
    "shortstr": (str, ""),
    "longstr": (bytes, b""),
    "table": (dict, None),
}

METHODS: dict[int, type] = {}
ENCODERS: dict[int, Any] = {}
DECODERS: dict[int, Any] = {}


def _camel(dashed: str) -> str:
    return "".join(part.capitalize() for part in dashed.split("-"))


def _build() -> None:
    g = globals()
    for class_id, methods in METHOD_TABLE.items():
        class_name = CLASS_NAMES[class_id]
        for method_id, mname, flags, spec in methods:
            fields: list[tuple[str, str, bool]] = []
            for item in spec.split():
                fname, ftype = item.split(":")
                reserved = fname.startswith("!")
                fname = fname.lstrip("!").replace("-", "_")
                if keyword.iskeyword(fname):  # basic.qos "global" -> global_ (PEP 8)
                    fname += "_"
                fields.append((fname, ftype, reserved))
            dc_fields: list[tuple[str, Any, Any]] = []
            for fname, ftype, reserved in fields:
                if reserved:
                    continue
                py, default = _PY_TYPES[ftype]
                if ftype == "table":
                    dc_fields.append((fname, py, dataclasses.field(default_factory=dict)))
                else:
                    dc_fields.append((fname, py, dataclasses.field(default=default)))
            full = f"{class_name}.{mname}"
            index = class_id << 16 | method_id
            ns = {
                "CLASS_ID": class_id,
                "METHOD_ID": method_id,
                "INDEX": index,
                "NAME": full,
                "SYNCHRONOUS": "S" in flags,
                "HAS_CONTENT": "C" in flags,
                "FIELDS": tuple(fields),
            }
            cls_name = _camel(class_name) + _camel(mname)
            cls = dataclasses.make_dataclass(cls_name, dc_fields, namespace=ns, frozen=True, slots=True)
            cls.__module__ = __name__
            cls.__doc__ = f"AMQP 0-9-1 method {full} ({class_id}, {method_id})."
            METHODS[index] = cls
            ENCODERS[index], DECODERS[index] = methodgen.build(cls, tuple(fields))
            g[cls_name] = cls
            __all__.append(cls_name)


_build()


def method_class(class_id: int, method_id: int) -> type | None:
    """The method class for (class_id, method_id), or None if unknown."""
    return METHODS.get(class_id << 16 | method_id)


def method_name(class_id: int, method_id: int) -> str:
    """Dotted name such as ``"basic.publish"``; unknown ids give e.g. ``"basic.<999>"``."""
    cls = METHODS.get(class_id << 16 | method_id)
    if cls is not None:
        return cls.NAME
    return f"{CLASS_NAMES.get(class_id, f'<class {class_id}>')}.<method {method_id}>"
