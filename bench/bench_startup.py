"""How long `mqemu serve` takes from exec to its ready file, over N starts (median, min, max).

usage: python3 bench/bench_startup.py [N]
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time


def one_start() -> float:
    with tempfile.TemporaryDirectory() as tmp:
        ready = os.path.join(tmp, "ready.json")
        t0 = time.perf_counter()
        proc = subprocess.Popen(["mqemu", "serve", "--amqp-port", "0", "--stomp-port", "0", "--mqtt-port", "0",
                                 "--ready-file", ready, "--log-level", "warning"])
        try:
            while not os.path.exists(ready):
                if proc.poll() is not None:
                    raise SystemExit(f"mqemu serve exited with {proc.returncode}")
                time.sleep(0.002)
            return time.perf_counter() - t0
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    times = [one_start() for _ in range(n)]
    print(f"mqemu serve ready in: median {statistics.median(times) * 1000:.0f} ms, "
          f"min {min(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms over {n} starts")


if __name__ == "__main__":
    main()
