"""The same raw STOMP scenarios against mqemu and a reference broker of each engine.

mqemu's rabbitmq flavour is compared with RabbitMQ's STOMP plugin (``MQEMU_REF_RABBIT_STOMP``)
and its activemq flavour with ActiveMQ (``MQEMU_REF_ACTIVEMQ_STOMP``), both ``HOST:PORT``.
Each scenario (``stomp_raw.BAD_INPUT``, ``stomp_raw.DESTINATIONS``, ``stomp_raw.ENGINE_WIRE``) returns what a client
observes, normalised: for bad input the frames received, the ERROR's ``message`` and
``receipt-id`` and whether the server closed the socket; for destinations the MESSAGE
frames' header names, the deterministic header values and bodies. The two must be equal,
except for ``stomp_raw.DELIBERATE``, where the test checks that the reference still does
what the table says (so the table stays true).
"""

from __future__ import annotations

import os

import pytest
from stomp_raw import BAD_INPUT, DELIBERATE, DESTINATIONS, ENGINE_WIRE, ref_address

pytestmark = pytest.mark.timeout(60)

REFS = {"rabbitmq": "MQEMU_REF_RABBIT_STOMP", "activemq": "MQEMU_REF_ACTIVEMQ_STOMP"}


@pytest.fixture(scope="module", params=sorted(REFS))
def pair(request):
    """(engine, mqemu address, reference address) for one engine; skips without a reference."""
    engine = request.param
    ref = os.environ.get(REFS[engine])
    if not ref:
        pytest.skip(f"{REFS[engine]} is not set (no reference {engine} STOMP to compare with)")
    from mqemu.ha.node import NodeThread

    # the versions the references run (RabbitMQ 3.10, ActiveMQ 5.17)
    version = {"rabbitmq": "3.10", "activemq": "5.17"}[engine]
    with NodeThread(engine=engine, engine_version=version, ports={"amqp": "off", "mqtt": "off"}) as node:
        yield engine, ("127.0.0.1", node.ports["stomp"]), ref_address(ref)


def _compare(engine: str, name: str, scenario, ours_addr, ref_addr) -> None:
    ours = scenario(ours_addr, engine)
    ref = scenario(ref_addr, engine)
    print(f"{engine} {name}\n  mqemu:     {ours}\n  reference: {ref}")
    if (engine, name) in DELIBERATE:
        expected, why = DELIBERATE[engine, name]
        assert ref == expected, f"the reference no longer does what DELIBERATE says ({why})"
        return
    assert ours == ref


@pytest.mark.parametrize("name", sorted(BAD_INPUT))
def test_bad_input_answered_as_reference(name, pair):
    engine, ours, ref = pair
    _compare(engine, name, BAD_INPUT[name], ours, ref)


@pytest.mark.parametrize("name", sorted(DESTINATIONS))
def test_destinations_behave_as_reference(name, pair):
    engine, ours, ref = pair
    _compare(engine, name, DESTINATIONS[name], ours, ref)


@pytest.mark.parametrize("name", sorted(ENGINE_WIRE))
def test_engine_wire_as_reference(name, pair):
    """CONNECTED's header order and the EOL after each NUL, a duplicate subscription's ERROR,
    True/False headers, transactional SENDs' receipts (issue 11 items 7-10)."""
    engine, ours, ref = pair
    _compare(engine, name, ENGINE_WIRE[name], ours, ref)
