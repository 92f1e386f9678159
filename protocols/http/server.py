"""The node's HTTP listener: hypercorn's trio worker serving an ASGI app (starlette).

``http_config`` is the one place the listener's socket and serving options are set (bind
address, limits, logging, and TLS for the HTTPS listener: the node's certificate and key). ``serve_http`` runs it in the node's
trio loop, so the app calls the broker directly, as a session does. A failure of the HTTP
listener is logged and never stops the node.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from .rates import Sampler, sampler_of
from .ui_mount import with_page

log = logging.getLogger("mqemu.protocols.http")


def http_config(host: str, port: int, tls: Any = None) -> Any:
    """hypercorn's Config for the node's HTTP listener on host:port (0: a free port); with
    ``tls`` (the node's ``NodeTLS``), HTTPS with its certificate and key (TLS 1.2+, as
    hypercorn sets it, HTTP/1.1 and h2 by ALPN)."""
    from hypercorn.config import Config

    config = Config()
    if tls is not None:
        config.certfile = tls.cert_file
        config.keyfile = tls.key_file
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("mqemu.protocols.http.hypercorn")
    config.graceful_timeout = 1.0
    config.include_server_header = False
    return config


def preload() -> None:
    """Import hypercorn, starlette and the app now (they take a while to import): a node
    runs this in a thread as it starts, so a standby taking over, or an active opening its
    listeners, does not wait for the imports."""
    import hypercorn.trio  # noqa: F401
    from . import amq_console, mgmt  # noqa: F401
    from . import ui  # noqa: F401


@with_page  # the web page at / (ui.py), beside whichever app the engine serves
def make_app(node: Any) -> Any:
    """The ASGI app this node serves: RabbitMQ's management API on an engine that has it,
    ActiveMQ's console surfaces (REST messages, Jolokia, /admin/xml) otherwise."""
    if node.broker.profile.rabbitmq_management:
        from .mgmt import management_app

        return management_app(node)
    from .amq_console import console_app

    return console_app(node)


async def serve_http(node: Any, host: str, port: int, *, accepting: list | None = None, tls: Any = None,
                     app: Any = None, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Listen on host:port and serve the node's app until cancelled; reports the bound port.
    Raises OSError when the port cannot be bound. ``accepting`` gets the cancel scope that
    closes the listener (the node's shutdown closes it with the other listeners). ``tls``
    (the node's ``NodeTLS``) makes it HTTPS; ``app`` is the app to serve (default
    ``make_app(node)``: the HTTP and HTTPS listeners share one)."""
    from hypercorn.trio import serve

    config = http_config(host, port, tls)
    if app is None:
        app = make_app(node)
    scope = trio.CancelScope()
    if accepting is not None:
        accepting.append(scope)
    with scope:
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(_serve, serve, app, config)
            bound = int(binds[0].rsplit(":", 1)[1])
            sampler = sampler_of(node)
            if not sampler.running:  # one loop per node, beside its first HTTP listener
                nursery.start_soon(sample_loop, sampler)
            task_status.started(bound)
    log.debug("http listener closed")


async def sample_loop(sampler: Sampler) -> None:
    """Sample the node's counters every ``sampler.interval`` seconds (``rates``), at once
    first so the second sample gives rates."""
    sampler.running = True
    try:
        while True:
            sampler.sample()
            await trio.sleep(sampler.interval)
    finally:
        sampler.running = False


async def _serve(serve: Any, app: Any, config: Any, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    try:
        await serve(app, config, task_status=task_status)
    except OSError:
        raise
    except Exception as exc:  # the HTTP side never takes the node down
        log.error("http listener stopped: %s: %s", type(exc).__name__, exc)
