"""Micro-benchmark: AMQP 0-9-1 field-table decoding (the headers of a publish).

Run: python bench/bench_fieldtable.py
Prints microseconds per table for a flat table of typical application headers and for one
with a nested table and an array (x-death style). Not a test.
"""

from __future__ import annotations

import datetime
import timeit

from mqemu.protocols.amqp091.fieldtable import decode_table, encode_table

FLAT = encode_table({"trace-id": "0af7651916cd43dd8448eb211c80319c", "retries": 3, "tenant": "acme",
                     "priority-hint": True, "source": "orders-service"})
NESTED = encode_table({"x-death": [{"count": 1, "reason": "rejected", "queue": "orders", "exchange": "",
                                    "routing-keys": ["orders"],
                                    "time": datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)}],
                       "x-first-death-queue": "orders", "x-first-death-reason": "rejected"})
N = 100_000


def per_table(data: bytes) -> float:
    best = min(timeit.repeat(lambda: decode_table(data), number=N, repeat=5))
    return best / N * 1e6


if __name__ == "__main__":
    print(f"decode flat table ({len(FLAT)} B):   {per_table(FLAT):.3f} us")
    print(f"decode nested table ({len(NESTED)} B): {per_table(NESTED):.3f} us")
