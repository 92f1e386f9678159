"""Queue arguments (``x-...``): parsed and checked once, when a queue is declared.

Types and texts follow RabbitMQ 3.x, which refuses a bad argument with 406
PRECONDITION_FAILED on the declaring channel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import PreconditionFailed

OVERFLOW_MODES = ("drop-head", "reject-publish", "reject-publish-dlx")


def amqp_type_name(v: Any) -> str:
    """The field-table type RabbitMQ names in its error texts for a decoded value."""
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "signedint" if -(1 << 31) <= v < (1 << 31) else "long"
    if isinstance(v, str):
        return "longstr"
    if isinstance(v, (bytes, bytearray, memoryview)):
        return "binary"
    if isinstance(v, float):
        return "double"
    if isinstance(v, dict):
        return "table"
    if isinstance(v, (list, tuple)):
        return "array"
    if v is None:
        return "void"
    return type(v).__name__.lower()
QUEUE_TYPES = ("classic", "quorum", "stream")
QUEUE_MODES = ("default", "lazy")


@dataclass(frozen=True, slots=True)
class QueueSettings:
    message_ttl: int | None = None  # ms
    expires: int | None = None  # ms
    max_length: int | None = None
    max_length_bytes: int | None = None
    overflow: str = "drop-head"
    dead_letter_exchange: str | None = None
    dead_letter_routing_key: str | None = None
    max_priority: int = 0
    single_active_consumer: bool = False
    queue_type: str = "classic"
    delivery_limit: int | None = None
    queue_mode: str = "default"  # "lazy": bodies go to disk from the first message (paging)

    @property
    def quorum(self) -> bool:
        return self.queue_type == "quorum"

    @classmethod
    def parse(cls, queue: str, vhost: str, args: dict[str, Any]) -> "QueueSettings":
        """Raises PreconditionFailed for a value of the wrong type or range."""

        def bad(key: str, why: str) -> PreconditionFailed:
            return PreconditionFailed(f"invalid arg '{key}' for queue '{queue}' in vhost '{vhost}': {why}")

        def integer(key: str, minimum: int) -> int | None:
            if key not in args:
                return None
            v = args[key]
            if isinstance(v, bool) or not isinstance(v, int):
                raise bad(key, f'"expected integer, got {amqp_type_name(v)}"')
            if v < minimum:
                raise bad(key, f"{{value_negative,{v}}}" if v < 0 else f"{{value_zero,{v}}}")
            return v

        def string(key: str) -> str | None:
            v = args.get(key)
            if v is None:
                return None
            if isinstance(v, bytes):
                v = v.decode("utf-8", "replace")
            if not isinstance(v, str):
                raise PreconditionFailed(f"invalid type '{amqp_type_name(v)}' for arg '{key}' in queue "
                                         f"'{queue}' in vhost '{vhost}'")
            return v

        overflow = string("x-overflow") or "drop-head"
        if overflow not in OVERFLOW_MODES:
            raise bad("x-overflow", "invalid_overflow")
        qtype = string("x-queue-type") or "classic"
        if qtype not in QUEUE_TYPES:
            raise bad("x-queue-type", f"\"unsupported queue type '{qtype}'\"")
        priority = integer("x-max-priority", 0) or 0
        if priority > 255:
            raise bad("x-max-priority", f"{{max_value_exceeded,{priority}}}")
        sac = args.get("x-single-active-consumer", False)
        if not isinstance(sac, bool):
            raise bad("x-single-active-consumer", f"{{unacceptable_type,{amqp_type_name(sac)}}}")
        limit = integer("x-delivery-limit", 0)
        mode = string("x-queue-mode") or "default"
        if mode not in QUEUE_MODES:
            raise bad("x-queue-mode", f'{{unacceptable_value,<<"{mode}">>}}')
        if "x-dead-letter-routing-key" in args and "x-dead-letter-exchange" not in args:
            raise bad("x-dead-letter-routing-key", "routing_key_but_no_dlx_defined")
        return cls(
            message_ttl=integer("x-message-ttl", 0),
            expires=integer("x-expires", 1),
            max_length=integer("x-max-length", 0),
            max_length_bytes=integer("x-max-length-bytes", 0),
            overflow=overflow,
            dead_letter_exchange=string("x-dead-letter-exchange"),
            dead_letter_routing_key=string("x-dead-letter-routing-key"),
            max_priority=priority,
            single_active_consumer=sac,
            queue_type=qtype,
            delivery_limit=limit,
            queue_mode=mode,
        )
