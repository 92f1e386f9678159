"""``mqemu aws`` as a subprocess for synchronous code (the ``mqemu_aws`` fixture, scripts):
its endpoint, a boto3 client bound to it, and helpers to wait for a broker's state and
read its endpoints.

The process runs in its own process group; ``stop()`` sends it SIGTERM (it stops every
broker's nodes, each in its own process group, and exits) and SIGKILL after a grace (the
nodes then die with it: they have the parent-death signal). ``restart()`` stops and starts
it on the same data dir, as a test of what survives a restart.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

from ..topology import _die_with_parent

STOP_GRACE = 30.0


class AwsControlPlane:
    def __init__(self, workdir: str, *, timing: str = "fast", region: str = "us-east-1",
                 endpoints: str = "tls") -> None:
        self.workdir = workdir
        self.data_dir = os.path.join(workdir, "aws-data")
        self.ready_file = os.path.join(workdir, "aws.ready.json")
        self.log_path = os.path.join(workdir, "aws.log")
        self.timing = timing
        self.region = region
        self.endpoints_style = endpoints  # "tls" (Amazon MQ's endpoints) or "plain"
        self.ca_file: str | None = None  # the CA the brokers' TLS endpoints are verified with
        self.proc: subprocess.Popen | None = None
        self.endpoint = ""
        self.client: Any = None

    def start(self, timeout: float = 30) -> "AwsControlPlane":
        try:
            os.unlink(self.ready_file)
        except FileNotFoundError:
            pass
        argv = [sys.executable, "-m", "mqemu.ha.cli", "aws", "--port", "0", "--data-dir", self.data_dir,
                "--ready-file", self.ready_file, "--timing", self.timing, "--region", self.region,
                "--endpoints", self.endpoints_style, "--log-format", "json"]
        with open(self.log_path, "ab") as out:
            # its own process group, and SIGKILL if the test process dies without its teardown
            # (the control plane's nodes die with it the same way)
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mqemu aws exited with {self.proc.returncode} (see {self.log_path})")
            try:
                with open(self.ready_file) as f:
                    ready = json.load(f)
            except (OSError, ValueError):
                time.sleep(0.05)
                continue
            if ready.get("pid") == self.proc.pid:
                self.endpoint = ready["endpoint"]
                self.ca_file = ready.get("ca")
                self.client = self.boto3_client()
                return self
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"mqemu aws did not start within {timeout} s (see {self.log_path})")

    def boto3_client(self) -> Any:
        import boto3  # type: ignore[import-untyped]

        return boto3.client("mq", endpoint_url=self.endpoint, region_name=self.region,
                            aws_access_key_id="mqemu", aws_secret_access_key="mqemu")

    def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        for sig, wait in ((signal.SIGTERM, STOP_GRACE), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        self.proc = None

    def restart(self) -> "AwsControlPlane":
        self.stop()
        return self.start()

    # -- helpers ---------------------------------------------------------------------------
    def wait_state(self, broker_id: str, state: str, timeout: float = 60) -> dict[str, Any]:
        """DescribeBroker until the broker is in ``state``; returns that description."""
        deadline = time.monotonic() + timeout
        seen = None
        while time.monotonic() < deadline:
            described = self.client.describe_broker(BrokerId=broker_id)
            seen = described["BrokerState"]
            if seen == state:
                return described
            if seen == "CREATION_FAILED":
                break
            time.sleep(0.05)
        raise TimeoutError(f"broker {broker_id} is {seen}, not {state}, after {timeout} s (see {self.log_path})")

    def wait_gone(self, broker_id: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.client.describe_broker(BrokerId=broker_id)
            except self.client.exceptions.NotFoundException:
                return
            time.sleep(0.05)
        raise TimeoutError(f"broker {broker_id} is still there after {timeout} s")

    def mqemu_broker(self, broker_id: str) -> dict[str, Any]:
        """mqemu's own view of a broker (``GET /mqemu/brokers/{id}``): ``ca`` and ``nodes``
        (each node's ``name``, ``role``, own ``endpoints`` and ``console``)."""
        import urllib.request

        with urllib.request.urlopen(f"{self.endpoint}/mqemu/brokers/{broker_id}", timeout=10) as r:
            return json.loads(r.read())

    def ssl_context(self) -> Any:
        """A client ``ssl.SSLContext`` that verifies the brokers' TLS endpoints (their names and
        the control plane's CA)."""
        import ssl

        assert self.ca_file, "the control plane runs with plain endpoints"
        return ssl.create_default_context(cafile=self.ca_file)

    def endpoints(self, described: dict[str, Any], scheme: str) -> list[tuple[str, int]]:
        """(host, port) of every instance's ``scheme`` endpoint, in instance order."""
        out = []
        for instance in described["BrokerInstances"]:
            for url in instance["Endpoints"]:
                if url.startswith(f"{scheme}://"):
                    host, _, port = url.split("://", 1)[1].rpartition(":")
                    out.append((host, int(port)))
        return out

    def __enter__(self) -> "AwsControlPlane":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
