"""A quorum queue's policy reaches its machine through the log (issue 13's gaps): the leader
proposes ``configure`` when the limits its settings make are not the machine's (a policy
set, changed or cleared; a queue made or rebuilt under a policy; a new leader), so every
member changes its limits at the same place of the log and the machines stay the same.
The members here are ``test_quorum_queue``'s group double."""

from __future__ import annotations

import pytest

from mqemu.broker import policies
from mqemu.broker.core import Broker
from mqemu.broker.message import Message
from mqemu.broker.quorum import QuorumQueue
from mqemu.broker.quorum_codec import decode, encode
from test_quorum_queue import QQ, Group, GroupReplicator

pytestmark = pytest.mark.timeout(10)


def two_members() -> tuple[Group, list, list[QuorumQueue]]:
    group = Group()
    nodes = [Broker(replicators=lambda vh, q, o=f"n{i}": GroupReplicator(group, o)).vhosts["/"] for i in range(2)]
    qs = [vh.declare_queue("qq", durable=True, arguments=QQ) for vh in nodes]
    group.elect(group.members[0])
    group.flush()
    return group, nodes, qs


def policy(vh, definition: dict) -> None:
    policies.set_policy(vh, policies.make_policy("/", "limits", {"pattern": "^qq$", "definition": definition,
                                                                  "apply-to": "queues"}))


def publish(vh, n: int) -> list[bool]:
    return [vh.publish_safe("", "qq", Message("", "qq", b"m%d" % k, {"delivery_mode": 2}))[1] for k in range(n)]


def test_a_policy_change_reaches_every_member_s_machine_through_the_log():
    group, nodes, qs = two_members()
    assert qs[0].machine.limits() == (None, None, None, "drop-head", 20)
    for vh in nodes:  # the metadata group applies the policy on every node
        policy(vh, {"max-length": 2, "overflow": "reject-publish", "delivery-limit": 3, "message-ttl": 60000})
    # only the leader proposed it, once
    assert [decode(c)[0] for r in group.members for c in r.pending] == ["configure"]
    group.flush()
    assert all(q.machine.limits() == (60000, 2, None, "reject-over", 3) for q in qs)
    assert qs[0].settings.max_length == 2 and qs[1].settings.max_length == 2
    assert publish(nodes[1], 1) == [False]
    group.flush()
    assert publish(nodes[1], 3) == [False, False, False]  # 1 ready: two more pass the applied check
    group.flush()
    assert len(qs[0].ready) == 3 and qs[0].machine.snapshot() == qs[1].machine.snapshot()
    assert publish(nodes[0], 1) == [True]  # over the limit: refused at once
    # cleared: the declared limits again, on every member
    for vh in nodes:
        policies.clear_policy(vh, "limits")
    group.flush()
    assert all(q.machine.limits() == (None, None, None, "drop-head", 20) for q in qs)
    assert publish(nodes[0], 1) == [False]
    group.flush()
    assert len(qs[1].ready) == 4 and qs[0].machine.snapshot() == qs[1].machine.snapshot()


def test_a_new_leader_proposes_what_the_old_one_missed():
    group, nodes, qs = two_members()
    policy(nodes[1], {"max-length": 1})  # only the follower's node has applied it so far
    assert not any(r.pending for r in group.members)
    group.elect(group.members[1])
    group.flush()
    assert qs[0].machine.limits()[1] == 1 == qs[1].machine.limits()[1]


def test_a_queue_made_under_a_policy_starts_from_its_arguments_and_takes_the_policy_through_the_log():
    """As a restart rebuilds one (the policy known before the queue): its machine must start
    where the other members' did, or the log replayed on it would give another state."""
    group = Group()
    nodes = [Broker(replicators=lambda vh, q, o=f"n{i}": GroupReplicator(group, o)).vhosts["/"] for i in range(2)]
    policy(nodes[0], {"max-length": 1, "overflow": "reject-publish"})
    qs = [vh.declare_queue("qq", durable=True, arguments={**QQ, "x-max-length": 5}) for vh in nodes]
    assert qs[0].settings.max_length == 1  # the policy's (the lower wins)
    assert qs[0].machine.limits() == qs[1].machine.limits() == (None, 5, None, "drop-head", 20)
    group.elect(group.members[0])
    group.flush()
    assert qs[0].machine.limits() == qs[1].machine.limits() == (None, 1, None, "reject-over", 20)


def test_configure_bytes_round_trip_and_bad_ones_raise():
    cmd = ("configure", 1000, 5, None, "reject-over", 2, 12.5)
    assert decode(encode(cmd)) == cmd
    bad = encode(cmd)[:-2]
    with pytest.raises(ValueError):
        decode(bad)
    with pytest.raises(ValueError):
        decode(encode(("configure", 1000, True, None, "reject-over", 2, 1.0)))
