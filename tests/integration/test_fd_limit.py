"""At the file-descriptor limit the listener logs one warning per interval (with what to do),
not a traceback per accept attempt, and accepts again once descriptors are free.

``mqemu serve`` runs in a subprocess whose RLIMIT_NOFILE is lowered so a few dozen sockets
exhaust it."""

from __future__ import annotations

import resource
import signal
import socket
import subprocess
import time

import pytest

from test_cli import SERVE, wait_ready

pytestmark = pytest.mark.timeout(60)

FD_LIMIT = 48


def _low_fd_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


def stomp_connected(port: int) -> bool:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        s.sendall(b"CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\npasscode:guest\n\n\x00")
        return s.recv(4096).startswith(b"CONNECTED\n")
    finally:
        s.close()


def test_emfile_logs_one_warning_and_recovers(tmp_path):
    ready = tmp_path / "ready.json"
    proc = subprocess.Popen([*SERVE, "--ready-file", str(ready), "--amqp-port", "0", "--stomp-port", "0",
                             "--mqtt-port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_low_fd_limit)
    held: list[socket.socket] = []
    seen: list[str] = []
    try:
        port = wait_ready(proc, ready)["stomp"]
        assert stomp_connected(port)
        # More sockets than the node has descriptors left: the kernel completes the
        # handshakes (backlog), the node's accept fails with EMFILE and keeps retrying.
        for _ in range(FD_LIMIT + 10):
            held.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        while not any("cannot accept connections" in ln for ln in seen):
            line = proc.stderr.readline()  # the pytest timeout bounds this wait
            assert line, "mqemu serve exited"
            seen.append(line)
        time.sleep(1.0)  # ~10 more accept retries at the limit: the log must not repeat it
        for s in held:
            s.close()
        held.clear()
        deadline = time.monotonic() + 20
        while True:  # the connections held in the backlog are accepted and go; then ours
            try:
                if stomp_connected(port):
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the listener did not recover"
            time.sleep(0.1)
    finally:
        for s in held:
            s.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    err = "".join(seen) + proc.stderr.read()
    warnings = [ln for ln in err.splitlines() if "cannot accept connections" in ln]
    assert len(warnings) == 1, err[-3000:]
    assert warnings[0].split()[1] == "warning"
    assert "STOMP listener cannot accept connections: EMFILE (Too many open files)" in warnings[0]
    assert "ulimit -n" in warnings[0]
    assert "Traceback" not in err
