"""The order of frames in ``amqp_sequences`` against mqemu and, when ``MQEMU_REF_AMQP`` is
set, the same scenarios against RabbitMQ."""

from __future__ import annotations

import os

import pytest

from amqp_raw import ref_address
from amqp_sequences import SEQUENCES

REF = os.environ.get("MQEMU_REF_AMQP")


@pytest.fixture(scope="module")
def mqemu_amqp():
    from mqemu.ha.node import NodeThread

    with NodeThread(ports={"stomp": "off", "mqtt": "off"}) as node:
        yield "127.0.0.1", node.ports["amqp"]


@pytest.mark.parametrize("name", sorted(SEQUENCES))
def test_mqemu_sends_frames_in_rabbitmqs_order(name, mqemu_amqp):
    scenario, expected = SEQUENCES[name]
    assert scenario(*mqemu_amqp) == expected


@pytest.mark.skipif(not REF, reason="MQEMU_REF_AMQP is not set (no reference RabbitMQ to compare with)")
@pytest.mark.parametrize("name", sorted(SEQUENCES))
def test_rabbitmq_sends_the_same_order(name):
    scenario, expected = SEQUENCES[name]
    assert scenario(*ref_address(REF)) == expected
