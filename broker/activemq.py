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

Per-destination policies (``DestinationPolicy``: a redelivery limit and a dead-letter strategy
for a queue pattern) come from ``mqemu serve --activemq-xml`` (``activemq_xml``), not from
TOML; a queue resolves them once, when it is made (``for_queue``).

Scheduled delivery (ActiveMQ's SchedulerBroker): a publish carrying ``AMQ_SCHEDULED_DELAY``
or ``AMQ_SCHEDULED_PERIOD`` (ms) is held and routed later, ``AMQ_SCHEDULED_REPEAT`` + 1
times, ``AMQ_SCHEDULED_PERIOD`` apart. ``AMQ_SCHEDULED_CRON`` is not supported: a message
with only a cron entry is delivered at once. Jobs live in memory only (lost on restart).
"""

from __future__ import annotations

import itertools
import logging
import re
from dataclasses import dataclass, field, replace
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
class DeadLetterStrategy:
    """ActiveMQ's ``sharedDeadLetterStrategy`` (``queue_prefix`` None: every message goes to
    ``shared_queue``), ``individualDeadLetterStrategy`` (``<queue_prefix><name><queue_suffix>``)
    or ``discarding`` (``discard``: dead letters are dropped)."""

    shared_queue: str = "ActiveMQ.DLQ"
    queue_prefix: str | None = None
    queue_suffix: str = ""
    discard: bool = False
    process_non_persistent: bool = False
    process_expired: bool = True


@dataclass(frozen=True, slots=True)
class DestinationPolicy:
    """What ``activemq.xml`` sets for a destination pattern (ActiveMQ wildcards): a
    ``policyEntry``'s dead-letter strategy or a ``redeliveryPolicy``'s limit (None: not set
    by this entry)."""

    kind: str  # "queue" or "topic"
    pattern: str
    maximum_redeliveries: int | None = None
    dead_letter: DeadLetterStrategy | None = None


@dataclass(frozen=True, slots=True)
class ActiveMQSettings:
    maximum_redeliveries: int = 6
    dead_letter_queue: str = "ActiveMQ.DLQ"
    process_non_persistent: bool = False
    process_expired: bool = True
    scheduler_support: bool = True
    max_repeat_allowed: int = 1000
    # Per-destination policies (``activemq_xml``); a queue's own settings: ``for_queue``.
    policies: tuple[DestinationPolicy, ...] = ()
    dead_letter_prefix: str | None = None  # individualDeadLetterStrategy's queuePrefix
    dead_letter_suffix: str = ""
    discard_dead_letters: bool = False
    # resolved settings by the (redelivery, dead-letter) policies chosen: a few, however many queues
    _resolved: dict[tuple[int, int], "ActiveMQSettings"] = field(default_factory=dict, init=False, compare=False,
                                                                 repr=False)
    _matchers: tuple[tuple[DestinationPolicy, "re.Pattern[str]"], ...] = field(
        default=(), init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.policies:
            object.__setattr__(self, "_matchers", _matchers(self.policies))

    def for_queue(self, name: str) -> "ActiveMQSettings":
        """The settings for queue ``name``: the most specific policy of each kind that
        matches it (a name without wildcards before a wildcard pattern, then more words).
        Without policies, these settings; one settings object per combination of policies."""
        if not self.policies:
            return self
        limit = dl = None
        for policy, rx in self._matchers:
            if rx.fullmatch(name):
                if policy.maximum_redeliveries is not None and (
                        limit is None or _specificity(policy.pattern) > _specificity(limit.pattern)):
                    limit = policy
                if policy.dead_letter is not None and (
                        dl is None or _specificity(policy.pattern) > _specificity(dl.pattern)):
                    dl = policy
        key = (id(limit), id(dl))
        got = self._resolved.get(key)
        if got is None:
            changes: dict[str, Any] = {"policies": ()}
            if limit is not None:
                changes["maximum_redeliveries"] = limit.maximum_redeliveries
            if dl is not None and dl.dead_letter is not None:
                d = dl.dead_letter
                changes.update(dead_letter_queue=d.shared_queue, dead_letter_prefix=d.queue_prefix,
                               dead_letter_suffix=d.queue_suffix, discard_dead_letters=d.discard,
                               process_non_persistent=d.process_non_persistent, process_expired=d.process_expired)
            got = self._resolved[key] = replace(self, **changes)
        return got

    def dead_letter_name(self, queue: str) -> str:
        """Where a dead letter of ``queue`` goes."""
        if self.dead_letter_prefix is not None:
            return f"{self.dead_letter_prefix}{queue}{self.dead_letter_suffix}"
        return self.dead_letter_queue

    def is_dead_letter_queue(self, queue: str) -> bool:
        """A dead-letter queue's own dead letters are dropped (ActiveMQ refuses the loop)."""
        if queue == self.dead_letter_queue:
            return True
        p = self.dead_letter_prefix
        return p is not None and queue.startswith(p) and queue.endswith(self.dead_letter_suffix)

    @classmethod
    def from_config(cls, config: "BrokerConfig") -> "ActiveMQSettings":
        """Read ``[activemq]``; raises ConfigError naming a key of the wrong type."""
        from .config import ConfigError

        section = (config.extra or {}).get("activemq") or {}
        values: dict[str, Any] = {"policies": tuple(getattr(config, "activemq_policies", ()))}
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


