"""The same raw AMQP 0-9-1 error scenarios against mqemu and a reference RabbitMQ.

Each scenario (``amqp_raw.SCENARIOS``) sends hand-built frames and records how the server
ended it: connection.close or channel.close (reply code, class id, method id), a protocol
header, or a bare EOF. The two brokers must agree on that, except for the cases listed in
``amqp_raw.DELIBERATE`` where mqemu chooses otherwise on purpose (each says why); those
check that RabbitMQ still does what the list says, so the list stays true.

Reply texts are compared for channel closes and for the connection closes clients show to
users (403, 406, 530, 540); frame-level texts (RabbitMQ prints Erlang terms) are printed.

Set ``MQEMU_REF_AMQP`` (``host:port`` or ``amqp://user:pass@host:port/``) to run them.
"""

from __future__ import annotations

import os
import re

import pytest

from amqp_raw import DELIBERATE, SCENARIOS, ref_address

REF = os.environ.get("MQEMU_REF_AMQP")
pytestmark = pytest.mark.skipif(not REF, reason="MQEMU_REF_AMQP is not set (no reference RabbitMQ to compare with)")

_NAMES = re.compile(r"mqemu-diff-[a-z]+-[0-9a-f]{8}|amq\.gen-[\w-]+")
_TEXT_CODES = {403, 406, 530, 540}


def _norm(text: str) -> str:
    return _NAMES.sub("<name>", text)


@pytest.fixture(scope="module")
def mqemu_amqp():
    from mqemu.ha.node import NodeThread

    # the version the reference runs: the scenarios pin RabbitMQ 3.10's behaviour
    with NodeThread(engine_version="3.10", ports={"stomp": "off", "mqtt": "off"}) as node:
        yield "127.0.0.1", node.ports["amqp"]


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_same_close_as_rabbitmq(name, mqemu_amqp):
    scenario, _ = SCENARIOS[name]
    ours = scenario(*mqemu_amqp)
    ref = scenario(*ref_address(REF))
    print(f"{name}\n  mqemu:    {ours.key()} {ours.text!r}\n  rabbitmq: {ref.key()} {ref.text!r}")
    if name in DELIBERATE:
        expected_ref, why = DELIBERATE[name]
        assert ref.key() == expected_ref, f"RabbitMQ no longer does what DELIBERATE says ({why})"
        return
    assert ours.key() == ref.key()
    if ours.kind == "channel" or (ours.kind == "connection" and ours.code in _TEXT_CODES):
        assert _norm(ours.text) == _norm(ref.text)
    if ours.kind == "header":
        assert ours.raw == ref.raw == b"AMQP\x00\x00\x09\x01"
