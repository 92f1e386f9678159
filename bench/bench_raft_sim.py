"""The long run of the Raft simulation (issue 13 item 6): many seeds, long schedules.

Each seed runs ``--ticks`` ticks of faults (crashes, pauses, partitions, drops, duplicates,
delays; see ``mqemu.ha.raft.sim``) with the safety checks on every step, then heals and
requires a leader and a new entry committed within ``--bound`` ticks (and applied on every
member within 3 000 more). Simulated time
assumes the runner's default tick (10 ms). Stops at the first violation and prints its seed
(``Sim(seed, members)`` replays it exactly).

Usage: python bench/bench_raft_sim.py [--seeds N] [--first S] [--ticks T] [--members 3,5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from mqemu.ha.raft.sim import Sim, Violation

TICK_SECONDS = 0.01


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, default=1000)
    p.add_argument("--first", type=int, default=100000)
    p.add_argument("--ticks", type=int, default=20000)
    p.add_argument("--bound", type=int, default=400)
    p.add_argument("--members", default="3,5")
    a = p.parse_args()
    t0 = time.perf_counter()
    ticks = 0
    recoveries: list[int] = []
    totals: dict[str, int] = {}
    sizes = [int(x) for x in a.members.split(",")]
    for k in range(a.seeds):
        seed = a.first + k
        members = sizes[k % len(sizes)]
        sim = Sim(seed, members)
        try:
            sim.run(a.ticks)
            recoveries.append(sim.liveness(a.bound))
        except Violation as e:
            print(f"VIOLATION (members={members}): {e}")
            return 1
        ticks += sim.now
        for key, v in sim.stats.items():
            totals[key] = totals.get(key, 0) + v
        if (k + 1) % 50 == 0:
            print(f"{k + 1} seeds, {ticks * TICK_SECONDS / 3600:.2f} h simulated, "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
    wall = time.perf_counter() - t0
    print(f"seeds: {a.seeds} (members {a.members}), no violation")
    print(f"simulated: {ticks} ticks = {ticks * TICK_SECONDS / 3600:.2f} h at {TICK_SECONDS * 1000:.0f} ms a tick; "
          f"wall {wall:.0f} s ({ticks / wall:,.0f} ticks/s)")
    print(f"after the faults: a leader and a new entry committed in median {statistics.median(recoveries)} ticks, "
          f"max {max(recoveries)}")
    print("totals: " + ", ".join(f"{k}={v}" for k, v in totals.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
