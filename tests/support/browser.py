"""Real Chromium for the browser tests: Debian's binary (never downloaded), fake media
devices fed from a WAV tone generated at test time, and checks a person would make."""

from __future__ import annotations

import contextlib
import functools
import os
import wave
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page, Playwright, Route
from playwright.async_api import Error as PlaywrightError

from storyroom.room.questions import bank
from support.media import RATE, TONES
from support.netimpair import Impairment, Link, Relay, host_candidate, rewrite_candidates
from support.polling import wait_for
from support.recordings import speech_like
from support.staff import STAFF_EMAIL, STAFF_PASSWORD

CHROMIUM = os.environ.get("STORYROOM_CHROMIUM", "/usr/bin/chromium")
EXPECT_MS = 15_000
"""Playwright's `expect` timeout for what waits on the server or on WebRTC."""
PHONE = {"width": 360, "height": 740}
LAPTOP = {"width": 1280, "height": 900}
WIDE = {"width": 1500, "height": 1000}


def artifacts_dir() -> Path:
    """Where screenshots go: $STORYROOM_ARTIFACTS, else /tmp/storyroom-shots."""
    folder = Path(os.environ.get("STORYROOM_ARTIFACTS") or "/tmp/storyroom-shots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_tone(path: Path, frequency: float, seconds: float = 4.0, amplitude: float = 0.3) -> Path:
    """A 16-bit 48 kHz mono sine (a whole number of cycles, so Chromium's loop is seamless)."""
    cycles = round(frequency * seconds)
    samples = round(cycles * RATE / frequency)
    t = np.arange(samples) / RATE
    return write_wav(path, amplitude * np.sin(2 * np.pi * frequency * t))


def write_speech(path: Path, seconds: float = 30.0, seed: int = 3) -> Path:
    """Speech-like 16-bit 48 kHz mono for a fake microphone (support.recordings.speech_like,
    talking throughout), so what a page sends or records can be matched to it."""
    return write_wav(path, speech_like(seconds, seed, [(0.0, seconds)]))


def write_wav(path: Path, samples: np.ndarray) -> Path:
    """Float samples (-1..1) as a 16-bit 48 kHz mono WAV file."""
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(pcm.tobytes())
    return path


def chromium_args(wav: Path | None) -> list[str]:
    args = [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        # the tests run in a network namespace with only `lo`: let WebRTC use it
        "--allow-loopback-in-peer-connection",
        # remote voices play without a click, as they would after the mic button
        "--autoplay-policy=no-user-gesture-required",
    ]
    if wav is not None:
        args.append(f"--use-file-for-fake-audio-capture={wav}")
    return args


async def launch(playwright: Playwright, wav: Path | None = None) -> Browser:
    return await playwright.chromium.launch(
        executable_path=CHROMIUM, headless=True, args=chromium_args(wav)
    )


def bank_text(index: int, lang: str = "en") -> str:
    """The text of the question bank's question `index`, as a page shows it in `lang`."""
    text: str = bank()["questions"][index]["text"][lang]
    return text


def token_of(link: str) -> str:
    """The seat token in a join link's fragment."""
    return urlsplit(link).fragment.removeprefix("token=")


def with_raw_audio(link: str) -> str:
    """The join link with `?raw=1`: the fake capture tone reaches WebRTC unprocessed."""
    base, _, fragment = link.partition("#")
    return f"{base}?raw=1#{fragment}"


RELAY_HOOKS = {
    "sdp: pc.localDescription.sdp,": "sdp: await window.viaRelayOffer(pc.localDescription.sdp),",
    "await pc.setRemoteDescription(ack.answer);": (
        "await pc.setRemoteDescription("
        '{type: "answer", sdp: await window.viaRelayAnswer(ack.answer.sdp)});'
    ),
}
"""Where the page's room-client.js sends its offer and takes the answer: each goes
through a hook that points it at the relay's ports instead."""


async def through_relay(
    context: BrowserContext, relay: Relay, name: str, up: Impairment, seed: int
) -> list[Link]:
    """Every peer connection the pages of `context` make goes through a new link of
    `relay` (`up` on the way to the server, nothing on the way back): their join script
    is served with two hooks that rewrite the offer's and the answer's candidates. The
    links, in order, as they open."""
    links: list[Link] = []

    async def via_relay_offer(sdp: str) -> str:
        link = await relay.open(
            f"{name}{len(links)}", up, Impairment(), seed + len(links), host_candidate(sdp)
        )
        links.append(link)
        return rewrite_candidates(sdp, link.server_port)

    async def via_relay_answer(sdp: str) -> str:
        links[-1].server_addr = host_candidate(sdp)
        return rewrite_candidates(sdp, links[-1].seat_port)

    async def hooked(route: Route) -> None:
        response = await route.fetch()
        body = await response.text()
        for old, new in RELAY_HOOKS.items():
            assert old in body, f"room-client.js changed: {old!r} is gone"
            body = body.replace(old, new)
        await route.fulfill(response=response, body=body)

    await context.route("**/js/lib/room-client.js", hooked)
    await context.expose_function("viaRelayOffer", via_relay_offer)
    await context.expose_function("viaRelayAnswer", via_relay_answer)
    return links


@dataclass
class PageWatch:
    """Console errors, page errors and CSP violations seen by a page."""

    errors: list[str] = field(default_factory=list)

    def attach(self, page: Page) -> None:
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))

    def _console(self, message: ConsoleMessage) -> None:
        text = message.text
        if message.type == "error" or "Content Security Policy" in text:
            # A refused Socket.IO connect (bad token) is logged by Chromium as an error.
            if "WebSocket connection" in text:
                return
            self.errors.append(f"{message.type}: {text}")

    def assert_clean(self) -> None:
        assert not self.errors, "browser console errors:\n" + "\n".join(self.errors)


