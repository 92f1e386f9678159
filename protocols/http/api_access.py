"""Who may do what, and the definitions: ``whoami``, ``vhosts``, ``users``, ``permissions``,
``topic-permissions``, ``policies`` and ``definitions`` (GET / POST, per vhost too)."""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response

from mqemu.broker import definitions, policies
from mqemu.broker.auth import Permission
from mqemu.broker.errors import BrokerError

from .common import (Ctx, HttpError, bad_request, created_or_updated, no_content, not_found, ok, read_body,
                     segment)
from .rates import sampler_of
from .shapes import node_name, rate


async def whoami(ctx: Ctx) -> Response:
    return ok({"name": ctx.user.name, "tags": list(ctx.user.tags)})


# -- vhosts ---------------------------------------------------------------------------
def _vhost_json(ctx: Ctx, vh: Any) -> dict[str, Any]:
    ready = sum(len(q.ready) for q in vh.queues.values())
    unacked = sum(q.unacked for q in vh.queues.values())
    stats, lengths = sampler_of(ctx.node).vhost(vh)
    meta = ctx.broker.vhost_metadata.get(vh.name, {}) if hasattr(ctx.broker, "vhost_metadata") else {}
    return {"name": vh.name, "description": meta.get("description", "Default virtual host" if vh.name == "/" else ""),
            "tags": meta.get("tags", []), "metadata": {"description": meta.get("description", ""),
                                                       "tags": meta.get("tags", [])},
            "default_queue_type": meta.get("default_queue_type", "undefined"), "tracing": False,
            "cluster_state": {node_name(ctx.node): "running"}, "message_stats": stats,
            "messages": ready + unacked, "messages_details": lengths["messages_details"], "messages_ready": ready,
            "messages_ready_details": lengths["messages_ready_details"], "messages_unacknowledged": unacked,
            "messages_unacknowledged_details": lengths["messages_unacknowledged_details"], "recv_oct": 0,
            "recv_oct_details": rate(),
            "send_oct": 0, "send_oct_details": rate()}


async def list_vhosts(ctx: Ctx) -> Response:
    return ok([_vhost_json(ctx, vh) for vh in ctx.visible_vhosts()])


async def get_vhost(ctx: Ctx) -> Response:
    return ok(_vhost_json(ctx, ctx.vhost(segment(ctx.request, "vhost"))))


async def put_vhost(ctx: Ctx) -> Response:
    ctx.need_admin()
    name = segment(ctx.request, "vhost")
    body = await ctx.body()
    exists = name in ctx.broker.vhosts
    definitions.add_vhost(ctx.broker, name, body)
    if not exists:  # RabbitMQ gives the user who made it every permission in it
        ctx.broker.auth.permissions.setdefault((ctx.user.name, name), Permission())
    definitions.save_access(ctx.broker)
    return created_or_updated(not exists)


async def delete_vhost(ctx: Ctx) -> Response:
    ctx.need_admin()
    name = segment(ctx.request, "vhost")
    if name not in ctx.broker.vhosts:
        raise not_found()
    for s in list(ctx.node.sessions):
        info = s.connection_info() if hasattr(s, "connection_info") else None
        if info is not None and info["vhost"] == name:
            s.server_close("vhost deleted")
    definitions.delete_vhost(ctx.broker, name)
    definitions.save_access(ctx.broker)
    return no_content()


# -- users and permissions ------------------------------------------------------------
async def list_users(ctx: Ctx) -> Response:
    ctx.need_admin()
    return ok([definitions.user_json(u) for u in ctx.broker.auth.users.values()])


async def get_user(ctx: Ctx) -> Response:
    ctx.need_admin()
    user = ctx.broker.auth.users.get(segment(ctx.request, "user"))
    if user is None:
        raise not_found()
    return ok(definitions.user_json(user))


async def put_user(ctx: Ctx) -> Response:
    ctx.need_admin()
    name = segment(ctx.request, "user")
    body = await ctx.body()
    exists = name in ctx.broker.auth.users
    try:
        user = definitions.make_user(name, body, ctx.broker.auth.users.get(name))
    except BrokerError as e:
        raise bad_request(e.text) from None
    ctx.broker.auth.users[name] = user
    definitions.save_access(ctx.broker)
    return created_or_updated(not exists)


async def delete_user(ctx: Ctx) -> Response:
    ctx.need_admin()
    name = segment(ctx.request, "user")
    auth = ctx.broker.auth
    if auth.users.pop(name, None) is None:
        raise not_found()
    for key in [k for k in auth.permissions if k[0] == name]:
        del auth.permissions[key]
    definitions.save_access(ctx.broker)
    return no_content()


def _permission_json(user: str, vhost: str, p: Permission) -> dict[str, Any]:
    return {"user": user, "vhost": vhost, "configure": p.configure, "write": p.write, "read": p.read}


