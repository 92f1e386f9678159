"""Fault targets of a topology, without running it: node names, built-in roles, roles added
with ``add_role`` (a prefix role takes an argument, as ``leader-of:QUEUE`` will), and the
cluster options a topology checks."""

from __future__ import annotations

import pytest

from mqemu.ha.topology import Topology, TopologyError, TopologyOptions


def test_added_roles_resolve_and_prefix_roles_take_an_argument(tmp_path):
    t = Topology(TopologyOptions(mode="cluster", workdir=str(tmp_path)))
    assert [n.name for n in t.nodes] == ["node-1", "node-2", "node-3"]
    t.roles = {"node-1": "member", "node-2": "member", "node-3": "down"}
    assert [n.name for n in t.resolve("member")] == ["node-1", "node-2"]
    assert [n.name for n in t.resolve("node-3")] == ["node-3"]
    leaders = {"orders": "node-2"}
    t.add_role("leader-of:", lambda target: [n for n in t.nodes if n.name == leaders.get(target.split(":", 1)[1])])
    t.add_role("first", lambda target: t.nodes[:1])
    assert [n.name for n in t.resolve("leader-of:orders")] == ["node-2"]
    assert [n.name for n in t.resolve("first")] == ["node-1"]
    with pytest.raises(TopologyError, match="leader-of:"):  # the error lists the added roles
        t.resolve("leader-of:unknown")


def test_each_member_has_its_own_data_directory(tmp_path):
    t = Topology(TopologyOptions(mode="cluster", nodes=2, workdir=str(tmp_path)))
    dirs = [n.argv[n.argv.index("--data-dir") + 1] for n in t.nodes]
    assert dirs == [str(tmp_path / "data" / "node-1"), str(tmp_path / "data" / "node-2")]
    assert all("--standby" not in n.argv for n in t.nodes)


def test_only_a_cluster_takes_a_number_of_nodes(tmp_path):
    with pytest.raises(TopologyError, match="nodes"):
        Topology(TopologyOptions(mode="active-standby", nodes=3, workdir=str(tmp_path)))
    with pytest.raises(TopologyError, match="nodes"):
        Topology(TopologyOptions(mode="cluster", nodes=0, workdir=str(tmp_path)))