@dataclass
class Seat:
    name: str
    page: Page
    watch: PageWatch


@asynccontextmanager
async def watched_page(
    browser: Browser,
    url: str,
    viewport: dict[str, int] | None = None,
    watch: PageWatch | None = None,
    **context_options: Any,
) -> AsyncIterator[tuple[Page, PageWatch]]:
    """`url` in a browser context of its own (closed on exit), with its console watched
    (by `watch`, or a plain PageWatch)."""
    context = await browser.new_context(viewport=viewport or LAPTOP, **context_options)  # type: ignore[arg-type]
    try:
        page = await context.new_page()
        watch = watch or PageWatch()
        watch.attach(page)
        await page.goto(url)
        yield page, watch
    finally:
        await context.close()


@asynccontextmanager
async def seat_page(
    browser: Browser, url: str, name: str, viewport: dict[str, int] | None = None
) -> AsyncIterator[Seat]:
    async with watched_page(browser, url, viewport) as (page, watch):
        yield Seat(name, page, watch)


async def horizontal_overflow(page: Page) -> int:
    """How many CSS pixels the page is wider than the viewport (0 means no sideways scroll)."""
    value: Any = await page.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    return int(value)


async def screenshot(page: Page, name: str) -> Path:
    """A full-page PNG, scrolled to the top first so sticky bars sit where people see them."""
    path = artifacts_dir() / f"{name}.png"
    await page.evaluate("() => window.scrollTo(0, 0)")
    await page.screenshot(path=str(path), full_page=True, animations="disabled")
    return path


async def turn_on_microphone(page: Page) -> None:
    """Press "Turn on my microphone" unless the page started it by itself (permission
    already granted, as with --use-fake-ui-for-media-stream)."""
    panel = page.locator("#mic-panel")

    async def on() -> bool:
        state = await panel.get_attribute("data-mic-state")
        if state == "on":
            return True
        if state in ("off", "failed"):
            with contextlib.suppress(PlaywrightError):
                await panel.locator("[data-role=enable]").click(timeout=500)
        return False

    await wait_for(on, timeout=30, interval=0.2, what="the microphone to be on")


async def received_tone(page: Page, seat: str, near: float) -> dict[str, Any] | None:
    """The strongest frequency in what the page receives from `seat`, if it is near `near`."""
    measured = await measured_tone(page, seat)
    return measured if is_tone(measured, near) else None


