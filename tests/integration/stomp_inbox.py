"""stomp.py listeners shared by the integration tests.

``Inbox`` queues what arrives (frames, error frames, receipt ids) for ``get(timeout=...)``;
``Collect`` keeps frames and receipt ids in a list and a set, for tests that wait on a
condition over everything received so far.
"""

from __future__ import annotations

import queue
import threading

import stomp


class Inbox(stomp.ConnectionListener):
    def __init__(self) -> None:
        self.messages: queue.Queue = queue.Queue()
        self.errors: queue.Queue = queue.Queue()
        self.receipts: queue.Queue = queue.Queue()

    def on_message(self, frame) -> None:
        self.messages.put(frame)

    def on_error(self, frame) -> None:
        self.errors.put(frame)

    def on_receipt(self, frame) -> None:
        self.receipts.put(frame.headers["receipt-id"])

    def receipt(self, receipt_id: str, timeout: float = 5) -> None:
        """Wait for the RECEIPT of the frame sent with ``receipt: receipt_id``."""
        assert self.receipts.get(timeout=timeout) == receipt_id


class Collect(stomp.ConnectionListener):
    def __init__(self) -> None:
        self.messages: list = []
        self.receipts: set[str] = set()
        self.cond = threading.Condition()

    def on_message(self, frame) -> None:
        with self.cond:
            self.messages.append(frame)
            self.cond.notify_all()

    def on_receipt(self, frame) -> None:
        with self.cond:
            self.receipts.add(frame.headers["receipt-id"])
            self.cond.notify_all()

    def wait(self, test, timeout: float = 20) -> None:
        with self.cond:
            assert self.cond.wait_for(test, timeout=timeout)
