"""A narrow uplink on `lo`, for tests and benchmarks in the private network namespace:
a Linux `htb` class of a given rate with a FIFO, which only the packets its filters
pick go through (the rest pass a fast class)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from playwright.async_api import Playwright, Route, expect

from storyroom.capture import layout as capture_layout
from storyroom.recording import timeline
from support.browser import PageWatch, launch, through_relay, turn_on_microphone, with_raw_audio
from support.netimpair import Impairment, Relay
from support.polling import wait_for
from support.server import CONSENT, RunningServer, close_clients, create_session, seat_clients

GSO_OFF = ("mtu", "1500", "gso_max_size", "1500", "gso_max_segs", "1")
GSO_ON = ("mtu", "65536", "gso_max_size", "65536", "gso_max_segs", "65535")


def tc(*args: str) -> None:
    subprocess.run(["tc", *args], check=True, capture_output=True)


def set_loopback(*settings: str) -> None:
    subprocess.run(["ip", "link", "set", "lo", *settings], check=True, capture_output=True)


def internet_sized_loopback() -> None:
    """`lo` with an internet path's packet size: 1500 bytes, and no 64 kB GSO bursts
    (one of which would never fit the bottleneck's FIFO). Best before anything connects."""
    set_loopback(*GSO_OFF)


class Bottleneck:
    """An htb class of `rate_kbit` on `lo` with a FIFO of `queue_ms` at that rate; only
    what `route` sends to it passes through it. `close` takes it away."""

    def __init__(self, rate_kbit: int, queue_ms: float) -> None:
        self.filters = 0
        limit = max(3000, int(rate_kbit * 1000 / 8 * queue_ms / 1000))
        tc("qdisc", "add", "dev", "lo", "root", "handle", "1:", "htb", "default", "20")
        tc("class", "add", "dev", "lo", "parent", "1:", "classid", "1:10", "htb",
           "rate", f"{rate_kbit}kbit", "ceil", f"{rate_kbit}kbit", "quantum", "1514")  # fmt: skip
        tc("class", "add", "dev", "lo", "parent", "1:", "classid", "1:20", "htb",
           "rate", "10gbit", "quantum", "200000")  # fmt: skip
        tc("qdisc", "add", "dev", "lo", "parent", "1:10", "handle", "10:", "bfifo",
           "limit", str(limit))  # fmt: skip

    def route(self, protocol: int, dport: int) -> None:
        """IP packets of `protocol` (6 TCP, 17 UDP) to `dport` go through the bottleneck."""
        self.filters += 1
        tc("filter", "add", "dev", "lo", "parent", "1:", "protocol", "ip", "prio", "1", "u32",
           "match", "ip", "protocol", str(protocol), "0xff",
           "match", "ip", "dport", str(dport), "0xffff", "flowid", "1:10")  # fmt: skip

    def dropped(self) -> int:
        out = subprocess.run(
            ["tc", "-s", "qdisc", "show", "dev", "lo"], check=True, capture_output=True, text=True
        ).stdout
        block = out.split("qdisc bfifo 10:")[1]
        found = re.search(r"dropped (\d+)", block)
        return int(found.group(1)) if found else 0

    def close(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            tc("qdisc", "del", "dev", "lo", "root")


def arrivals(rec_dir: Path, seat: str) -> tuple[int, int, tuple[float, float, float]]:
    """`seat`'s packets received and lost on the way in (RTP sequence gaps), and their
    queueing delay (arrival against RTP timestamp, over the minimum: p50, p99, max) in
    ms, from the recording's timing logs."""
    segments = [s for s in timeline.read_recording(rec_dir) if s.seat == seat]
    packets = [p for s in segments for p in s.packets]
    if not packets:
        return 0, 0, (0.0, 0.0, 0.0)
    lost = 0
    for segment in segments:
        seqs = np.unwrap(np.array([p.seq for p in segment.packets], dtype=float), period=65536)
        lost += int(seqs.max() - seqs.min() + 1) - len(seqs)
    ts = np.unwrap(np.array([p.ts for p in packets], dtype=float), period=2**32)
    transit = np.array([p.arrival for p in packets]) - ts / 48000.0
    late = (transit - transit.min()) * 1000.0
    return (
        len(packets),
        lost,
        (
            float(np.percentile(late, 50)),
            float(np.percentile(late, 99)),
            float(late.max()),
        ),
    )


NO_CAPTURE = "delete window.MediaRecorder;"
"""An init script for a page with no capture (MediaRecorder gone)."""


@dataclass
class NarrowTake:
    """What one take of participant a behind a narrow uplink left (see `narrow_take`)."""

    rec_dir: Path
    chunks_during: int
    """Capture chunks the server stored before stop."""
    saved_s: float | None
    """Seconds from stop until the page said its capture was saved (None: no capture)."""
    drops: int
    """Packets of either kind the bottleneck dropped (TCP's are resent)."""
    console: list[str]
    watch: PageWatch


async def narrow_take(
    server: RunningServer,
    playwright: Playwright,
    wav: Path,
    *,
    rate_kbit: int,
    queue_ms: float,
    held_s: float,
    take_s: float,
    capture: bool = True,
) -> NarrowTake:
    """Participant a in Debian's Chromium (fake microphone `wav`), b and the facilitator
    Socket.IO clients, one take of `take_s`: everything a's page sends (its media to its
    relay link, its HTTP and Socket.IO to the server) goes through a `rate_kbit`
    bottleneck, and its capture uploads are held back for the take's first `held_s`, so
    a backlog meets the live audio when they are let through."""
    created = await create_session(server.url)
    clients = await seat_clients(server.url, created, ("b", "facilitator"))
    gate = asyncio.Event()
    bottleneck = Bottleneck(rate_kbit, queue_ms)
    bottleneck.route(6, int(server.url.rsplit(":", 1)[1]))
    relay = Relay()
    console: list[str] = []
    watch = PageWatch()

    async def hold(route: Route) -> None:
        await gate.wait()
        with contextlib.suppress(Exception):
            await route.continue_()

    browser = await launch(playwright, wav)
    try:
        context = await browser.new_context()
        if not capture:
            await context.add_init_script(NO_CAPTURE)
        await context.route(re.compile(r".*/api/capture/.*"), hold)
        links = await through_relay(context, relay, "a", Impairment(), 1)
        page = await context.new_page()
        watch.attach(page)
        page.on("console", lambda message: console.append(message.text))
        await page.goto(with_raw_audio(created["seats"]["a"]["url"]))
        await turn_on_microphone(page)
        ack = await page.evaluate("(c) => window.storyroom.client.request('consent', c)", CONSENT)
        assert ack["ok"], ack
        assert (await clients["b"].call("consent", CONSENT))["ok"]
        await wait_for(
            lambda: page.evaluate("() => window.storyroom.client.audioState === 'connected'"),
            timeout=60,
            what="live audio",
        )
        for link in links:
            bottleneck.route(17, link.seat_port)
        f = clients["facilitator"]
        start = await f.call("recording:start")
        assert start["ok"], start
        rec_dir = server.settings.recordings_dir / start["recording"]["id"]
        live = server.services.rooms.live(created["id"])
        assert live is not None
        await wait_for(lambda: live.elapsed() >= held_s, timeout=held_s * 4, what="the backlog")
        gate.set()
        await wait_for(lambda: live.elapsed() >= take_s, timeout=take_s * 4, what="the take")
        chunks_during = sum(run.chunks for run in capture_layout.read_runs(rec_dir, "a"))
        assert (await f.call("recording:stop"))["ok"]
        stopped = time.monotonic()
        saved = None
        if capture:
            await expect(page.locator("#capture-status")).to_have_text(
                "Your recording is saved.", timeout=600_000
            )
            saved = time.monotonic() - stopped
        drops = bottleneck.dropped()
    finally:
        await browser.close()
        bottleneck.close()
        relay.close_all()
        await close_clients(clients)
    return NarrowTake(rec_dir, chunks_during, saved, drops, console, watch)
