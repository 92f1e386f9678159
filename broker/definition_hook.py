"""The core's one seam for "a definition changed", for a cluster that replicates them.

A node of a cluster sets ``Broker.definitions_hook`` (``Broker.set_definitions_hook``); the
core then calls ``changing(vhost, op, item)`` just before it changes a definition, after every
check of its own, and only when something changes (a redeclare of an equivalent queue, an
existing binding or the deletion of what is not there call nothing). The hook raises a
``BrokerError`` to refuse the change (the core then changes nothing). Never called per
message. The operations and their items (plain JSON-like dicts; table values as the
protocols decode them):

- ``exchange.declare``: name, type, durable, auto_delete, internal, arguments
- ``exchange.delete``: name
- ``queue.declare``: name, durable, auto_delete, arguments, type (the queue's type)
- ``queue.delete``: name, internal (True: the broker deletes it itself, e.g. ``x-expires``;
  the hook must not refuse that)
- ``bind`` / ``unbind``: source, destination, destination_type, routing_key, arguments
- ``access`` (vhost None): the users, vhosts, permissions, topic permissions, parameters and
  policies sections of the definitions export, after a change made through the management
  API (``definitions.save_access``); the change is already made: a refusal is the hook's to
  undo.

Node-local, never passed to the hook (as RabbitMQ keeps them on their node): exclusive
queues, auto-delete queues, server-named (``amq.gen-``) queues and the bindings to them.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

from .exchange import Binding


class DefinitionHook(Protocol):
    def changing(self, vhost: str | None, op: str, item: dict[str, Any]) -> None: ...


# A hook may also let a protocol's -ok wait until the change is on every node reached (a
# cluster's metadata group: RabbitMQ answers declare-ok once every running node has it):
# ``changes`` (an int that grows with each change the hook takes) and ``when_spread(changes,
# callback)``. A protocol notes ``change_mark`` before it declares and asks ``after_spread``
# after; without a hook (a single node) that is a None test and nothing waits.

def change_mark(hook: DefinitionHook | None) -> int:
    return getattr(hook, "changes", 0) if hook is not None else 0


def after_spread(hook: DefinitionHook | None, mark: int, callback: Callable[[], None]) -> bool:
    """True: the change made since ``mark`` is spreading and ``callback()`` comes once it is on
    every node reached (or the hook gives up waiting); False: nothing to wait for, answer now."""
    if hook is None:
        return False
    changes = getattr(hook, "changes", 0)
    when = getattr(hook, "when_spread", None)
    if changes == mark or when is None:
        return False
    when(changes, callback)
    return True


def replicated_queue(name: str, exclusive_owner: object | None, auto_delete: bool) -> bool:
    return exclusive_owner is None and not auto_delete and not name.startswith("amq.")


def thaw(value: Any) -> Any:
    """A binding argument's value as declared (``exchange.freeze_arguments`` undone)."""
    if isinstance(value, tuple) and len(value) == 2 and value[0] == "__table__":
        return {k: thaw(v) for k, v in value[1]}
    if isinstance(value, tuple) and len(value) == 2 and value[0] == "__array__":
        return [thaw(v) for v in value[1]]
    return value


def binding_item(b: Binding) -> dict[str, Any]:
    return {"source": b.source, "destination": b.destination, "destination_type": b.destination_kind,
            "routing_key": b.routing_key, "arguments": {k: thaw(v) for k, v in b.arguments}}
