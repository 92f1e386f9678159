"""``mqemu`` commands as processes of their own, for tests that drive a topology from the
command line as a user's shells would. Every process is started in its own process group and
stopped with it (``close``): SIGTERM, then SIGKILL of the group."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

MQEMU = [sys.executable, "-m", "mqemu.ha.cli"]


class Process:
    """One ``mqemu ...`` process; ``close()`` stops its whole process group."""

    def __init__(self, args: list[str], log: str) -> None:
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(MQEMU + args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def output(self) -> str:
        with open(self.log, encoding="utf-8", errors="replace") as f:
            return f.read()

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.proc.args} did not end in {timeout} s:\n{self.output()}") from None

    def close(self, grace: float = 15) -> None:
        if self.proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        self._signal(signal.SIGKILL)  # whatever is left of the group
        self.proc.wait(10)

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass


class HaUp(Process):
    """``mqemu ha up ARGS --ready-file ...``; ``ready()`` waits for the ready file with the
    control URL in it (the topology is up and its control endpoint answers)."""

    def __init__(self, tmp: Any, *args: str) -> None:
        self.ready_path = os.path.join(tmp, "ha-ready.json")
        super().__init__(["ha", "up", "--ready-file", self.ready_path, "--workdir", str(tmp), *args],
                         os.path.join(tmp, "ha-up.log"))

    def ready(self, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with open(self.ready_path) as f:
                    info = json.load(f)
            except (OSError, ValueError):
                pass
            else:  # written once, whole, when the control endpoint answers
                assert info.get("control"), info
                return info
            assert self.proc.poll() is None, f"mqemu ha up exited {self.proc.returncode}:\n{self.output()}"
            time.sleep(0.05)
        raise AssertionError(f"mqemu ha up wrote no ready file with a control URL:\n{self.output()}")


def mqemu(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run one ``mqemu`` command to its end (``mqemu fault ...``, ``mqemu check ...``)."""
    return subprocess.run(MQEMU + list(args), capture_output=True, text=True, timeout=timeout)


def wait_for_lines(path: str, n: int, timeout: float) -> None:
    """Until the file has ``n`` lines (a history is written in batches of 256 records)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(path, "rb") as f:
                if f.read().count(b"\n") >= n:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{path} did not reach {n} lines in {timeout} s")
