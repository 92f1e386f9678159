"""What MQTT keeps per node: one object per ``Broker``, held by the broker itself
(``Broker.protocol_state("mqtt", ...)``), so nodes in one process keep separate sessions and
retained messages, and a node's state goes with its broker."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mqemu.broker.core import Broker

    from .retained import RetainedStore
    from .sessions import SessionState


class LastPublish:
    """The last QoS 0 PUBLISH encoded without per-delivery properties: a fan-out dispatches
    one message to many consumers in a row, and they all get these same bytes. One per node,
    so nodes in threads of one process never see each other's bytes."""

    __slots__ = ("msg", "key", "data")

    def __init__(self) -> None:
        self.msg: object = None
        self.key: tuple = ()
        self.data = b""


class MqttNodeState:
    __slots__ = ("last_publish", "restored", "retained", "sessions")

    def __init__(self) -> None:
        #: (vhost name, client id) -> the session, connected or not (``sessions.registry``)
        self.sessions: dict[tuple[str, str], SessionState] = {}
        #: vhost name -> its retained messages (``retained.retained_store``)
        self.retained: dict[str, RetainedStore] = {}
        #: the store's records have been read back (``persist.restore``, once per node)
        self.restored = False
        self.last_publish = LastPublish()  # ``delivery.Deliveries.deliver``'s encode cache


def node_state(broker: Broker) -> MqttNodeState:
    return broker.protocol_state("mqtt", MqttNodeState)
