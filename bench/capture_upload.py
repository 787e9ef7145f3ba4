"""What a participant's own browser capture costs: extra uplink bytes per minute and the
page's memory per minute, beside a baseline measured in the same run (the same page with
MediaRecorder taken away, so nothing is captured).

    .venv/bin/python bench/capture_upload.py                 # 60 s per configuration
    .venv/bin/python bench/capture_upload.py --seconds 20    # smoke

One real server on 127.0.0.1 (in this process) and, per configuration, a fresh
Debian Chromium whose fake microphone plays speech, seated as participant a (b and the
facilitator are Socket.IO clients). Configurations:

- `baseline`: no capture (the page's MediaRecorder removed before it loads);
- `capture`: the capture as shipped, uploading as it goes;
- `capture, offline`: every capture upload held back for the whole take (a network
  that drops them), so the chunks pile up in IndexedDB; after stop the uploads are let
  through and the time until the page says "saved" is measured.

Figures per minute of take: live audio sent (WebRTC outbound bytes), capture bytes
stored by the server and capture requests, the page's JS heap growth (CDP
`Performance.getMetrics` after a garbage collection), and IndexedDB usage (`navigator.storage.estimate()`).
The live audio's loss with and without uploads on a constrained link is not measured
here (loopback does not lose packets); see the merge's bench for that.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from playwright.async_api import Page, Route, async_playwright  # noqa: E402

from storyroom.capture import layout  # noqa: E402
from support.browser import launch, turn_on_microphone, with_raw_audio, write_speech  # noqa: E402
from support.polling import wait_for  # noqa: E402
from support.server import (  # noqa: E402
    CONSENT,
    RunningServer,
    close_clients,
    create_session,
    seat_clients,
    serving,
)

NO_CAPTURE = "delete window.MediaRecorder;"


@dataclass
class Figures:
    name: str
    seconds: float
    live_bytes: float
    capture_bytes: float
    capture_requests: int
    heap_growth: float
    idb_bytes: float
    drain_s: float | None

    def per_minute(self, value: float) -> float:
        return value * 60.0 / self.seconds


async def heap_used(page: Page) -> float:
    session = await page.context.new_cdp_session(page)
    await session.send("HeapProfiler.collectGarbage")  # what is kept, not what awaits GC
    await session.send("Performance.enable")
    metrics = await session.send("Performance.getMetrics")
    await session.detach()
    return float(next(m["value"] for m in metrics["metrics"] if m["name"] == "JSHeapUsedSize"))


async def live_bytes_sent(page: Page) -> float:
    value: Any = await page.evaluate(
        """async () => {
            let sent = 0;
            const pc = window.storyroom.client.pc;
            if (!pc) return 0;
            (await pc.getStats()).forEach((s) => {
                if (s.type === "outbound-rtp" && s.kind === "audio") sent += s.bytesSent;
            });
            return sent;
        }"""
    )
    return float(value)


async def idb_usage(page: Page) -> float:
    value: Any = await page.evaluate("async () => (await navigator.storage.estimate()).usage")
    return float(value)


async def one_take(
    server: RunningServer, wav: Path, name: str, seconds: float, *, capture: bool, offline: bool
) -> Figures:
    created = await create_session(server.url)
    clients = await seat_clients(server.url, created, ("b", "facilitator"))
    requests = 0
    gate = asyncio.Event()

    async def hold(route: Route) -> None:
        nonlocal requests
        requests += 1
        if offline:
            await gate.wait()
        with contextlib.suppress(Exception):
            await route.continue_()

    async with async_playwright() as pw:
        browser = await launch(pw, wav)
        try:
            context = await browser.new_context()
            if not capture:
                await context.add_init_script(NO_CAPTURE)
            await context.route(re.compile(r".*/api/capture/.*"), hold)
            page = await context.new_page()
            await page.goto(with_raw_audio(created["seats"]["a"]["url"]))
            await turn_on_microphone(page)
            ack = await page.evaluate(
                "(c) => window.storyroom.client.request('consent', c)", CONSENT
            )
            assert ack["ok"], ack
            assert (await clients["b"].call("consent", CONSENT))["ok"]
            await wait_for(
                lambda: page.evaluate("() => window.storyroom.client.audioState === 'connected'"),
                what="live audio",
            )
            f = clients["facilitator"]
            start = await f.call("recording:start")
            assert start["ok"], start
            rec_dir = server.settings.recordings_dir / start["recording"]["id"]
            heap0, live0, idb0 = (
                await heap_used(page),
                await live_bytes_sent(page),
                await idb_usage(page),
            )
            began = time.monotonic()
            await asyncio.sleep(seconds)  # the measured window: a take of this length
            heap1, live1, idb1 = (
                await heap_used(page),
                await live_bytes_sent(page),
                await idb_usage(page),
            )
            took = time.monotonic() - began
            assert (await f.call("recording:stop"))["ok"]
            drain = None
            if capture:
                stopped = time.monotonic()
                gate.set()
                await wait_for(
                    lambda: page.evaluate(
                        "() => document.querySelector('#capture-status').dataset.state === 'saved'"
                    ),
                    timeout=300,
                    interval=0.1,
                    what="the capture saved",
                )
                drain = time.monotonic() - stopped
            stored = sum(run.bytes for run in layout.read_runs(rec_dir, "a"))
        finally:
            await browser.close()
            await close_clients(clients)
    return Figures(name, took, live1 - live0, stored, requests, heap1 - heap0, idb1 - idb0, drain)


def print_table(rows: list[Figures]) -> None:
    header = f"{'per minute of take':34}" + "".join(f"{r.name:>20}" for r in rows)
    print(header)
    print("-" * len(header))

    def line(label: str, values: list[str]) -> None:
        print(f"{label:34}" + "".join(f"{v:>20}" for v in values))

    line("measured window, s", [f"{r.seconds:.1f}" for r in rows])
    line("live audio sent, kB", [f"{r.per_minute(r.live_bytes) / 1000:.0f}" for r in rows])
    line("capture stored, kB", [f"{r.per_minute(r.capture_bytes) / 1000:.0f}" for r in rows])
    line("capture requests", [f"{r.per_minute(r.capture_requests):.0f}" for r in rows])
    base = rows[0].live_bytes + rows[0].capture_bytes
    line(
        "uplink vs baseline",
        [f"{(r.live_bytes + r.capture_bytes) / base:.2f}x" if base else "-" for r in rows],
    )
    line("JS heap growth, kB", [f"{r.per_minute(r.heap_growth) / 1000:.0f}" for r in rows])
    line("IndexedDB growth, kB", [f"{r.per_minute(r.idb_bytes) / 1000:.0f}" for r in rows])
    line(
        "saved after stop, s", [f"{r.drain_s:.1f}" if r.drain_s is not None else "-" for r in rows]
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="take length per configuration")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="capture-bench-") as tmp:
        folder = Path(tmp)
        wav = write_speech(folder / "speech.wav", seconds=20.0)
        async with serving(folder / "data") as server:
            rows = [
                await one_take(server, wav, "baseline", args.seconds, capture=False, offline=False),
                await one_take(server, wav, "capture", args.seconds, capture=True, offline=False),
                await one_take(
                    server, wav, "capture, offline", args.seconds, capture=True, offline=True
                ),
            ]
    print_table(rows)


if __name__ == "__main__":
    asyncio.run(main())
