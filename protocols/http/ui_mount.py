"""Mounts the web page (``ui.py``) beside an engine's HTTP app; light to import (starlette
is imported when the app is made, not here)."""

from __future__ import annotations

from typing import Any

PAGE_PATHS = frozenset(("/", "/ui/state.json"))


class PageMount:
    """ASGI: ``/`` and ``/ui/state.json`` go to the page, every other path to the engine's app."""

    def __init__(self, page: Any, engine_app: Any) -> None:
        self.page, self.engine_app = page, engine_app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("path") in PAGE_PATHS:
            await self.page(scope, receive, send)
        else:
            await self.engine_app(scope, receive, send)


def with_page(make_app: Any) -> Any:
    """Decorates ``server.make_app``: whatever app an engine serves, the page is mounted
    beside it (its paths first), so the page is on every node."""
    def make(node: Any) -> Any:
        from .ui import ui_app

        return PageMount(ui_app(node), make_app(node))
    make.__doc__ = make_app.__doc__
    make.__name__ = make_app.__name__
    return make
