"""``mqemu aws``: its arguments and its run (the HTTP stack is imported only when it runs)."""

from __future__ import annotations

import argparse
import logging
import signal
from typing import Any

import trio

log = logging.getLogger("mqemu.ha.aws")


def add_aws_command(sub: Any) -> None:
    aws = sub.add_parser("aws", help="serve the Amazon MQ API (boto3's mq client, aws mq ...) over real brokers",
                         description="Serve the Amazon MQ REST API (2017-11-27) on one HTTP port. CreateBroker "
                         "starts real mqemu nodes (SINGLE_INSTANCE: one node; ACTIVE_STANDBY_MULTI_AZ: the "
                         "active/standby pair; CLUSTER_MULTI_AZ: three nodes behind a balancer), RebootBroker "
                         "restarts them (a failover for the pair, one node at a time for a cluster), DeleteBroker "
                         "stops them. Point boto3 or the AWS CLI at it with its endpoint URL.")
    aws.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    aws.add_argument("--port", type=int, default=0, help="HTTP port (default 0: a free one)")
    aws.add_argument("--data-dir", default=None,
                     help="keep brokers, users, configurations, tags and each broker's data here, so that they "
                     "survive a restart (absent: a temporary directory, removed at exit)")
    aws.add_argument("--ready-file", default=None, metavar="PATH",
                     help='once listening, write {"endpoint": "http://127.0.0.1:PORT", "pid": PID, "ca": CA_FILE} here '
                     '(no "ca" with --endpoints plain)')
    aws.add_argument("--timing", default="fast", metavar="PROFILE",
                     help="how long brokers stay in CREATION/REBOOT/DELETION_IN_PROGRESS beyond their nodes' "
                     "own time: fast (0, default), aws (minutes, as Amazon MQ) or create=S,reboot=S,delete=S")
    aws.add_argument("--endpoints", default="tls", choices=("tls", "plain"),
                     help="tls (default): brokers listen as on Amazon MQ, over TLS only (ActiveMQ amqp+ssl, "
                     "stomp+ssl, mqtt+ssl, wss; RabbitMQ amqps; the console over HTTPS), with a certificate "
                     "signed by the CA in DATA_DIR/tls/ca.pem (also the ready file's \"ca\"); plain: the "
                     "plain listeners (amqp, stomp, mqtt on both engines) and an HTTP console instead")
    aws.add_argument("--region", default="us-east-1", help="the region in ARNs (default us-east-1)")
    aws.add_argument("--account", default="123456789012", help="the account in ARNs")
    aws.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    aws.add_argument("--log-format", default="text", choices=("text", "json"))
    aws.set_defaults(run=run_aws)


def run_aws(args: argparse.Namespace) -> int:
    try:
        import botocore  # type: ignore[import-untyped]  # noqa: F401 (its mq model: the specification)

        from .server import AwsOptions, run_control_plane
        from .state import parse_timing
    except ImportError as e:  # pragma: no cover - an install without the HTTP stack
        log.error("mqemu aws needs hypercorn, starlette and botocore: %s", e)
        return 2
    try:
        timing = parse_timing(args.timing)
    except ValueError as e:
        log.error("%s", e)
        return 2
    options = AwsOptions(host=args.host, port=args.port, data_dir=args.data_dir, ready_file=args.ready_file,
                         timing=timing, region=args.region, account=args.account, endpoints=args.endpoints)

    async def run() -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                await nursery.start(run_control_plane, options)
                async for signum in signals:
                    log.info("stopping the control plane and its brokers",
                             extra={"signal": signal.Signals(signum).name})
                    nursery.cancel_scope.cancel()
                    break

    failures: list[BaseException] = []
    try:
        trio.run(run)
    except* OSError as group:  # the HTTP port (the brokers' own failures are their CREATION_FAILED)
        failures.extend(_leaves(group))
    for failure in failures:
        log.error("mqemu aws cannot listen on %s:%d: %s", args.host, args.port, failure)
    return 1 if failures else 0


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    out: list[BaseException] = []
    for e in group.exceptions:
        out.extend(_leaves(e) if isinstance(e, BaseExceptionGroup) else [e])
    return out
