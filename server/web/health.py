"""Health, readiness and metrics, for operators: `/healthz` (alive) and `/readyz` (able
to serve) for anyone, `/metrics` (Prometheus) from the metrics networks or for staff,
`/api/metrics` (JSON) for staff."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Final

from aiohttp import web
from prometheus_client.exposition import choose_encoder

from storyroom import readiness
from storyroom.config import Settings
from storyroom.media.metrics import process_figures
from storyroom.readiness import Check
from storyroom.services import Services
from storyroom.staff.accounts import StaffIdentity
from storyroom.web.prometheus import metrics_registry
from storyroom.web.routes import RouteGroup, Routes, require_platform

CHECK_TIMEOUT_S: Final = 5.0


async def _off_loop(name: str, check: Callable[[], Check]) -> Check:
    """A blocking check in a thread; a disk that does not answer in time fails it."""
    try:
        return await asyncio.wait_for(asyncio.to_thread(check), CHECK_TIMEOUT_S)
    except TimeoutError:
        return Check(name, False, f"no answer within {CHECK_TIMEOUT_S:.0f} s")


async def readiness_checks(services: Services) -> list[Check]:
    """Every readiness question, asked now (the disk's at once, off the loop)."""
    settings = services.settings
    database, folder = await asyncio.gather(
        _off_loop("database", lambda: readiness.database(settings.database)),
        _off_loop("data_folder", lambda: readiness.data_folder(settings.data_dir)),
    )
    jobs = services.finalize_jobs
    shipping = [] if services.shipper is None else [readiness.shipping(services.shipper, settings)]
    fanout = services.fanout
    redis = [] if fanout is None or not fanout.enabled else [fanout.check(await fanout.probe())]
    return [
        *redis,
        *shipping,
        database,
        folder,
        readiness.free_space(settings.data_dir, settings.min_free_mb),
        Check(
            "finalizer",
            jobs.running,
            f"running, {jobs.pending} job(s) queued" if jobs.running else "its queue has stopped",
        ),
        readiness.mp3_encoder_present(),
    ]


class HealthRoutes(RouteGroup):
    def __init__(self, app: web.Application, settings: Settings) -> None:
        super().__init__(app)
        self.settings = settings
        self.registry = metrics_registry(lambda: self.services)

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        """200 when every check passes; 503 naming the checks that fail."""
        checks = await readiness_checks(self.services)
        body: dict[str, object] = {
            "status": "ready",
            "checks": [check.to_json() for check in checks],
        }
        names = readiness.failing(checks)
        if not names:
            return web.json_response(body)
        body["status"] = "not_ready"
        body["failing"] = names
        body["error"] = {"code": "not_ready", "message": "not ready: " + ", ".join(names)}
        return web.json_response(body, status=503)

    async def prometheus(self, request: web.Request) -> web.Response:
        """The text format Prometheus asks for in `Accept` (text 0.0.4 by default,
        OpenMetrics on request), as prometheus-client's own exporters choose it."""
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encode(self.registry), headers={"Content-Type": content_type})

    async def metrics(self, request: web.Request, who: StaffIdentity) -> web.Response:
        """Process health and the media plane's figures (every organisation's live rooms),
        for platform admins and the soak bench."""
        require_platform(who)
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
        routes.public("GET", "/readyz", self.readyz)
        routes.staff_unless_from(self.settings.metrics_networks, "GET", "/metrics", self.prometheus)
        routes.staff("GET", "/api/metrics", self.metrics)
        return routes
