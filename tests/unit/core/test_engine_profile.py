"""The engine profile: one per broker, from the config's engine and engine_version, and the
version differences the core applies (unknown exchange type, quorum delivery limit)."""

import pytest

from mqemu.broker.config import BrokerConfig, ConfigError, load_config
from mqemu.broker.core import Broker
from mqemu.broker.errors import CommandInvalid, PreconditionFailed
from mqemu.broker.message import Message
from mqemu.broker.profile import VERSIONS, EngineProfile


def write(tmp_path, text):
    p = tmp_path / "mqemu.toml"
    p.write_text(text)
    return str(p)


def test_default_is_the_newest_version_of_each_engine():
    assert Broker().profile.version == "4.2"
    assert Broker(BrokerConfig(engine="activemq")).profile.version == "5.18"
    assert [next(iter(v)) for v in VERSIONS.values()] == ["4.2", "5.18"]


@pytest.mark.parametrize("engine,version,server", [
    ("rabbitmq", "4.2", "RabbitMQ/4.2.1"),
    ("rabbitmq", "3.13", "RabbitMQ/3.13.7"),
    ("rabbitmq", "3.10", "RabbitMQ/3.10.25"),
    ("activemq", "5.18", "ActiveMQ/5.18.6"),
    ("activemq", "5.17", "ActiveMQ/5.17.6"),
])
def test_profile_names_engine_and_release(engine, version, server):
    profile = Broker(BrokerConfig(engine=engine, engine_version=version)).profile
    assert (profile.name, profile.version, profile.server) == (engine, version, server)


def test_activemq_policies_are_on_only_for_activemq():
    amq = EngineProfile.build("activemq")
    assert (amq.message_groups, amq.redelivery_policy, amq.shared_dead_letter_queue,
            amq.scheduled_delivery) == (True, True, True, True)
    assert amq.activemq_policies.maximum_redeliveries == 6
    rabbit = EngineProfile.build("rabbitmq", "3.10")
    assert (rabbit.message_groups, rabbit.redelivery_policy, rabbit.shared_dead_letter_queue,
            rabbit.scheduled_delivery, rabbit.activemq_policies) == (False, False, False, False, None)


def test_unknown_version_is_refused():
    with pytest.raises(ValueError, match="rabbitmq engine_version must be one of 4.2, 3.13, 3.10, not '3.9'"):
        EngineProfile.build("rabbitmq", "3.9")
    with pytest.raises(ConfigError, match="engine_version for activemq must be one of 5.18, 5.17, not '4.2'"):
        load_config(None, "activemq", "4.2")


def test_config_file_engine_version(tmp_path):
    path = write(tmp_path, 'engine = "rabbitmq"\nengine_version = "3.13"\n')
    assert load_config(path).engine_version == "3.13"
    assert load_config(path, engine_version="3.10").engine_version == "3.10"  # the command line wins
    # the file's version belongs to the file's engine: another engine on the command line
    # gets its own default
    assert load_config(path, "activemq").engine_version is None
    with pytest.raises(ConfigError, match='engine_version must be a string such as "3.13", not 3.1'):
        load_config(write(tmp_path, "engine_version = 3.10\n"))


@pytest.mark.parametrize("version,error,code,soft", [
    ("3.10", CommandInvalid, 503, False),
    ("3.13", CommandInvalid, 503, False),
    ("4.2", PreconditionFailed, 406, True),
])
def test_unknown_exchange_type_follows_the_version(version, error, code, soft):
    vh = Broker(BrokerConfig(engine_version=version)).vhosts["/"]
    with pytest.raises(error) as e:
        vh.declare_exchange("x", "x-no-such-type")
    assert (e.value.code, e.value.soft, e.value.text) == (code, soft, "unknown exchange type 'x-no-such-type'")


def _requeue_until_dead(version, limit_args=None):
    """Requeue one message of a quorum queue up to 30 times; (deliveries, dead-lettered)."""
    vh = Broker(BrokerConfig(engine_version=version)).vhosts["/"]
    vh.declare_exchange("dlx", "fanout")
    vh.declare_queue("dead")
    vh.bind("dlx", "dead", "")
    q = vh.declare_queue("qq", durable=True, arguments={
        "x-queue-type": "quorum", "x-dead-letter-exchange": "dlx", **(limit_args or {})})
    vh.publish("", "qq", Message("", "qq", b"m", {}))
    deliveries = 0
    while deliveries < 30 and q.ready:
        e = q.get(no_ack=False)
        deliveries += 1
        q.reject([e], None, requeue=True)
    dead = vh.queues["dead"].ready
    return deliveries, [d.message.headers["x-death"][0]["reason"] for d in dead]


def test_quorum_delivery_limit_is_20_by_default_on_rabbitmq_4():
    # RabbitMQ 4.0+: 20 deliveries, then the next return dead-letters it (delivery_limit)
    assert _requeue_until_dead("4.2") == (21, ["delivery_limit"])
    assert _requeue_until_dead("4.2", {"x-delivery-limit": 2}) == (3, ["delivery_limit"])


def test_quorum_delivery_limit_is_unlimited_on_rabbitmq_3():
    assert _requeue_until_dead("3.13") == (30, [])


def test_durable_queues_are_quorum_by_default_on_amazon_mq_rabbitmq_4_2():
    vh = Broker().vhosts["/"]
    assert vh.declare_queue("d", durable=True).settings.queue_type == "quorum"
    # only a queue that can be quorum: durable, not exclusive, not auto-delete
    assert vh.declare_queue("t").settings.queue_type == "classic"
    assert vh.declare_queue("e", durable=True, exclusive_owner=object()).settings.queue_type == "classic"
    assert vh.declare_queue("a", durable=True, auto_delete=True).settings.queue_type == "classic"
    assert vh.declare_queue("c", durable=True, arguments={"x-queue-type": "classic"}).settings.queue_type == "classic"
    assert vh.declare_queue("d", durable=True).settings.queue_type == "quorum"  # a redeclare matches
    with pytest.raises(PreconditionFailed, match="inequivalent arg 'x-queue-type' for queue 'd'"):
        vh.declare_queue("d", durable=True, arguments={"x-queue-type": "classic"})


def test_default_queue_type_is_classic_on_rabbitmq_3_and_configurable(tmp_path):
    assert Broker(BrokerConfig(engine_version="3.13")).vhosts["/"].declare_queue(
        "d", durable=True).settings.queue_type == "classic"
    cfg = load_config(write(tmp_path, 'default_queue_type = "classic"\n'))
    assert Broker(cfg).profile.default_queue_type == "classic"
    cfg = load_config(write(tmp_path, 'engine_version = "3.13"\ndefault_queue_type = "quorum"\n'))
    assert Broker(cfg).vhosts["/"].declare_queue("d", durable=True).settings.queue_type == "quorum"
    with pytest.raises(ConfigError, match='default_queue_type must be "classic" or "quorum", not \'stream\''):
        load_config(write(tmp_path, 'default_queue_type = "stream"\n'))
    assert Broker(BrokerConfig(engine="activemq")).vhosts["/"].declare_queue(
        "d", durable=True).settings.queue_type == "classic"