def is_tone(measured: dict[str, Any] | None, near: float) -> bool:
    """A playing stream whose strongest frequency, loud enough, is within 15 Hz of `near`."""
    return bool(
        measured
        and measured["playing"]
        and measured["db"] > -60
        and abs(measured["freq"] - near) < 15
    )


async def measured_tone(page: Page, seat: str) -> dict[str, Any] | None:
    """The strongest frequency (and its level) in what the page plays from `seat`: its
    <audio data-seat=...> element through a WebAudio AnalyserNode, over about half a
    second. None when there is no such stream yet."""
    result: dict[str, Any] | None = await page.evaluate(
        """async (seat) => {
            const audio = document.querySelector(`#remote-audio audio[data-seat="${seat}"]`);
            if (!audio || !audio.srcObject) return null;
            const ctx = new AudioContext();
            await ctx.resume();
            const source = ctx.createMediaStreamSource(audio.srcObject);
            const analyser = ctx.createAnalyser();
            analyser.fftSize = 8192;
            analyser.smoothingTimeConstant = 0;
            source.connect(analyser);
            await new Promise((resolve) => setTimeout(resolve, 500));
            const bins = new Float32Array(analyser.frequencyBinCount);
            analyser.getFloatFrequencyData(bins);
            let best = 1;
            for (let i = 1; i < bins.length; i++) if (bins[i] > bins[best]) best = i;
            source.disconnect();
            await ctx.close();
            return {freq: best * ctx.sampleRate / analyser.fftSize, db: bins[best],
                    playing: !audio.paused};
        }""",
        seat,
    )
    return result


async def inbound_audio(page: Page) -> dict[str, dict[str, float]]:
    """Per other seat: bytes and audio energy received so far (WebRTC inbound-rtp)."""
    result: dict[str, dict[str, float]] = await page.evaluate(
        """async () => {
            const client = window.storyroom.client;
            if (!client.pc) return {};
            const out = {};
            const stats = await client.pc.getStats();
            stats.forEach((s) => {
              if (s.type === "inbound-rtp" && s.kind === "audio" && client.mids[s.mid]) {
                out[client.mids[s.mid]] = {bytes: s.bytesReceived || 0,
                                           energy: s.totalAudioEnergy || 0};
              }
            });
            return out;
        }"""
    )
    return result


async def assert_hears(page: Page, seats: list[str]) -> None:
    """Bytes and energy from each seat keep rising, and each carries that seat's tone.
    A failure says what was last measured."""
    last: dict[str, Any] = {}

    async def inbound() -> dict[str, dict[str, float]] | None:
        last["inbound"] = stats = await inbound_audio(page)
        return stats if all(stats.get(seat, {}).get("bytes") for seat in seats) else None

    async def rising() -> dict[str, dict[str, float]] | None:
        before = last["baseline"]
        last["inbound"] = now = await inbound_audio(page)
        if any(now.get(seat, {}).get("bytes", 0) < before[seat]["bytes"] for seat in seats):
            # the page made a new peer connection (a reconnect on a starved machine): its
            # counters start again, so they must rise from here
            last["baseline"] = now if all(seat in now for seat in seats) else before
            return None
        ok = all(
            now[seat]["bytes"] > before[seat]["bytes"]
            and now[seat]["energy"] > before[seat]["energy"]
            for seat in seats
        )
        return now if ok else None

    async def tone(seat: str) -> dict[str, Any] | None:
        last[seat] = measured = await measured_tone(page, seat)
        return measured if is_tone(measured, TONES[seat]) else None

    try:
        last["baseline"] = await wait_for(inbound, 30, 0.1, f"inbound audio from {seats}")
        await wait_for(rising, 30, 0.1, "inbound bytes and energy rising")
        for seat in seats:
            await wait_for(functools.partial(tone, seat), 30, 0.1, f"{seat}'s tone")
    except AssertionError as failure:
        raise AssertionError(f"{failure}; last measured: {last}") from None


async def sign_in_as_staff(page: Page, password: str = STAFF_PASSWORD) -> None:
    """Fill in and send the staff sign-in form the page shows (support.staff's account)."""
    await page.get_by_label("Email").fill(STAFF_EMAIL)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()
