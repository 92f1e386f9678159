"""The cluster every test here starts from."""

from __future__ import annotations

import pytest

from cluster_helpers import cluster_ready


@pytest.fixture
def cluster(mqemu_cluster):
    """``mqemu_cluster`` once it serves: see ``cluster_ready``."""
    mqemu_cluster.wait_until(cluster_ready, what="one metadata leader every node names, every link up both ways, "
                                                 "every node healthy behind the balancer with its management port")
    return mqemu_cluster
