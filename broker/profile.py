"""The engine profile: which broker mqemu emulates, and which version of it.

One ``EngineProfile`` is chosen when the broker is built (``Broker.__init__``, from
``BrokerConfig.engine`` and ``BrokerConfig.engine_version``) and never changes. Everything
that differs between the engines or their versions is read from it: the core reads the
policies below, and each protocol keeps its own rules per engine (STOMP: the flavour classes
of ``protocols/stomp/flavours.py``), chosen by ``profile.name``. Nothing outside this module
compares engine names or version numbers.

Versions are the ones Amazon MQ offers (RabbitMQ 3.13 and 4.2, ActiveMQ 5.18), plus the
older releases the reference brokers of the differential tests run (RabbitMQ 3.10, ActiveMQ
5.17). The default is the newest, as on Amazon MQ. ARCHITECTURE.md has the table of what
differs between them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import BrokerError, CommandInvalid, PreconditionFailed

if TYPE_CHECKING:
    from .activemq import ActiveMQSettings
    from .config import BrokerConfig

# engine -> its versions, newest first (the first is the default), and the release each reports
VERSIONS: dict[str, dict[str, str]] = {
    "rabbitmq": {"4.2": "4.2.1", "3.13": "3.13.7", "3.10": "3.10.25"},
    "activemq": {"5.18": "5.18.6", "5.17": "5.17.6"},
}
PRODUCTS = {"rabbitmq": "RabbitMQ", "activemq": "ActiveMQ"}

# engine -> its listeners' default ports, by the names the node's ready file uses. Plain
# AMQP/STOMP/MQTT; TLS (RabbitMQ's amqps, stomp ssl and mqtt ssl listeners; ActiveMQ's
# amqp+ssl, stomp+ssl, mqtt+ssl as Amazon MQ opens them); WebSocket: RabbitMQ's Web-STOMP
# (15674, TLS 15673) and Web-MQTT (15675, TLS 15676) plugins, ActiveMQ's one ws transport for
# both protocols (61614 in the stock activemq.xml) and Amazon MQ's wss (61619).
LISTENER_PORTS: dict[str, dict[str, int]] = {
    "rabbitmq": {"amqp": 5672, "stomp": 61613, "mqtt": 1883, "amqps": 5671, "stomps": 61614, "mqtts": 8883,
                 "stomp-ws": 15674, "mqtt-ws": 15675, "stomp-wss": 15673, "mqtt-wss": 15676},
    "activemq": {"amqp": 5672, "stomp": 61613, "mqtt": 1883, "amqps": 5671, "stomps": 61614, "mqtts": 8883,
                 "ws": 61614, "wss": 61619},
}

# RabbitMQ 4.0+: a quorum queue without x-delivery-limit has a limit of 20.
QUORUM_DEFAULT_DELIVERY_LIMIT = 20


def simple_authentication(engine: str) -> bool:
    """Whether ``engine`` checks logins and destinations as ActiveMQ's simple authentication
    and authorization plugins do (``EngineProfile.simple_authentication``)."""
    return engine == "activemq"


def default_version(engine: str) -> str:
    return next(iter(VERSIONS[engine]))


def _at_least(version: str, floor: str) -> bool:
    return tuple(map(int, version.split("."))) >= tuple(map(int, floor.split(".")))


@dataclass(frozen=True, slots=True)
class EngineProfile:
    """The emulated engine and version, and the facts the core and the sessions ask for.

    ``activemq_policies``: the settings of the ActiveMQ broker policies (``[activemq]``:
    redelivery limit, ``ActiveMQ.DLQ``, scheduler), None on RabbitMQ. Which policies apply is
    said by the flags below, which the core reads.
    """

    name: str
    version: str
    release: str
    activemq_policies: "ActiveMQSettings | None" = None
    # ActiveMQ: queues assign JMSXGroupID groups to consumers (so they always dispatch
    # through the selective path).
    message_groups: bool = False
    # ActiveMQ: past maximum_redeliveries a message goes to the dead-letter queue (instead of
    # RabbitMQ's quorum delivery counts).
    redelivery_policy: bool = False
    # ActiveMQ: dead messages go to one shared queue (ActiveMQ.DLQ) instead of the queue's
    # dead-letter exchange.
    shared_dead_letter_queue: bool = False
    # ActiveMQ: AMQ_SCHEDULED_* properties hold a message back (schedulerSupport).
    scheduled_delivery: bool = False
    # RabbitMQ 4.x: the delivery limit of a quorum queue that sets none (None: unlimited).
    quorum_delivery_limit: int | None = None
    # The type of a durable, non-exclusive, non-auto-delete queue declared without
    # x-queue-type (RabbitMQ's default_queue_type). Amazon MQ's RabbitMQ 4.2 brokers make
    # them quorum queues; 3.x brokers classic ones. The config key overrides it.
    default_queue_type: str = "classic"
    # ActiveMQ: users and groups checked as its simpleAuthenticationPlugin does, destinations
    # by authorization entries (``auth.py``); RabbitMQ: vhost permissions and loopback users.
    simple_authentication: bool = False
    # STOMP and MQTT: seconds from accept to a completed CONNECT (RabbitMQ 10, ActiveMQ's
    # transport.connectAttemptTimeout 30).
    connect_timeout: float = 10.0
    # RabbitMQ 3.x: an unknown exchange type closes the connection (503); 4.x: the channel (406).
    unknown_exchange_type_closes_connection: bool = False
    # Per-protocol facts that change with the version (the protocols read them):
    # AMQP 0-9-1: the smallest frame_max a client may ask for (RabbitMQ 4.1+: 8192).
    amqp_frame_min_size: int = 4096
    # STOMP: the largest frame (RabbitMQ 3.13+: stomp.max_frame_size, 4 MiB; 3.10 has no
    # limit of its own, its channel refuses a body over max_message_size, 128 MiB).
    stomp_max_frame_size: int = 4 * 1024 * 1024
    # HTTP: the management port (RabbitMQ's management plugin 15672, ActiveMQ's web console
    # 8161) and whether RabbitMQ's management API is what it serves.
    http_port: int = 15672
    rabbitmq_management: bool = True
    # HTTPS: the management port over TLS (RabbitMQ 15671, ActiveMQ 8162) and where Amazon MQ
    # puts the console (RabbitMQ 443, ActiveMQ 8162).
    https_port: int = 15671
    amazon_mq_https_port: int = 443

    @classmethod
    def build(cls, engine: str, version: str | None = None,
              config: "BrokerConfig | None" = None) -> "EngineProfile":
        """The profile of engine at version (None: the newest), with the engine's settings
        from config (ActiveMQ: ``[activemq]``). Raises ValueError for an engine or a version
        mqemu does not emulate, ConfigError for a bad setting."""
        versions = VERSIONS.get(engine)
        if versions is None:
            raise ValueError(f"engine must be one of {', '.join(VERSIONS)}, not {engine!r}")
        version = version or default_version(engine)
        if version not in versions:
            raise ValueError(f"{engine} engine_version must be one of {', '.join(versions)}, not {version!r}")
        if engine == "activemq":
            from .activemq import ActiveMQSettings

            policies = ActiveMQSettings.from_config(config) if config is not None else ActiveMQSettings()
            return cls(engine, version, versions[version], activemq_policies=policies, message_groups=True,
                       redelivery_policy=True, shared_dead_letter_queue=True,
                       scheduled_delivery=policies.scheduler_support,
                       simple_authentication=simple_authentication(engine),
                       connect_timeout=30.0, http_port=8161, rabbitmq_management=False,
                       https_port=8162, amazon_mq_https_port=8162)
        four = _at_least(version, "4.0")
        queue_type = getattr(config, "default_queue_type", None) or ("quorum" if four else "classic")
        return cls(engine, version, versions[version],
                   quorum_delivery_limit=QUORUM_DEFAULT_DELIVERY_LIMIT if four else None,
                   default_queue_type=queue_type,
                   unknown_exchange_type_closes_connection=not four,
                   amqp_frame_min_size=8192 if _at_least(version, "4.1") else 4096,
                   stomp_max_frame_size=(4 if _at_least(version, "3.13") else 128) * 1024 * 1024)

    @property
    def product(self) -> str:
        """``RabbitMQ`` or ``ActiveMQ``: the product name clients are shown."""
        return PRODUCTS[self.name]

    @property
    def listener_ports(self) -> dict[str, int]:
        """The engine's listeners and their default ports (``LISTENER_PORTS``)."""
        return LISTENER_PORTS[self.name]

    @property
    def server(self) -> str:
        """``product/release``, e.g. ``RabbitMQ/4.2.1`` (STOMP's ``server`` header)."""
        return f"{self.product}/{self.release}"

    def unknown_exchange_type(self, type_name: str) -> BrokerError:
        """exchange.declare with a type the broker does not have. RabbitMQ 3.x:
        ``rabbit_exchange:check_type`` raises command_invalid (the connection closes with
        503); 4.x raises precondition_failed (the channel closes with 406)."""
        text = f"unknown exchange type '{type_name}'"
        return CommandInvalid(text) if self.unknown_exchange_type_closes_connection else PreconditionFailed(text)


RABBITMQ = EngineProfile.build("rabbitmq")
