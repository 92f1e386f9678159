"""The pysyncobj evaluation behind ARCHITECTURE.md's "Consensus" section (issue 13 item 6).

Three pysyncobj members in three OS processes on 127.0.0.1 with file journals; the leader
proposes N small commands (16 bytes) asynchronously and the script times until every
callback has fired (a majority committed and the leader applied). Then the leader is killed
(-9) and restarted from its journal, and the script checks the counter it recovers.

pysyncobj is not a dependency of mqemu: `pip install pysyncobj` to run this.
Usage: python bench/bench_pysyncobj_eval.py [N] [DIR]
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import time


def _member(port: int, ports: list[int], journal: str, ready, cmd_q, out_q) -> None:
    from pysyncobj import SyncObj, SyncObjConf, replicated

    class Counter(SyncObj):
        def __init__(self) -> None:
            self.count = 0  # before SyncObj's tick thread starts applying the journal
            conf = SyncObjConf(journalFile=journal, appendEntriesUseBatch=True,
                               dynamicMembershipChange=False)
            super().__init__(f"127.0.0.1:{port}", [f"127.0.0.1:{p}" for p in ports if p != port], conf)

        @replicated
        def add(self, payload: bytes) -> int:
            self.count += 1
            return self.count

    obj = Counter()
    ready.set()
    while True:
        cmd = cmd_q.get()
        if cmd[0] == "state":
            st = obj.getStatus()
            out_q.put((obj._isLeader(), obj.count, {k: st[k] for k in ("commit_idx", "last_applied", "log_len", "raft_term", "leader")}))
        elif cmd[0] == "run":
            n = cmd[1]
            done = [0]
            t0 = time.perf_counter()

            def cb(res, err, done=done) -> None:
                done[0] += 1

            for _ in range(n):
                obj.add(b"x" * 16, callback=cb)
            while done[0] < n:
                time.sleep(0.001)
            out_q.put(time.perf_counter() - t0)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    d = sys.argv[2] if len(sys.argv) > 2 else "/tmp/pysyncobj-eval"
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        os.unlink(os.path.join(d, f))
    ports = [47311, 47312, 47313]
    ctx = mp.get_context("fork")
    procs, qs = [], []
    for p in ports:
        ready, cq, oq = ctx.Event(), ctx.Queue(), ctx.Queue()
        pr = ctx.Process(target=_member, args=(p, ports, f"{d}/j{p}", ready, cq, oq), daemon=True)
        pr.start()
        ready.wait()
        procs.append(pr)
        qs.append((cq, oq))
    leader = None
    t_el = time.perf_counter()
    while leader is None:
        for i, (cq, oq) in enumerate(qs):
            cq.put(("state",))
            if oq.get()[0]:
                leader = i
        time.sleep(0.05)
    print(f"leader elected after {time.perf_counter() - t_el:.2f} s: member {leader}")
    for rnd in range(3):
        qs[leader][0].put(("run", n))
        dt = qs[leader][1].get()
        print(f"round {rnd}: {n} commands committed in {dt:.2f} s = {n / dt:.0f} entries/s")
    # kill -9 the leader and restart it from its journal
    qs[leader][0].put(("state",))
    before = qs[leader][1].get()[1]
    os.kill(procs[leader].pid, signal.SIGKILL)
    procs[leader].join()
    ready, cq, oq = ctx.Event(), ctx.Queue(), ctx.Queue()
    p = ports[leader]
    pr = ctx.Process(target=_member, args=(p, ports, f"{d}/j{p}", ready, cq, oq), daemon=True)
    pr.start()
    ready.wait()
    time.sleep(8)
    cq.put(("state",))
    print(f"killed leader had applied {before}; restarted from its journal: {oq.get()}")
    for proc in procs + [pr]:
        proc.kill()


if __name__ == "__main__":
    main()
