"""`mqemu serve` as a user runs it: a subprocess, its ready file, its signals and its errors."""

import json
import signal
import socket
import subprocess
import sys
import time

import pika
import pytest

SERVE = [sys.executable, "-m", "mqemu.ha.cli", "serve"]


def start(tmp_path, *args):
    ready = tmp_path / "ready.json"
    proc = subprocess.Popen([*SERVE, "--ready-file", str(ready), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, ready


def wait_ready(proc, ready, timeout=10):
    deadline = time.monotonic() + timeout
    while not ready.exists():
        if proc.poll() is not None:
            raise AssertionError(f"mqemu serve exited {proc.returncode}: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            raise AssertionError("mqemu serve did not write its ready file")
        time.sleep(0.02)
    return json.loads(ready.read_text())


@pytest.fixture
def stop_all():
    procs = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def test_ready_file_ports_and_clean_sigterm(tmp_path, stop_all):
    proc, ready = start(tmp_path, "--amqp-port", "0", "--stomp-port", "0", "--mqtt-port", "0")
    stop_all.append(proc)
    info = wait_ready(proc, ready)
    assert info["pid"] == proc.pid
    assert {"amqp", "stomp", "mqtt"} <= set(info)
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", info["amqp"]))
    conn.channel().queue_declare("cli")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    err = proc.stderr.read()
    for proto in ("amqp", "stomp", "mqtt"):
        assert f"listening protocol={proto} host=127.0.0.1 port={info[proto]}" in err
    assert not ready.exists()
    with pytest.raises(pika.exceptions.AMQPError):
        conn.process_data_events(time_limit=2)


def test_sigint_also_stops_cleanly(tmp_path, stop_all):
    proc, ready = start(tmp_path, "--amqp-port", "0", "--stomp-port", "off", "--mqtt-port", "off",
                        "--http-port", "off")
    stop_all.append(proc)
    assert set(wait_ready(proc, ready)) == {"amqp", "pid"}
    proc.send_signal(signal.SIGINT)
    assert proc.wait(10) == 0


def test_busy_port_is_a_clear_error(tmp_path, stop_all):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc, _ = start(tmp_path, "--amqp-port", str(port), "--stomp-port", "off", "--mqtt-port", "off")
        stop_all.append(proc)
        assert proc.wait(10) == 1
    err = proc.stderr.read()
    assert f"cannot listen for AMQP on 127.0.0.1:{port}" in err and "--amqp-port" in err


def test_bad_config_exits_2_naming_the_problem(tmp_path, stop_all):
    bad = tmp_path / "bad.toml"
    bad.write_text("engine = 'kafka'\n")
    proc, _ = start(tmp_path, "--config", str(bad))
    stop_all.append(proc)
    assert proc.wait(10) == 2
    assert "engine must be one of rabbitmq, activemq" in proc.stderr.read()


def test_help_explains_each_option():
    out = subprocess.run([*SERVE, "--help"], capture_output=True, text=True, check=True).stdout
    for option in ("--engine", "--host", "--amqp-port", "--stomp-port", "--mqtt-port", "--data-dir",
                   "--config", "--ready-file", "--log-level"):
        assert option in out


def test_bad_port_value_is_refused():
    res = subprocess.run([*SERVE, "--amqp-port", "seventy"], capture_output=True, text=True)
    assert res.returncode == 2 and "a port is a number from 0 to 65535 or 'off'" in res.stderr


def test_json_logs(tmp_path, stop_all):
    proc, ready = start(tmp_path, "--amqp-port", "0", "--stomp-port", "off", "--mqtt-port", "off",
                        "--http-port", "off", "--log-format", "json")
    stop_all.append(proc)
    info = wait_ready(proc, ready)
    proc.send_signal(signal.SIGTERM)
    proc.wait(10)
    lines = [json.loads(line) for line in proc.stderr.read().splitlines() if line.startswith("{")]
    listening = [r for r in lines if r["msg"] == "listening"]
    assert listening == [{**listening[0], "protocol": "amqp", "port": info["amqp"], "level": "info"}]


def test_http_listener_in_the_ready_file_and_a_busy_http_port_keeps_the_node_up(tmp_path, stop_all):
    import urllib.error
    import urllib.request

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        proc, ready = start(tmp_path, "--amqp-port", "0", "--stomp-port", "off", "--mqtt-port", "off",
                            "--http-port", str(busy))
        stop_all.append(proc)
        assert set(wait_ready(proc, ready)) == {"amqp", "pid"}  # up, without HTTP
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert f"cannot listen for HTTP on 127.0.0.1:{busy}" in proc.stderr.read()
    proc, ready = start(tmp_path, "--amqp-port", "off", "--stomp-port", "off", "--mqtt-port", "off",
                        "--http-port", "0")
    stop_all.append(proc)
    info = wait_ready(proc, ready)
    with pytest.raises(urllib.error.HTTPError) as e:  # the API answers: 401 without credentials
        urllib.request.urlopen(f"http://127.0.0.1:{info['http']}/api/overview", timeout=10)
    assert e.value.code == 401
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert f"listening protocol=http host=127.0.0.1 port={info['http']}" in proc.stderr.read()
