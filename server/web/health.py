"""Health and metrics, for operators: `/healthz` for anyone, `/api/metrics` for staff."""

from __future__ import annotations

import time

from aiohttp import web

from storyroom.media.metrics import process_figures
from storyroom.staff.accounts import StaffIdentity
from storyroom.web.routes import RouteGroup, Routes


class HealthRoutes(RouteGroup):
    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def metrics(self, request: web.Request, who: StaffIdentity) -> web.Response:
        """Process health and the media plane's figures, for staff and the soak bench."""
        return web.json_response(
            {
                "at": time.time(),
                "process": process_figures(),
                "media": self.services.media.metrics(),
            }
        )

    def routes(self) -> Routes:
        routes = Routes()
        routes.public("GET", "/healthz", self.healthz)
        routes.staff("GET", "/api/metrics", self.metrics)
        return routes
