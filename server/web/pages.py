"""Browser pages and static files. Paths are fixed names, never built from input."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from string import Template
from urllib.parse import urlencode

from aiohttp import web

from storyroom.config import Settings
from storyroom.services import SERVICES
from storyroom.staff.accounts import SESSION_COOKIE


async def signed_in(request: web.Request) -> bool:
    accounts = request.app[SERVICES].accounts
    return await accounts.session_for(request.cookies.get(SESSION_COOKIE)) is not None


def signin_redirect(request: web.Request) -> web.HTTPSeeOther:
    """To the sign-in page, coming back here after (a path of ours, never a URL)."""
    return web.HTTPSeeOther(f"/staff/signin?{urlencode({'next': request.path})}")


def vendor_dirs(settings: Settings) -> list[Path]:
    """Where socket.io-client's browser build is: npm's node_modules or the image's copy."""
    root = settings.static_dir.parent
    return [
        settings.static_dir / "vendor" / "socket.io-client",
        root / "node_modules" / "socket.io-client" / "dist",
    ]


def render_page(static: Path, name: str) -> str:
    """The page `name`: static/pages/<name>.html (its <body>) in static/layout.html, the
    head every page shares, which names the page's title (the catalogue's
    `<name>.page_title`) and its module (static/js/pages/<name>.js)."""
    layout = Template((static / "layout.html").read_text("utf-8"))
    body = (static / "pages" / f"{name}.html").read_text("utf-8")
    return layout.substitute(page=name, body=body.rstrip("\n"))


def add_page_routes(app: web.Application, settings: Settings) -> None:
    static = settings.static_dir

    def page(
        name: str, staff: bool = False
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            if staff and not await signed_in(request):
                raise signin_redirect(request)
            try:
                html = await asyncio.to_thread(render_page, static, name)
            except FileNotFoundError:
                raise web.HTTPNotFound() from None
            return web.Response(
                text=html, content_type="text/html", headers={"Cache-Control": "no-store"}
            )

        return handler

    async def socketio_client(request: web.Request) -> web.StreamResponse:
        for folder in vendor_dirs(settings):
            path = folder / "socket.io.esm.min.js"
            if path.is_file():
                return web.FileResponse(path)
        raise web.HTTPNotFound(reason="socket.io-client is not installed: run npm ci")

    app.router.add_get("/", page("index"))
    app.router.add_get("/room/{session_id}", page("room"))
    # a self-guided seat's link: the same page, which shows its guided introduction first
    app.router.add_get("/together/{session_id}", page("room"))
    app.router.add_get("/console/{session_id}", page("console"))
    app.router.add_get("/staff", page("staff", staff=True))
    app.router.add_get("/staff/signin", page("signin"))
    app.router.add_get("/staff/recordings", page("recordings", staff=True))
    app.router.add_get("/staff/recordings/{recording_id}", page("recording", staff=True))
    app.router.add_get("/staff/audit", page("audit", staff=True))
    app.router.add_get("/copy", page("copy"))
    app.router.add_get("/listen", page("listen"))
    app.router.add_get("/escuchar", page("listen"))  # the same page, in Spanish
    app.router.add_get("/apply", page("apply"))
    app.router.add_get("/solicitar", page("apply"))  # the same form, in Spanish
    app.router.add_get("/invite", page("invite"))
    app.router.add_get("/invitar", page("invite"))  # the same page, in Spanish
    # an organisation's own form: the page reads its slug from the path
    app.router.add_get("/apply/{organisation}", page("apply"))
    app.router.add_get("/solicitar/{organisation}", page("apply"))
    app.router.add_get("/staff/applications", page("applications", staff=True))
    app.router.add_get("/staff/people", page("people", staff=True))
    app.router.add_get("/vendor/socket.io.esm.min.js", socketio_client)
    if static.is_dir():
        app.router.add_static("/static/", static, follow_symlinks=False, show_index=False)
