"""The ``mqemu`` command: ``mqemu serve`` starts one broker node; ``mqemu ha up`` a topology
of node processes behind fault proxies, ``mqemu ha status`` and ``mqemu fault`` read and
break a running one through its control endpoint."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from typing import Any

import trio

from mqemu.broker.activemq_xml import apply_activemq_xml, load_activemq_xml, summary
from mqemu.broker import rabbitmq_conf
from mqemu.broker.config import ConfigError, load_config
from mqemu.broker.profile import VERSIONS

from .aws.command import add_aws_command
from .checker import add_check_command
from .logs import setup_logging
from .balancer import ALGORITHMS
from .links import LINK_TIMINGS, parse_peers
from .listeners import ALL_NAMES, LAYOUTS
from .node import PROTOCOLS, TIMINGS, ClusterOptions, Node, NodeLockLost, NodeOptions, NodeStartError
from .tls import TLSOptions
from .topology import MODES, NETWORK_FAULTS
from .workload import add_workload_command

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


def _interval_ms(value: str) -> int:
    try:
        ms = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"an interval is a number of milliseconds, not {value!r}") from None
    if ms < 10:
        raise argparse.ArgumentTypeError(f"an interval is at least 10 ms, not {ms}")
    return ms


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
    for proto, (_, defaults) in PROTOCOLS.items():
        serve.add_argument(f"--{proto}-port", type=_port, default=None, metavar="PORT",
                           help=f"{proto.upper()} port; 0 picks a free one, 'off' disables it "
                           f"(default {defaults['rabbitmq']})")
    for name in ALL_NAMES:
        if name not in PROTOCOLS:
            serve.add_argument(f"--{name}-port", type=_port, default=None, metavar="PORT",
                               help=argparse.SUPPRESS)
    tls = serve.add_argument_group(
        "TLS and WebSocket", "TLS listeners: --amqps-port, --stomps-port, --mqtts-port (default 5671, 61614, "
        "8883). WebSocket listeners: RabbitMQ --stomp-ws-port (15674) and --mqtt-ws-port (15675), path /ws, "
        "over TLS --stomp-wss-port (15673), --mqtt-wss-port (15676); ActiveMQ --ws-port (61614) and over TLS "
        "--wss-port (61619), STOMP or MQTT by subprotocol. Each takes a port, 0 or 'off'; a port given opens "
        "the listener.")
    tls.add_argument("--tls", action="store_true",
                     help="make a CA and a node certificate at start (kept in --data-dir/tls, else a temp dir; "
                     "the log and the ready file's \"ca\" name the CA file) and open the TLS listeners")
    tls.add_argument("--tls-cert", default=None, metavar="FILE", help="the node's certificate chain (PEM) instead")
    tls.add_argument("--tls-key", default=None, metavar="FILE", help="its private key (PEM)")
    tls.add_argument("--tls-ca", default=None, metavar="FILE",
                     help="the CA file clients should trust, named in the ready file")
    tls.add_argument("--tls-verify-clients", action="store_true",
                     help="ask every TLS client (amqps, stomps, mqtts, wss; not HTTPS) for a certificate signed "
                     "by the CA (the generated one, else --tls-ca) and refuse one without in the handshake "
                     "(RabbitMQ's verify_peer with fail_if_no_peer_cert, ActiveMQ's needClientAuth)")
    tls.add_argument("--auth-mechanisms", default=None, metavar="LIST",
                     help="the AMQP login mechanisms offered, comma-separated from PLAIN, AMQPLAIN, EXTERNAL "
                     "(default PLAIN,AMQPLAIN, as RabbitMQ's auth_mechanisms). EXTERNAL (RabbitMQ's "
                     "rabbitmq_auth_mechanism_ssl) logs a TLS client with a verified certificate "
                     "(--tls-verify-clients) in as the user its common name names; STOMP and MQTT clients "
                     "without a login on such a connection are that user too (ssl_cert_login)")
    tls.add_argument("--ssl-cert-login-from", choices=("common_name", "distinguished_name"), default="common_name",
                     help="which part of a client certificate's subject names the EXTERNAL user: its CN "
                     "(default) or the whole distinguished name as RFC 4514 writes it (RabbitMQ's "
                     "ssl_cert_login_from)")
    tls.add_argument("--ws", action="store_true",
                     help="open the engine's WebSocket listeners (the TLS ones too with TLS)")
    serve.add_argument("--profile", choices=LAYOUTS, default="engine",
                       help="engine: the engine's own listeners; amazon-mq: only Amazon MQ's TLS endpoints "
                       "(ActiveMQ amqps 5671, stomps 61614, mqtts 8883, wss 61619; RabbitMQ amqps 5671), "
                       "with a generated certificate unless --tls-cert is given")
    serve.add_argument("--http-port", type=_port, default=None, metavar="PORT",
                       help="HTTP port of the management API; 0 picks a free one, 'off' disables it "
                       "(default 15672 on rabbitmq, 8161 on activemq; none on --profile amazon-mq "
                       "unless given)")
    serve.add_argument("--https-port", type=_port, default=None, metavar="PORT",
                       help="HTTPS port of the management API or console, opened with TLS; 0 picks a "
                       "free one, 'off' disables it (default 15671 on rabbitmq, 8162 on activemq; with "
                       "--profile amazon-mq 443 on rabbitmq, 8162 on activemq)")
    serve.add_argument("--collect-statistics-interval", type=_interval_ms, default=5000, metavar="MS",
                       help="how often the management API and the web page sample the message counters for "
                       "their rates, in milliseconds (default 5000, RabbitMQ's collect_statistics_interval)")
    serve.add_argument("--definitions", default=None, metavar="FILE",
                       help="load a RabbitMQ definitions export (users, vhosts, permissions, policies, "
                       "exchanges, queues, bindings) at start, as RabbitMQ's load_definitions")
    serve.add_argument("--data-dir", default=None,
                       help="directory for durable definitions and persistent messages "
                       "(absent: memory only, nothing survives a restart)")
    serve.add_argument("--config", default=None, metavar="FILE",
                       help="TOML file with users, vhosts, permissions and limits")
    serve.add_argument("--activemq-xml", default=None, metavar="FILE",
                       help="ActiveMQ engine: an activemq.xml (Spring <beans> or Amazon MQ's <broker>) whose "
                       "destinations, users, authorization entries, redelivery and dead-letter policies apply "
                       "over --config's; what is not applied is logged at start")
    serve.add_argument("--rabbitmq-conf", default=None, metavar="FILE",
                       help="RabbitMQ engine: a rabbitmq.conf (key = value lines) whose consumer_timeout and "
                       "heartbeat apply over --config's [amqp]; the keys not applied are logged at start")
    serve.add_argument("--ready-file", default=None, metavar="PATH",
                       help="once every listener is bound, write {\"amqp\": PORT, ..., \"pid\": PID} here")
    serve.add_argument("--name", default="node-1",
                       help="the node's name, carried by every log line (default node-1)")
    serve.add_argument("--standby", action="store_true",
                       help="if another node holds --data-dir's lock, wait for it as a standby (no listener "
                       "open) and take over when it goes, instead of exiting")
    serve.add_argument("--timing", choices=tuple(TIMINGS), default="fast",
                       help="lock retry and keep-alive periods: fast (0.1 s / 0.5 s) or engine "
                       "(ActiveMQ's 10 s retry)")
    serve.add_argument("--status-file", default=None, metavar="PATH",
                       help="keep {\"name\", \"pid\", \"role\", \"ports\", \"events\"} here, rewritten on "
                       "every role change")
    serve.add_argument("--control-url", default=None, metavar="URL",
                       help="the topology's control endpoint (ha/control.py): the web page at / shows its "
                       "nodes, roles and fault timeline (a topology passes it to its nodes)")
    serve.add_argument("--cluster-port", type=int, default=None, metavar="PORT",
                       help="be a cluster member: listen for the other nodes' links here (0: a free port)")
    serve.add_argument("--cluster-name", default="mqemu", help="the cluster's name (a peer of another is refused)")
    serve.add_argument("--peers", default="", metavar="NAME=HOST:PORT,...",
                       help="the other members' cluster ports (with --cluster-port)")
    serve.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"),
                       help="how much to log (default info: listeners, errors and warnings)")
    serve.add_argument("--log-format", default="text", choices=("text", "json"),
                       help="text (key=value) or one JSON object per line")
    _add_ha_commands(sub)
    add_aws_command(sub)
    add_workload_command(sub)
    add_check_command(sub)
    return parser


def _add_ha_commands(sub: Any) -> None:
    ha = sub.add_parser("ha", help="topologies: a single node, an active/standby pair or a cluster, behind fault "
                        "proxies")
    ha_sub = ha.add_subparsers(dest="ha_command", required=True)
    up = ha_sub.add_parser("up", help="start a topology in the foreground (until SIGTERM or Ctrl-C)",
                           description="Start the nodes as separate processes behind one proxy per node and "
                           "protocol; clients use the proxies' ports. Prints the endpoints and failover strings. "
                           "--mode external starts no node: only proxies in front of brokers you run (--target), "
                           "for the same network faults against a real RabbitMQ or ActiveMQ.")
    up.add_argument("--mode", choices=tuple(MODES), default="active-standby",
                    help="cluster: RabbitMQ-style members, each with its own store, behind a balancer; "
                    "external: only proxies in front of brokers you run")
    up.add_argument("--nodes", type=int, default=None, help="cluster: how many nodes (default 3)")
    up.add_argument("--balancer-algorithm", choices=ALGORITHMS, default="flow-hash",
                    help="cluster: how the balancer picks a healthy node (default flow-hash, as an NLB)")
    up.add_argument("--target", action="append", default=[], metavar="[NODE/]PROTOCOL=HOST:PORT",
                    help="external mode: a broker endpoint to put a proxy in front of, e.g. amqp=127.0.0.1:5672 "
                    "or node-2/stomp=10.0.0.2:61613 (NODE defaults to node-1; repeatable)")
    up.add_argument("--engine", choices=("rabbitmq", "activemq"), default=None,
                    help="default: activemq for active-standby, rabbitmq for single")
    up.add_argument("--data-dir", default=None,
                    help="the shared data directory (active-standby default: one in the work directory)")
    up.add_argument("--timing", choices=tuple(TIMINGS), default="fast",
                    help="fast (for tests) or engine: ActiveMQ's 10 s lock retry; a cluster's NLB health "
                    "checks (30 s) and RabbitMQ's 60 s net_ticktime")
    up.add_argument("--config", default=None, metavar="FILE", help="the nodes' TOML config file")
    up.add_argument("--activemq-xml", default=None, metavar="FILE",
                    help="the nodes' activemq.xml (ActiveMQ engine; see mqemu serve --activemq-xml)")
    up.add_argument("--rabbitmq-conf", default=None, metavar="FILE",
                    help="the nodes' rabbitmq.conf (RabbitMQ engine; see mqemu serve --rabbitmq-conf)")
    up.add_argument("--workdir", default=None, help="where node logs and status files go (default: a temp dir)")
    up_tls = up.add_argument_group(
        "TLS and WebSocket", "the nodes' TLS (amqps, stomps, mqtts) and WebSocket listeners, each behind its own "
        "proxy (a cluster: the balancer), the TLS handshake passing through untouched")
    up_tls.add_argument("--tls", action="store_true",
                        help="one CA and node certificate for every node (made in DATA_DIR/tls, else WORKDIR/tls; "
                        "the ready file's \"ca\" names the CA file) and their TLS endpoints")
    up_tls.add_argument("--tls-cert", default=None, metavar="FILE", help="the nodes' certificate chain instead")
    up_tls.add_argument("--tls-key", default=None, metavar="FILE", help="its private key")
    up_tls.add_argument("--tls-ca", default=None, metavar="FILE", help="the CA file clients trust")
    up_tls.add_argument("--tls-verify-clients", action="store_true",
                        help="the nodes ask clients for a certificate from the CA (see mqemu serve)")
    up_tls.add_argument("--ws", action="store_true", help="the nodes' WebSocket endpoints too")
    up_tls.add_argument("--profile", choices=LAYOUTS, default="engine",
                        help="amazon-mq: only Amazon MQ's TLS endpoints (see mqemu serve --profile)")
    up.add_argument("--ready-file", default=None, metavar="PATH",
                    help="once every node has its role, write the topology as JSON here")
    status = ha_sub.add_parser("status", help="print a running topology as JSON")
    status.add_argument("--control", required=True, metavar="URL", help="the topology's control URL")
    fault = sub.add_parser("fault", help="break a running topology: kill, stop, restart, pause, network faults",
                           description="ACTION: kill, stop, start, restart, pause, resume (processes); "
                           f"{', '.join(NETWORK_FAULTS)} (network, on the target's proxies); heal (remove "
                           "network faults, and in a cluster every partition); partition (a cluster: cut TARGET "
                           "off from --from). TARGET: a node name, active, standby, member, balancer, "
                           "leader-of:QUEUE or follower-of:QUEUE (a cluster's quorum queue, vhost/name "
                           "outside /) or all (default all).")
    fault.add_argument("action")
    fault.add_argument("target", nargs="?", default="all")
    fault.add_argument("--control", required=True, metavar="URL", help="the topology's control URL")
    fault.add_argument("--protocol", choices=ALL_NAMES, default=None,
                       help="only this endpoint's proxy (amqp, amqps, wss, ...)")
    fault.add_argument("--stream", choices=("upstream", "downstream"), default=None,
                       help="direction of a network fault (default downstream: server to client)")
    fault.add_argument("--toxicity", type=float, default=None, help="probability a connection is affected")
    fault.add_argument("--name", default=None, help="the network fault's name (heal removes it by name)")
    fault.add_argument("--from", dest="from_", default=None, metavar="NODE,...",
                       help="partition: the nodes TARGET is cut off from (default: every other node)")
    fault.add_argument("--one-way", action="store_true",
                       help="partition: cut only what TARGET sends (it still hears the others)")
    fault.add_argument("--silent", action="store_true",
                       help="partition: drop the bytes and keep connections open (found by heartbeat timeouts) "
                       "instead of refusing and cutting them")
    fault.add_argument("--attr", action="append", default=[], metavar="KEY=VALUE",
                       help="a network fault's attribute, e.g. latency=200 jitter=50 (repeatable)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(getattr(args, "log_level", "info"), getattr(args, "log_format", "text"))
    if args.command == "serve":
        return serve(args)
    if hasattr(args, "run"):  # subcommands whose function lives in their own module
        return int(args.run(args))
    if args.command == "ha" and args.ha_command == "up":
        return ha_up(args)
    if args.command == "ha" and args.ha_command == "status":
        return _control(args, lambda c: c.status())
    if args.command == "fault":
        return _control(args, lambda c: c.fault(args.action, args.target, **_fault_params(args)))
    return 2


def ha_up(args: argparse.Namespace) -> int:
    from .harness import open_topology_of
    from .topology import Topology, TopologyError, TopologyOptions

    targets = {}
    for item in args.target:
        key, sep, address = item.partition("=")
        if not sep:
            log.error("--target takes [NODE/]PROTOCOL=HOST:PORT, not %r", item)
            return 2
        targets[key] = address
    try:
        topology = Topology(TopologyOptions(mode=args.mode, engine=args.engine, data_dir=args.data_dir,
                                            timing=args.timing, config_file=args.config, workdir=args.workdir,
                                            activemq_xml=args.activemq_xml, rabbitmq_conf=args.rabbitmq_conf,
                                            ready_file=args.ready_file, nodes=args.nodes,
                                            balancer_algorithm=args.balancer_algorithm, targets=targets or None,
                                            tls=args.tls, tls_cert=args.tls_cert, tls_key=args.tls_key,
                                            tls_ca=args.tls_ca, tls_verify_clients=args.tls_verify_clients,
                                            websocket=args.ws, layout=args.profile))
    except TopologyError as e:
        log.error("%s", e)
        return 2

    async def run() -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with open_topology_of(topology):
                st = topology.status()
                for node in st["nodes"]:
                    upstream = node.get("upstream", {})  # external mode: the broker behind each proxy
                    log.info("%s (%s): %s", node["name"], node["role"],
                             " ".join(f"{p}={port}" + (f" -> {upstream[p]}" if p in upstream else "")
                                      for p, port in node["ports"].items()))
                for proto, text in st["failover"].items():
                    log.info("%s failover: %s  hosts: %s", proto, text, ",".join(st["endpoints"][proto]))
                for proto, port in st.get("balancer", {}).items():
                    log.info("%s balancer: %s:%d", proto, topology.options.host, port)
                if "ca" in st:
                    log.info("tls: clients verify the nodes with the CA certificate %s", st["ca"])
                log.info("control: %s (mqemu ha status --control %s)", topology.control_url, topology.control_url)
                async for signum in signals:
                    log.info("stopping the topology", extra={"signal": signal.Signals(signum).name})
                    break

    failures: list[BaseException] = []
    try:
        trio.run(run)
    except* TopologyError as group:
        failures.extend(_leaves(group))
    for failure in failures:
        log.error("%s", failure)
    return 1 if failures else 0


def _fault_params(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {k: v for k in ("protocol", "stream", "toxicity", "name", "from_")
                              if (v := getattr(args, k)) is not None}
    params.update({k: True for k in ("one_way", "silent") if getattr(args, k)})
    for item in args.attr:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"mqemu fault: --attr takes KEY=VALUE, not {item!r}")
        params[key] = int(value)
    return params


def _control(args: argparse.Namespace, call: Any) -> int:
    from .control import ControlClient, ControlError

    try:
        print(json.dumps(call(ControlClient(args.control)), indent=2))
    except ControlError as e:
        log.error("%s", e)
        return 1
    return 0


def serve(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config, args.engine, args.engine_version)
        if args.activemq_xml:
            xml = load_activemq_xml(args.activemq_xml)
            apply_activemq_xml(config, xml)
            for line in summary(xml):
                log.info("%s", line)
        if args.rabbitmq_conf:
            conf = rabbitmq_conf.load_rabbitmq_conf(args.rabbitmq_conf)
            rabbitmq_conf.apply_rabbitmq_conf(config, conf)
            for line in rabbitmq_conf.summary(conf):
                log.info("%s", line)
    except ConfigError as e:
        log.error("%s", e)
        return 2
    ports = {p: getattr(args, f"{p.replace('-', '_')}_port") for p in ALL_NAMES}
    ports["http"] = args.http_port
    ports["https"] = args.https_port
    if args.standby and not args.data_dir:
        log.error("--standby needs --data-dir: a standby waits for the lock of a data directory it shares")
        return 2
    cluster = None
    if args.cluster_port is not None:
        try:
            peers = parse_peers(args.peers)
        except ValueError as e:
            log.error("--peers: %s", e)
            return 2
        cluster = ClusterOptions(name=args.cluster_name, port=args.cluster_port, peers=peers,
                                 timing=LINK_TIMINGS[args.timing])
    elif args.peers:
        log.error("--peers needs --cluster-port: only a cluster member has peers")
        return 2
    if (args.tls_cert is None) != (args.tls_key is None) or (args.tls_ca and not args.tls_cert):
        log.error("--tls-cert and --tls-key go together (--tls-ca with them)")
        return 2
    if args.tls_verify_clients and not (args.tls or args.tls_cert or args.profile == "amazon-mq"):
        log.error("--tls-verify-clients needs TLS: add --tls, or --tls-cert, --tls-key and --tls-ca")
        return 2
    generate = args.tls or (args.profile == "amazon-mq" and args.tls_cert is None)
    tls = TLSOptions(generate=generate, cert_file=args.tls_cert, key_file=args.tls_key, ca_file=args.tls_ca,
                     verify_clients=args.tls_verify_clients)
    try:
        node = Node(NodeOptions(engine=config.engine, engine_version=config.engine_version, host=args.host,
                                ports=ports, data_dir=args.data_dir, ready_file=args.ready_file, config=config,
                                name=args.name, standby=args.standby,
                                timing=TIMINGS[args.timing], status_file=args.status_file,
                                cluster=cluster, tls=tls, websocket=args.ws, layout=args.profile,
                                definitions=args.definitions, control_url=args.control_url,
                                stats_interval=args.collect_statistics_interval / 1000.0,
                                auth_mechanisms=tuple(m.strip().upper() for m in args.auth_mechanisms.split(",")
                                                      if m.strip()) if args.auth_mechanisms else None,
                                cert_login_from=args.ssl_cert_login_from))
    except NodeStartError as e:
        log.error("%s", e)
        return 2

    async def run() -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                # start_soon, not start: a standby waiting for the lock has not started, and
                # must still stop at once on SIGTERM
                nursery.start_soon(node.run)
                async for signum in signals:
                    log.info("stopping", extra={"signal": signal.Signals(signum).name,
                                                "connections": len(node.sessions)})
                    await node.shutdown()
                    nursery.cancel_scope.cancel()
                    break

    failures: list[NodeStartError] = []
    lost = False
    try:
        trio.run(run)
    except* NodeStartError as group:
        failures.extend(_leaves(group))
    except* NodeLockLost:
        lost = True  # logged where it was found
    for failure in failures:
        log.error("%s", failure)
    return 3 if lost else 1 if failures else 0


def _leaves(group: BaseExceptionGroup) -> list:
    """The exceptions inside nested groups (one per nursery level)."""
    out: list[BaseException] = []
    for e in group.exceptions:
        out.extend(_leaves(e) if isinstance(e, BaseExceptionGroup) else [e])
    return out


if __name__ == "__main__":
    sys.exit(main())
