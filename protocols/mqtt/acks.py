"""The acknowledgements a connection sends for PUBLISH and PUBREL (PUBACK, PUBREC, PUBCOMP),
held until the store has what they acknowledge on disk: the part of ``MqttConnection`` that
owns that state (``MqttConnection.acks``).

A PUBACK or PUBREC for a persistent message the store keeps (QoS >= 1 reaching a queue, or a
retained message's record) is held until the store's batch holding it is committed
(``Store.when_durable``), as AMQP publisher confirms are; acks behind a held one wait with it,
so acknowledgements keep the order of the packets they answer.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mqemu.broker.store.base import Store


class AckGate:
    """Owns the held acknowledgements: ``send`` (needs no disk write) and ``send_durable``
    (waits for every store write made so far)."""

    __slots__ = ("_gone", "_send", "durable", "held", "held_ticket", "store", "durable_upto")

    def __init__(self, store: Store, send: Callable[[bytes], None], gone: Callable[[], bool]) -> None:
        self.store = store
        self.durable = store.keeps_messages  # False: nothing is ever held
        self._send = send  # the connection's send
        self._gone = gone  # the connection is closed or lingering: held acks are dropped
        # (ticket, bytes), ticket 0 for one that only waits for those before it
        self.held: deque[tuple[int, bytes]] = deque()
        self.held_ticket = 0
        self.durable_upto = 0

    def send(self, data: bytes) -> None:
        """An acknowledgement that needs no disk write, behind any held one."""
        if self.held:
            self.held.append((0, data))
        else:
            self._send(data)

    def send_durable(self, data: bytes) -> None:
        """Send data once every store write made so far is on disk."""
        store = self.store
        ticket = store.barrier()
        if ticket <= self.durable_upto:
            self.send(data)
            return
        self.held.append((ticket, data))
        if ticket != self.held_ticket:
            self.held_ticket = ticket
            store.when_durable(ticket, lambda: self._durable(ticket))

    def _durable(self, ticket: int) -> None:
        self.durable_upto = max(self.durable_upto, ticket)
        held = self.held
        if self._gone():
            held.clear()  # the connection is gone: the client resends what was not acked
            return
        send = self._send
        while held and held[0][0] <= ticket:
            send(held.popleft()[1])
