"""Policies: settings a vhost applies to the queues (and exchanges) whose names match.

As RabbitMQ: a policy has a ``pattern`` (a regular expression searched in the name),
``apply-to`` (``queues``, ``exchanges`` or ``all``; 3.12+'s ``classic_queues`` and
``quorum_queues`` too), a ``priority`` and a ``definition``. Of the policies that match an
object, the one with the highest priority applies (one policy, never a merge). For a queue,
the definition's keys take the place of the ``x-`` arguments it names; where the queue has
the argument too, RabbitMQ decides per key: the lower value wins for the numeric limits
(``message-ttl``, ``expires``, ``max-length``, ``max-length-bytes``, ``delivery-limit``),
the argument wins for the others (``overflow``, ``dead-letter-exchange``,
``dead-letter-routing-key``, ``queue-mode``). ``alternate-exchange`` applies to exchanges
(their argument wins).
Keys mqemu does not act on (``ha-mode``, federation, ...) are kept and shown.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .errors import PreconditionFailed
from .queue_args import OVERFLOW_MODES, QUEUE_MODES, QueueSettings

# policy key -> queue argument; "min": the lower of policy and argument applies
QUEUE_KEYS: dict[str, tuple[str, bool]] = {
    "message-ttl": ("x-message-ttl", True),
    "expires": ("x-expires", True),
    "max-length": ("x-max-length", True),
    "max-length-bytes": ("x-max-length-bytes", True),
    "delivery-limit": ("x-delivery-limit", True),
    "overflow": ("x-overflow", False),
    "dead-letter-exchange": ("x-dead-letter-exchange", False),
    "dead-letter-routing-key": ("x-dead-letter-routing-key", False),
    "queue-mode": ("x-queue-mode", False),
}
APPLY_TO = ("queues", "exchanges", "all", "classic_queues", "quorum_queues")
_MINIMUM = {"message-ttl": 0, "expires": 1, "max-length": 0, "max-length-bytes": 0, "delivery-limit": 0}


@dataclass(slots=True)
class Policy:
    name: str
    vhost: str
    pattern: str
    definition: dict[str, Any]
    priority: int = 0
    apply_to: str = "all"
    _rx: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._rx = re.compile(self.pattern)

    def applies_to_queue(self, name: str, queue_type: str) -> bool:
        if self.apply_to not in ("queues", "all", f"{queue_type}_queues"):
            return False
        return self._rx.search(name) is not None

    def applies_to_exchange(self, name: str) -> bool:
        return self.apply_to in ("exchanges", "all") and self._rx.search(name) is not None

    def to_json(self) -> dict[str, Any]:
        return {"vhost": self.vhost, "name": self.name, "pattern": self.pattern, "apply-to": self.apply_to,
                "definition": dict(self.definition), "priority": self.priority}


def make_policy(vhost: str, name: str, body: dict[str, Any]) -> Policy:
    """A policy from its JSON (the management API's PUT body, a definitions entry).
    Raises PreconditionFailed naming what is wrong (RabbitMQ's validation)."""
    pattern = body.get("pattern")
    if not isinstance(pattern, str):
        raise PreconditionFailed("pattern: not a string" if pattern is not None else "pattern not specified")
    try:
        re.compile(pattern)
    except re.error as e:
        raise PreconditionFailed(f"pattern: invalid regular expression: {e}") from None
    definition = body.get("definition")
    if not isinstance(definition, dict) or not definition:
        raise PreconditionFailed("definition must be a non-empty JSON object")
    priority = body.get("priority", 0)
    if isinstance(priority, str) and priority.lstrip("-").isdigit():
        priority = int(priority)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise PreconditionFailed(f"priority: {priority!r} is not an integer")
    apply_to = body.get("apply-to", "all")
    if apply_to not in APPLY_TO:
        raise PreconditionFailed(f"apply-to: '{apply_to}' must be one of {', '.join(APPLY_TO)}")
    for key, value in definition.items():
        _check_key(key, value)
    return Policy(name, vhost, pattern, dict(definition), priority, apply_to)


def _check_key(key: str, value: Any) -> None:
    if key in _MINIMUM:
        if isinstance(value, bool) or not isinstance(value, int) or value < _MINIMUM[key]:
            raise PreconditionFailed(f"{key}: {value!r} is not a valid value (an integer >= {_MINIMUM[key]})")
    elif key == "overflow" and value not in OVERFLOW_MODES:
        raise PreconditionFailed(f"overflow: {value!r} is not one of {', '.join(OVERFLOW_MODES)}")
    elif key == "queue-mode" and value not in QUEUE_MODES:
        raise PreconditionFailed(f"queue-mode: {value!r} is not one of {', '.join(QUEUE_MODES)}")
    elif key in ("dead-letter-exchange", "dead-letter-routing-key", "alternate-exchange") and not isinstance(value, str):
        raise PreconditionFailed(f"{key}: {value!r} is not a string")


def choose(policies: dict[str, Policy], matches: Any) -> Policy | None:
    """The policy that applies among those ``matches(policy)`` accepts: the highest priority,
    then the first name in order (RabbitMQ leaves ties unspecified)."""
    best: Policy | None = None
    for p in sorted(policies.values(), key=lambda p: p.name):
        if matches(p) and (best is None or p.priority > best.priority):
            best = p
    return best


def effective_arguments(arguments: dict[str, Any], policy: Policy | None) -> dict[str, Any]:
    """The queue's arguments with the policy's keys applied as RabbitMQ combines them."""
    if policy is None:
        return arguments
    merged = dict(arguments)
    for key, value in policy.definition.items():
        known = QUEUE_KEYS.get(key)
        if known is None:
            continue
        arg, lower_wins = known
        current = merged.get(arg)
        if current is None:
            merged[arg] = value
        elif lower_wins and isinstance(current, int) and value < current:
            merged[arg] = value
    if "x-dead-letter-routing-key" in merged and "x-dead-letter-exchange" not in merged:
        del merged["x-dead-letter-routing-key"]  # a policy's key without an exchange does nothing
    return merged


def queue_settings(name: str, vhost: str, arguments: dict[str, Any], policy: Policy | None) -> QueueSettings:
    """The settings a queue runs with under ``policy`` (its own arguments were checked at
    declare, the policy's values when it was set)."""
    return QueueSettings.parse(name, vhost, effective_arguments(arguments, policy))


def policy_for_queue(vhost: Any, q: Any) -> Policy | None:
    """The policy that applies to queue ``q`` of ``vhost`` now (None: none)."""
    if not vhost.policies:
        return None
    qtype = q.arguments.get("x-queue-type") or "classic"
    return choose(vhost.policies, lambda p: p.applies_to_queue(q.name, qtype))


def apply_to_queue(vhost: Any, q: Any) -> None:
    """Give queue ``q`` the settings its policy (or none) makes."""
    policy = policy_for_queue(vhost, q)
    if policy is None and vhost.queue_policies.pop(q.name, None) is None:
        return  # no policy before, none now: the declared settings stand
    try:
        settings = queue_settings(q.name, vhost.name, q.arguments, policy)
    except PreconditionFailed:
        return  # the combination does not parse (a quorum-only key on a classic queue): as before
    if policy is not None:
        vhost.queue_policies[q.name] = policy
    expires_before = q.settings.expires
    q.apply_settings(settings)
    if settings.expires is not None and settings.expires != expires_before:
        vhost.schedule_queue_expiry(q)


def apply_to_exchange(vhost: Any, ex: Any) -> None:
    """An exchange's ``alternate-exchange`` from its policy (its argument wins)."""
    policy = choose(vhost.policies, lambda p: p.applies_to_exchange(ex.name)) if vhost.policies else None
    ae = policy.definition.get("alternate-exchange") if policy is not None else None
    ex.policy_alternate = ae if isinstance(ae, str) and ae else None


def _apply_all(vhost: Any) -> None:
    for q in list(vhost.queues.values()):
        apply_to_queue(vhost, q)
    for ex in vhost.exchanges.values():
        if ex.name:
            apply_to_exchange(vhost, ex)


def set_policy(vhost: Any, policy: Policy) -> bool:
    """Add or replace a policy and apply it to the queues and exchanges at once. True when
    new."""
    new = policy.name not in vhost.policies
    vhost.policies[policy.name] = policy
    _apply_all(vhost)
    return new


def clear_policy(vhost: Any, name: str) -> bool:
    """Remove a policy (False when there was none); queues fall back to the next one."""
    if vhost.policies.pop(name, None) is None:
        return False
    _apply_all(vhost)
    return True
