"""ActiveMQ Classic 5.17 broker policies: scheduled delivery, the redelivery limit and
``ActiveMQ.DLQ``. Used only by a virtual host of an ``engine = "activemq"`` broker.

Settings come from the ``[activemq]`` section of the config file (``BrokerConfig.extra``)::

    [activemq]
    maximum_redeliveries = 6        # RedeliveryPolicy default; -1 = no limit
    dead_letter_queue = "ActiveMQ.DLQ"
    process_non_persistent = false  # SharedDeadLetterStrategy default: drop them
    process_expired = true
    scheduler_support = true        # schedulerSupport (Amazon MQ lets you turn it on)
    max_repeat_allowed = 1000

Scheduled delivery (ActiveMQ's SchedulerBroker): a publish carrying ``AMQ_SCHEDULED_DELAY``
or ``AMQ_SCHEDULED_PERIOD`` (ms) is held and routed later, ``AMQ_SCHEDULED_REPEAT`` + 1
times, ``AMQ_SCHEDULED_PERIOD`` apart. ``AMQ_SCHEDULED_CRON`` is not supported: a message
with only a cron entry is delivered at once. Jobs live in memory only (lost on restart).
"""

from __future__ import annotations

import itertools
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import PreconditionFailed
from .message import Message, QueueEntry

if TYPE_CHECKING:
    from .config import BrokerConfig
    from .queue import Queue
    from .vhost import VirtualHost

log = logging.getLogger("mqemu.broker.activemq")

SCHEDULED_DELAY = "AMQ_SCHEDULED_DELAY"
SCHEDULED_PERIOD = "AMQ_SCHEDULED_PERIOD"
SCHEDULED_REPEAT = "AMQ_SCHEDULED_REPEAT"
SCHEDULED_CRON = "AMQ_SCHEDULED_CRON"
SCHEDULED_ID = "AMQ_SCHEDULED_ID"
_SCHEDULE_HEADERS = (SCHEDULED_DELAY, SCHEDULED_PERIOD, SCHEDULED_REPEAT, SCHEDULED_CRON)
DLQ_FAILURE_CAUSE = "dlqDeliveryFailureCause"  # ActiveMQMessage.DLQ_DELIVERY_FAILURE_CAUSE_PROPERTY
_JAVA_LONG = re.compile(r"[+-]?[0-9]+\Z")


@dataclass(frozen=True, slots=True)
class ActiveMQSettings:
    maximum_redeliveries: int = 6
    dead_letter_queue: str = "ActiveMQ.DLQ"
    process_non_persistent: bool = False
    process_expired: bool = True
    scheduler_support: bool = True
    max_repeat_allowed: int = 1000

    @classmethod
    def from_config(cls, config: "BrokerConfig") -> "ActiveMQSettings":
        """Read ``[activemq]``; raises ConfigError naming a key of the wrong type."""
        from .config import ConfigError

        section = (config.extra or {}).get("activemq") or {}
        values: dict[str, Any] = {}
        for name, default in _defaults():
            if name in section:
                v = section[name]
                if type(v) is not type(default):
                    raise ConfigError(f"[activemq] {name} must be a {type(default).__name__}, not {v!r}")
                values[name] = v
        return cls(**values)

    def redelivery_cause(self, deliveries: int) -> str:
        """dlqDeliveryFailureCause as ActiveMQ's client writes it for a poison message."""
        policy = ("RedeliveryPolicy {destination = null, collisionAvoidanceFactor = 0.15, "
                  f"maximumRedeliveries = {self.maximum_redeliveries}, maximumRedeliveryDelay = -1, "
                  "initialRedeliveryDelay = 1000, useCollisionAvoidance = false, "
                  "useExponentialBackOff = false, backOffMultiplier = 5.0, redeliveryDelay = 1000, "
                  "preDispatchCheck = true}")
        return f"java.lang.Throwable: Delivery[{deliveries}] exceeds redelivery policy limit:{policy}, cause:null"


def _defaults() -> list[tuple[str, Any]]:
    d = ActiveMQSettings()
    return [(f, getattr(d, f)) for f in ActiveMQSettings.__dataclass_fields__]


# -- redelivery and the dead-letter queue -----------------------------------------------
def over_redelivery_limit(settings: ActiveMQSettings, entry: QueueEntry) -> bool:
    """Count one more redelivery of entry; True when it passed ``maximum_redeliveries``.

    ActiveMQ: a message is delivered at most 1 + maximumRedeliveries times; the next
    rollback sends it to the DLQ (the client's poison ack).
    """
    entry.delivery_count += 1
    limit = settings.maximum_redeliveries
    return limit >= 0 and entry.delivery_count > limit


