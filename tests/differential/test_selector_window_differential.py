"""Selectors over a deep queue against a reference ActiveMQ: a queue dispatches from at most
``maxPageSize`` (200) messages, so a selector consumer does not get a match that sits behind
more than 200 messages it does not match (mqemu: ``selective.SCAN_WINDOW``), and does get one
behind fewer. Absence is observed by waiting ``QUIET`` seconds, on both brokers alike.

Set ``MQEMU_REF_ACTIVEMQ_STOMP`` (``HOST:PORT``) to run it.
"""

from __future__ import annotations

import os
import queue
import uuid

import pytest
import stomp

REF = os.environ.get("MQEMU_REF_ACTIVEMQ_STOMP")
pytestmark = [pytest.mark.skipif(not REF, reason="MQEMU_REF_ACTIVEMQ_STOMP is not set (no reference ActiveMQ)"),
              pytest.mark.timeout(90)]

QUIET = 3.0


class Inbox(stomp.ConnectionListener):
    def __init__(self) -> None:
        self.messages: queue.Queue = queue.Queue()
        self.receipts: queue.Queue = queue.Queue()

    def on_message(self, frame) -> None:
        self.messages.put(frame.body)

    def on_receipt(self, frame) -> None:
        self.receipts.put(frame.headers["receipt-id"])


def hit_behind(address: tuple[str, int], misses: int) -> str | None:
    """Send ``misses`` messages a selector does not match and one it does, then subscribe
    with it; what arrives within QUIET seconds (None: nothing)."""
    conn = stomp.Connection12([address], heartbeats=(0, 0))
    inbox = Inbox()
    conn.set_listener("inbox", inbox)
    conn.connect("guest", "guest", wait=True)
    dest = f"/queue/mqemu-diff-window-{uuid.uuid4().hex[:8]}"
    try:
        for i in range(misses):
            conn.send(dest, f"m{i}", headers={"kind": "miss"})
        conn.send(dest, "hit", headers={"kind": "hit"}, receipt="sent")
        assert inbox.receipts.get(timeout=30) == "sent"
        conn.subscribe(dest, id="1", headers={"selector": "kind = 'hit'"}, ack="auto")
        try:
            return inbox.messages.get(timeout=QUIET)
        except queue.Empty:
            return None
    finally:
        conn.unsubscribe("1")
        conn.disconnect()


@pytest.mark.parametrize("misses, expected", [(150, "hit"), (250, None)])
def test_selector_window_same_as_activemq(mqemu_start, misses, expected):
    node = mqemu_start(engine="activemq")
    host, port = REF.rsplit(":", 1)
    ref = hit_behind((host, int(port)), misses)
    ours = hit_behind(("127.0.0.1", node.ports["stomp"]), misses)
    print(f"{misses} misses first: activemq {ref!r}, mqemu {ours!r}")
    assert ref == expected, "ActiveMQ no longer behaves as this test says"
    assert ours == ref