TOML_KEYS = ("maximum_redeliveries", "dead_letter_queue", "process_non_persistent", "process_expired",
             "scheduler_support", "max_repeat_allowed")


def _defaults() -> list[tuple[str, Any]]:
    d = ActiveMQSettings()
    return [(f, getattr(d, f)) for f in TOML_KEYS]


def _specificity(pattern: str) -> tuple[int, int]:
    words = pattern.split(".")
    return (0 if "*" in words or ">" in words else 1, len(words))


def _matchers(policies: tuple[DestinationPolicy, ...]) -> tuple[tuple[DestinationPolicy, re.Pattern[str]], ...]:
    """Each queue policy with its pattern as a regular expression: ``*`` one word, ``>`` the
    rest (zero words or more), as ActiveMQ's DestinationMap matches a plain name."""
    out = []
    for p in policies:
        if p.kind != "queue":
            continue
        rx = ""
        for i, word in enumerate(p.pattern.split(".")):
            if word == ">":
                rx += r"(?:\..*)?" if i else ".*"
                break
            rx += ("" if i == 0 else r"\.") + ("[^.]*" if word == "*" else re.escape(word))
        out.append((p, re.compile(rx, re.S)))
    return tuple(out)


# -- redelivery and the dead-letter queue -----------------------------------------------
def over_redelivery_limit(settings: ActiveMQSettings, delivery_count: int) -> bool:
    """True when a message returned ``delivery_count`` times (the queue counts them) passed
    ``maximum_redeliveries``.

    ActiveMQ: a message is delivered at most 1 + maximumRedeliveries times; the next
    rollback sends it to the DLQ (the client's poison ack).
    """
    limit = settings.maximum_redeliveries
    return limit >= 0 and delivery_count > limit


def dead_letter(vhost: "VirtualHost", queue: "Queue", entries: list[QueueEntry], reason: str) -> None:
    """Move entries to the shared DLQ (SharedDeadLetterStrategy), declared durable if absent.

    Reasons: ``delivery_limit`` (redelivery policy), ``expired``, ``rejected`` (a poison ack,
    e.g. STOMP NACK). Others (``maxlen``: RabbitMQ arguments) drop the entries. Non-persistent
    messages are dropped unless ``process_non_persistent``; a message already in the DLQ is
    dropped (ActiveMQ refuses the loop).
    """
    assert vhost.activemq is not None  # only an ActiveMQ vhost dead-letters here
    settings = vhost.activemq.for_queue(queue.name)
    if (reason not in ("delivery_limit", "expired", "rejected") or settings.discard_dead_letters
            or settings.is_dead_letter_queue(queue.name)):
        return
    if reason == "expired" and not settings.process_expired:
        return
    now = vhost.clock()
    dlq = None
    dlq_name = settings.dead_letter_name(queue.name)
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
            dlq = vhost.queues.get(dlq_name) or vhost.declare_queue(dlq_name, durable=True)
        dlq.publish(Message("", dlq_name, old.body, props, fields=old.fields), now)


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