def dead_letter(vhost: "VirtualHost", queue: "Queue", entries: list[QueueEntry], reason: str) -> None:
    """Move entries to the shared DLQ (SharedDeadLetterStrategy), declared durable if absent.

    Reasons: ``delivery_limit`` (redelivery policy), ``expired``, ``rejected`` (a poison ack,
    e.g. STOMP NACK). Others (``maxlen``: RabbitMQ arguments) drop the entries. Non-persistent
    messages are dropped unless ``process_non_persistent``; a message already in the DLQ is
    dropped (ActiveMQ refuses the loop).
    """
    settings: ActiveMQSettings = vhost.activemq
    if reason not in ("delivery_limit", "expired", "rejected") or queue.name == settings.dead_letter_queue:
        return
    if reason == "expired" and not settings.process_expired:
        return
    now = vhost.clock()
    dlq = None
    for entry in entries:
        old = entry.message
        if not old.persistent and not settings.process_non_persistent:
            continue
        props = dict(old.properties)
        headers = dict(props.get("headers") or {})
        if reason == "delivery_limit":
            headers[DLQ_FAILURE_CAUSE] = settings.redelivery_cause(entry.delivery_count)
        elif reason == "expired":
            headers[DLQ_FAILURE_CAUSE] = f"java.lang.Throwable: Message Expired. Expiration:{props.get('expiration', 0)}"
        # ActiveMQ: a DLQ copy never expires; it keeps its expiration as originalExpiration.
        headers.setdefault("originalExpiration", _long(props.pop("expiration", 0) or 0, 0))
        if not old.persistent:
            props["delivery_mode"] = 2
            headers["originalDeliveryMode"] = "NON_PERSISTENT"
        props["headers"] = headers
        if dlq is None:
            dlq = vhost.queues.get(settings.dead_letter_queue) or vhost.declare_queue(
                settings.dead_letter_queue, durable=True)
        dlq.publish(Message("", settings.dead_letter_queue, old.body, props, fields=old.fields), now)


def _long(v: Any, default: int) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return default


# -- scheduled delivery -----------------------------------------------------------------
_job_ids = itertools.count(1)


def _scheduled_value(headers: dict[str, Any], name: str) -> int | None:
    """A schedule header as a number; STOMP sends strings. Raises PreconditionFailed."""
    v = headers.get(name)
    if v is None:
        return None
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    if isinstance(v, str) and _JAVA_LONG.match(v):
        return int(v)
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    raise PreconditionFailed(f'{name}: cannot convert "{v}" to a number')


def maybe_schedule(vhost: "VirtualHost", exchange: str, routing_key: str, message: Message) -> bool:
    """Hold message if it asks for scheduled delivery; True when it was scheduled.

    Raises PreconditionFailed for a schedule value that is not a number, or a repeat above
    ``max_repeat_allowed`` (ActiveMQ: "The scheduled repeat value is too large").
    """
    headers = message.properties.get("headers")
    if not headers or SCHEDULED_ID in headers:
        return False
    if SCHEDULED_DELAY not in headers and SCHEDULED_PERIOD not in headers and SCHEDULED_CRON not in headers:
        return False
    delay = _scheduled_value(headers, SCHEDULED_DELAY) or 0
    period = _scheduled_value(headers, SCHEDULED_PERIOD) or 0
    repeat = _scheduled_value(headers, SCHEDULED_REPEAT) or 0
    settings: ActiveMQSettings = vhost.activemq
    if repeat > settings.max_repeat_allowed:
        raise PreconditionFailed("The scheduled repeat value is too large")
    if SCHEDULED_CRON in headers:
        log.warning("AMQ_SCHEDULED_CRON is not supported; the cron entry is ignored")
        if not delay and not period:
            return False
    if repeat < 0 and period <= 0:
        repeat = 0  # ActiveMQ would fire for ever without pause; mqemu fires once
    job = f"ID:mqemu-scheduler-{next(_job_ids)}"
    props = dict(message.properties)
    props["headers"] = {k: v for k, v in headers.items() if k not in _SCHEDULE_HEADERS}
    props["headers"]["scheduledJobId"] = job
    template = Message(exchange, routing_key, message.body, props, fields=message.fields)
    first = vhost.clock() + (delay if delay > 0 else period) / 1000.0
    _arm(vhost, template, first, period, repeat)
    return True


def _arm(vhost: "VirtualHost", template: Message, when: float, period: int, remaining: int) -> None:
    def fire(now: float) -> None:
        msg = Message(template.exchange, template.routing_key, template.body, dict(template.properties),
                      fields=template.fields)
        try:
            vhost.publish(template.exchange, template.routing_key, msg)
        except Exception as e:  # ActiveMQ logs "Failed to send scheduled message" and goes on
            log.warning("failed to send scheduled message %s: %s", template.headers.get("scheduledJobId"), e)
        if remaining != 0:
            _arm(vhost, template, when + period / 1000.0, period, remaining - 1 if remaining > 0 else -1)

    vhost.timers.call_at(when, fire)
