"""``mqemu aws``: the Amazon MQ REST API on one HTTP port (hypercorn serving a Starlette
app on trio), with the brokers' nodes run in the same trio loop.

Each operation of the model is one Starlette route (its URI template and method); the
route's endpoint parses the request with ``model.ServiceModel``, calls the operation of
``service.Service`` and renders its output. Errors are the model's error shapes: the JSON
body ``{"errorAttribute", "message"}``, the shape's status code, and the ``x-amzn-ErrorType``
header botocore reads the error code from.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from functools import partial
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..tls import generate
from .brokers import PLAIN, BrokerTLS, EndpointStyle
from .model import ApiError, Operation, ServiceModel
from .service import Service
from .state import State, Timing

log = logging.getLogger("mqemu.ha.aws")


@dataclass(slots=True)
class AwsOptions:
    host: str = "127.0.0.1"
    port: int = 0
    data_dir: str | None = None  # absent: nothing survives a restart (a temporary directory)
    ready_file: str | None = None
    timing: Timing = Timing()
    region: str = "us-east-1"
    account: str = "123456789012"
    endpoints: str = "tls"  # or "plain": the brokers' plain listeners instead of Amazon MQ's TLS ones


def endpoint_style(endpoints: str, workdir: str, host: str) -> EndpointStyle:
    """The brokers' endpoints: ``tls`` with one certificate for every broker's nodes, signed by
    a CA kept in ``<workdir>/tls/ca.pem`` (made once, reused at every start, so clients trust
    one file for good), or ``plain``."""
    if endpoints == "plain":
        return PLAIN
    tls = generate(workdir, host)
    assert tls.ca_file is not None
    return EndpointStyle(BrokerTLS(tls.cert_file, tls.key_file, tls.ca_file))


def make_app(model: ServiceModel, service: Service) -> Starlette:
    routes = [Route(_path(op.uri), _endpoint(model, service, op), methods=[op.method], name=op.name)
              for op in model.operations.values()]

    async def no_route(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        code = "NotFoundException" if status == 404 else "BadRequestException"
        text = f"mqemu: no Amazon MQ operation is {request.method} {request.url.path}"
        return Response(json.dumps({"message": text}), status_code=status, media_type="application/json",
                        headers={"x-amzn-ErrorType": code})

    async def mqemu_broker(request: Request) -> Response:  # mqemu's own: unsigned, not in the model
        try:
            body = service.mqemu_broker(request.path_params["broker_id"])
        except ApiError as e:
            return Response(model.error_body(e), status_code=model.status_of(e.code), media_type="application/json",
                            headers={"x-amzn-ErrorType": e.code})
        return Response(json.dumps(body), media_type="application/json")

    routes.append(Route("/mqemu/brokers/{broker_id}", mqemu_broker, methods=["GET"], name="mqemu_broker"))
    return Starlette(routes=routes, exception_handlers={404: no_route, 405: no_route})


def _path(uri: str) -> str:
    """The model's URI template as a Starlette path: ``{broker-id}`` -> ``{broker_id}``."""
    return re.sub(r"\{([^}]+)\}", lambda m: "{" + m.group(1).replace("-", "_") + "}", uri)


def _endpoint(model: ServiceModel, service: Service, op: Operation) -> Any:
    call = getattr(service, op.name)

    async def endpoint(request: Request) -> Response:
        headers = {"x-amzn-RequestId": str(uuid.uuid4())}
        try:
            if not request.headers.get("authorization", "").startswith("AWS4-HMAC-SHA256 "):
                # any credentials do, but a request must be signed as AWS's must (SigV4)
                raise ApiError("ForbiddenException", "Missing Authentication Token: sign requests with "
                               "SigV4 (any access key and secret do).")
            params = model.parse(op, request.path_params, request.query_params, request.headers,
                                 await request.body())
            body = model.render(op, await call(params))
        except ApiError as e:
            headers["x-amzn-ErrorType"] = e.code
            return Response(model.error_body(e), status_code=model.status_of(e.code),
                            media_type="application/json", headers=headers)
        except Exception as e:  # an operation's own fault: 500, as the model lists it for every operation
            log.exception("%s failed", op.name)
            error = ApiError("InternalServerErrorException", f"mqemu: {op.name} failed: {e}")
            headers["x-amzn-ErrorType"] = error.code
            return Response(model.error_body(error), status_code=500, media_type="application/json",
                            headers=headers)
        return Response(body, status_code=op.status, media_type="application/json" if body else None,
                        headers=headers)

    return endpoint


async def run_control_plane(options: AwsOptions, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Serve the API and run the brokers until cancelled; reports the endpoint URL. On the
    way out every broker's nodes are stopped."""
    state = State(options.data_dir)
    state.load()
    own_workdir = options.data_dir is None
    workdir = options.data_dir or tempfile.mkdtemp(prefix="mqemu-aws-")
    style = endpoint_style(options.endpoints, workdir, options.host)
    service = Service(state, options.timing, workdir, options.region, options.account, style)
    model = ServiceModel()
    app = make_app(model, service)
    config = HypercornConfig()
    config.bind = [f"{options.host}:{options.port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("mqemu.ha.aws.http")
    try:
        async with trio.open_nursery() as nursery:
            await service.resume(nursery)
            serve = partial(hypercorn_serve, app, config,  # type: ignore[arg-type]
                            shutdown_trigger=trio.sleep_forever)
            binds = await nursery.start(serve)
            port = int(binds[0].rsplit(":", 1)[1])
            endpoint = f"http://{options.host}:{port}"
            if options.ready_file:
                tmp = f"{options.ready_file}.tmp{os.getpid()}"
                with open(tmp, "w") as f:
                    json.dump({"endpoint": endpoint, "pid": os.getpid(),
                               **({"ca": style.tls.ca_file} if style.tls else {})}, f)
                os.replace(tmp, options.ready_file)
            log.info("Amazon MQ API on %s (boto3: endpoint_url=%r; aws mq ... --endpoint-url %s)",
                     endpoint, endpoint, endpoint)
            if style.tls is not None:
                log.info("brokers' endpoints are TLS: clients verify them with the CA certificate %s",
                         style.tls.ca_file, extra={"ca": style.tls.ca_file})
            task_status.started(endpoint)
    finally:
        with trio.CancelScope(shield=True):
            await service.close()
        if own_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        if options.ready_file:
            try:
                os.unlink(options.ready_file)
            except OSError:
                pass
