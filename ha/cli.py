"""The ``mqemu`` command: ``mqemu serve`` starts one broker node."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from typing import Any

import trio

from mqemu.broker.config import ConfigError, load_config
from mqemu.broker.profile import VERSIONS

from .logs import setup_logging
from .node import PROTOCOLS, Node, NodeOptions, NodeStartError

log = logging.getLogger("mqemu.ha.cli")


def _port(value: str) -> Any:
    if value == "off":
        return "off"
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a port is a number from 0 to 65535 or 'off', not {value!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is a number from 0 to 65535, not {port}")
    return port


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mqemu", description="A Python message broker that emulates "
                                     "Amazon MQ: RabbitMQ and ActiveMQ, over AMQP 0-9-1, STOMP and MQTT.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="start one broker node in the foreground",
                           description="Start one broker node. It runs until SIGTERM or SIGINT (Ctrl-C), "
                           "then closes its listeners, flushes its store and exits 0.")
    serve.add_argument("--engine", choices=("rabbitmq", "activemq"), default=None,
                       help="which broker's behaviour to emulate (default: rabbitmq, or the config file's)")
    serve.add_argument("--engine-version", default=None, metavar="VERSION",
                       help="which version of the engine: " + "; ".join(
                           f"{e} {', '.join(v)}" for e, v in VERSIONS.items())
                       + " (default: the newest, or the config file's engine_version)")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)")
    for proto, (_, _, defaults) in PROTOCOLS.items():
        serve.add_argument(f"--{proto}-port", type=_port, default=None, metavar="PORT",
                           help=f"{proto.upper()} port; 0 picks a free one, 'off' disables it "
                           f"(default {defaults['rabbitmq']})")
    serve.add_argument("--data-dir", default=None,
                       help="directory for durable definitions and persistent messages "
                       "(absent: memory only, nothing survives a restart)")
    serve.add_argument("--config", default=None, metavar="FILE",
                       help="TOML file with users, vhosts, permissions and limits")
    serve.add_argument("--ready-file", default=None, metavar="PATH",
                       help="once every listener is bound, write {\"amqp\": PORT, ..., \"pid\": PID} here")
    serve.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"),
                       help="how much to log (default info: listeners, errors and warnings)")
    serve.add_argument("--log-format", default="text", choices=("text", "json"),
                       help="text (key=value) or one JSON object per line")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    if args.command == "serve":
        return serve(args)
    return 2


def serve(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config, args.engine, args.engine_version)
    except ConfigError as e:
        log.error("%s", e)
        return 2
    ports = {p: getattr(args, f"{p}_port") for p in PROTOCOLS}
    node = Node(NodeOptions(engine=config.engine, engine_version=config.engine_version, host=args.host, ports=ports, data_dir=args.data_dir,
                            ready_file=args.ready_file, config=config))

    async def run() -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                await nursery.start(node.run)
                async for signum in signals:
                    log.info("stopping", extra={"signal": signal.Signals(signum).name,
                                                "connections": len(node.sessions)})
                    await node.shutdown()
                    nursery.cancel_scope.cancel()
                    break

    failures: list[NodeStartError] = []
    try:
        trio.run(run)
    except* NodeStartError as group:
        failures.extend(_leaves(group))
    for e in failures:
        log.error("%s", e)
    return 1 if failures else 0


def _leaves(group: BaseExceptionGroup) -> list:
    """The exceptions inside nested groups (one per nursery level)."""
    out = []
    for e in group.exceptions:
        out.extend(_leaves(e) if isinstance(e, BaseExceptionGroup) else [e])
    return out


if __name__ == "__main__":
    sys.exit(main())