async def list_permissions(ctx: Ctx) -> Response:
    ctx.need_admin()
    perms = ctx.broker.auth.permissions.items()
    params = ctx.request.path_params
    if "vhost" in params:
        ctx.vhost(segment(ctx.request, "vhost"))
        perms = [(k, p) for k, p in perms if k[1] == segment(ctx.request, "vhost")]
    if "user" in params:
        if segment(ctx.request, "user") not in ctx.broker.auth.users:
            raise not_found()
        perms = [(k, p) for k, p in perms if k[0] == segment(ctx.request, "user")]
    return ok([_permission_json(u, v, p) for (u, v), p in perms])


async def get_permission(ctx: Ctx) -> Response:
    ctx.need_admin()
    key = (segment(ctx.request, "user"), segment(ctx.request, "vhost"))
    p = ctx.broker.auth.permissions.get(key)
    if p is None:
        raise not_found()
    return ok(_permission_json(key[0], key[1], p))


async def put_permission(ctx: Ctx) -> Response:
    ctx.need_admin()
    user, vhost = segment(ctx.request, "user"), segment(ctx.request, "vhost")
    if vhost not in ctx.broker.vhosts:
        raise HttpError(400, "bad_request", "vhost_not_found")
    if user not in ctx.broker.auth.users:
        raise HttpError(400, "bad_request", "user_not_found")
    body = await ctx.body()
    for key in ("configure", "write", "read"):
        if key not in body:
            raise bad_request(f"[{{key_missing,{key}}}]")
    exists = (user, vhost) in ctx.broker.auth.permissions
    ctx.broker.auth.permissions[(user, vhost)] = Permission(str(body["configure"]), str(body["write"]),
                                                            str(body["read"]))
    definitions.save_access(ctx.broker)
    return created_or_updated(not exists)


async def delete_permission(ctx: Ctx) -> Response:
    ctx.need_admin()
    key = (segment(ctx.request, "user"), segment(ctx.request, "vhost"))
    if ctx.broker.auth.permissions.pop(key, None) is None:
        raise not_found()
    definitions.save_access(ctx.broker)
    return no_content()


# -- policies -------------------------------------------------------------------------
async def list_policies(ctx: Ctx) -> Response:
    return ok([p.to_json() for vh in ctx.vhosts_from_path() for p in vh.policies.values()])


async def get_policy(ctx: Ctx) -> Response:
    vh = ctx.vhost(segment(ctx.request, "vhost"))
    p = vh.policies.get(segment(ctx.request, "name"))
    if p is None:
        raise not_found()
    return ok(p.to_json())


async def put_policy(ctx: Ctx) -> Response:
    ctx.need_policymaker()
    vh = ctx.vhost(segment(ctx.request, "vhost"), missing=HttpError(404, "not_found", "vhost_not_found"))
    body = await ctx.body()
    try:
        policy = policies.make_policy(vh.name, segment(ctx.request, "name"), body)
    except BrokerError as e:
        raise bad_request(f"Validation failed\n\n{e.text}\n") from None
    created = policies.set_policy(vh, policy)
    definitions.save_access(ctx.broker)
    return created_or_updated(created)


async def delete_policy(ctx: Ctx) -> Response:
    ctx.need_policymaker()
    vh = ctx.vhost(segment(ctx.request, "vhost"))
    if not policies.clear_policy(vh, segment(ctx.request, "name")):
        raise not_found()
    definitions.save_access(ctx.broker)
    return no_content()


# -- definitions ----------------------------------------------------------------------
async def get_definitions(ctx: Ctx) -> Response:
    ctx.need_admin()
    vhost = None
    if "vhost" in ctx.request.path_params:
        vhost = ctx.vhost(segment(ctx.request, "vhost")).name
    data = definitions.export_definitions(ctx.broker, vhost)
    headers = {}
    if ctx.request.query_params.get("download"):
        headers["content-disposition"] = f'attachment; filename="{ctx.request.query_params["download"]}"'
    return Response(json.dumps(data), 200, headers=headers, media_type="application/json")


async def post_definitions(ctx: Ctx) -> Response:
    """Import (``rabbitmqadmin import`` posts the file as the body; the web page posts a
    form with a ``file`` field)."""
    ctx.need_admin()
    vhost = None
    if "vhost" in ctx.request.path_params:
        vhost = ctx.vhost(segment(ctx.request, "vhost")).name
    raw = await read_body(ctx.request)
    try:
        data = json.loads(raw) if raw.strip() else {}
    except ValueError:
        raise bad_request("not_json") from None
    if not isinstance(data, dict):
        raise bad_request("not_json")
    try:
        definitions.import_definitions(ctx.broker, data, vhost)
    except definitions.DefinitionsError as e:
        raise bad_request(str(e)) from None
    definitions.save_access(ctx.broker)
    return no_content()
