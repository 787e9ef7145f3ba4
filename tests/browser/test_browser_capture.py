"""A participant's own browser capture, end to end in Debian's Chromium: the page records
its microphone while the room records, keeps the chunks while the network holds them
back, says "Saving your recording: N%" after stop and then that it is saved; the
stored run decodes to the take's length and matches what the fake microphone played.
A reload mid-take starts a second run and the first one's chunks still arrive."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from playwright.async_api import Browser, BrowserContext, Page, Playwright, Route, expect
from playwright.async_api import Error as PlaywrightError

from storyroom.capture import layout
from support.browser import (
    PageWatch,
    launch,
    screenshot,
    turn_on_microphone,
    with_raw_audio,
    write_speech,
)
from support.captures import locate
from support.media import RATE, decode_ogg
from support.server import (
    CONSENT,
    RunningServer,
    SeatClient,
    close_clients,
    create_session,
    seat_clients,
    wait_for,
)

pytestmark = pytest.mark.slow

CAPTURE_URL = re.compile(r".*/api/capture/.*")
WINDOW_S = 2.0
MATCH = 0.8
SAVED_MS = 120_000
"""How long "saved" may take after stop: finalization starts then and competes for the
cores, and a request that failed waits out its back-off (up to 30 s)."""
"""Normalised correlation a stretch of the capture must reach against the source."""


@dataclass
class Gate:
    """Holds the page's capture uploads while closed (a network that lets nothing
    through), and lets them go when opened."""

    open: asyncio.Event = field(default_factory=asyncio.Event)
    held: int = 0
    passed: int = 0

    async def route(self, route: Route) -> None:
        self.held += 1
        await self.open.wait()
        with contextlib.suppress(PlaywrightError):  # its page may have been reloaded
            await route.continue_()
            self.passed += 1


@dataclass
class Room:
    server: RunningServer
    created: dict[str, Any]
    clients: dict[str, SeatClient]
    context: BrowserContext
    page: Page
    watch: PageWatch
    gate: Gate
    source: np.ndarray

    @property
    def facilitator(self) -> SeatClient:
        return self.clients["facilitator"]

    async def release(self) -> None:
        """The network lets uploads through again: the held ones go on, and later ones
        no longer pass through the test's handler at all."""
        self.gate.open.set()
        await self.context.unroute(CAPTURE_URL, self.gate.route)


@pytest.fixture
async def speech_browser(playwright: Playwright, tmp_path: Path) -> AsyncIterator[Browser]:
    browser = await launch(playwright, write_speech(tmp_path / "speech.wav", seconds=20.0))
    try:
        yield browser
    finally:
        await browser.close()


@pytest.fixture
async def room(
    server: RunningServer, speech_browser: Browser, tmp_path: Path
) -> AsyncIterator[Room]:
    """Participant a in Chromium (speech on its fake microphone, capture uploads behind
    a gate), b and the facilitator as Socket.IO clients; both consented."""
    created = await create_session(server.url)
    clients = await seat_clients(server.url, created, ("b", "facilitator"))
    context = await speech_browser.new_context()
    gate = Gate()
    await context.route(CAPTURE_URL, gate.route)
    try:
        page = await context.new_page()
        watch = PageWatch()
        watch.attach(page)
        await page.goto(with_raw_audio(created["seats"]["a"]["url"]))
        await turn_on_microphone(page)
        ack = await page.evaluate("(c) => window.storyroom.client.request('consent', c)", CONSENT)
        assert ack["ok"], ack
        assert (await clients["b"].call("consent", CONSENT))["ok"]
        source = decode_ogg(str(tmp_path / "speech.wav"))
        yield Room(server, created, clients, context, page, watch, gate, source)
    finally:
        gate.open.set()
        await context.close()
        await close_clients(clients)


def best_match(window: np.ndarray, source: np.ndarray) -> float:
    """The highest normalised correlation of `window` with any stretch of `source`
    played in a loop (Chromium loops its fake microphone file)."""
    return locate(window, np.concatenate([source, source[: len(window)]]))[1]


def matched_share(audio: np.ndarray, source: np.ndarray) -> float:
    """The share of the capture's whole two-second windows that match the source."""
    size = int(WINDOW_S * RATE)
    windows = [audio[i : i + size] for i in range(0, len(audio) - size + 1, size)]
    assert windows, f"only {len(audio) / RATE:.2f} s decoded"
    scores = [best_match(w, source) for w in windows]
    print("capture windows vs source:", [round(s, 3) for s in scores])
    return sum(s >= MATCH for s in scores) / len(scores)


def elapsed_now(room: Room) -> float:
    """The take's recording clock now, as the server's room counts it."""
    live = room.server.services.rooms.live(room.created["id"])
    assert live is not None
    return live.elapsed()


def room_state(room: Room) -> str:
    live = room.server.services.rooms.live(room.created["id"])
    assert live is not None
    return live.state.value


async def recording_for(room: Room, seconds: float) -> None:
    """Let the take run until `seconds` on its recording clock."""
    await wait_for(lambda: elapsed_now(room) >= seconds, timeout=60, what=f"{seconds} s recorded")


async def start(room: Room) -> Path:
    """Start a take; its recording folder."""
    ack = await room.facilitator.call("recording:start")
    assert ack["ok"], ack
    return room.server.settings.recordings_dir / ack["recording"]["id"]


async def stop(room: Room) -> float:
    """Stop the take; its recorded length (pauses excluded) as the server counts it."""
    assert (await room.facilitator.call("recording:stop"))["ok"]
    snapshot = await room.facilitator.wait(
        lambda s: s["recording"]["state"] == "stopped", "stopped"
    )
    return float(snapshot["timer"]["elapsed_s"])


async def test_a_take_is_captured_saved_after_stop_and_matches_the_microphone(room: Room) -> None:
    f = room.facilitator
    rec_dir = await start(room)
    await recording_for(room, 4.0)
    assert (await f.call("recording:pause"))["ok"]
    # a paused take records nothing: the page's recorder pauses with the room
    await wait_for(
        lambda: room.page.evaluate(
            "() => window.storyroom.capture.live.recorder.state === 'paused'"
        ),
        what="the page's recorder paused",
    )
    assert (await f.call("recording:resume"))["ok"]
    await recording_for(room, 8.0)
    length = await stop(room)

    # the network held every upload back: after stop the page says how far it got
    status = room.page.locator("#capture-status")
    await expect(status).to_have_attribute("data-state", "saving")
    await expect(status).to_contain_text(re.compile(r"Saving your recording: \d+%"))
    assert room.gate.held >= 1
    # and asks to keep the page open instead of saying it can be closed
    ended = room.page.locator("#ended-body")
    await expect(ended).to_contain_text("Please keep this page open until your recording is saved")
    await expect(room.page.locator("#ended")).not_to_contain_text("You can close this page")
    await screenshot(room.page, "capture-saving")
    await room.release()
    await expect(status).to_have_attribute("data-state", "saved", timeout=SAVED_MS)
    await expect(status).to_have_text("Your recording is saved.", timeout=SAVED_MS)
    await expect(ended).to_contain_text("You can stay to say goodbye, then close this page.")
    await screenshot(room.page, "capture-saved")

    # the facilitator saw the backup arrive, all of it
    await wait_for(
        lambda: any(
            e == "capture:progress" and d["seats"].get("a", {}).get("closed") for e, d in f.events
        ),
        what="the facilitator told the backup arrived",
    )
    runs = layout.read_runs(rec_dir, "a")
    assert [(r.run, r.closed) for r in runs] == [(1, True)]
    run = runs[0]
    assert run.mime.startswith("audio/webm") and run.chunks >= 6
    assert 0.0 <= run.rec_start < 1.0
    audio = decode_ogg(str(run.media))
    decoded = len(audio) / RATE
    print(
        f"capture: {run.chunks} chunks, {run.bytes} bytes, {decoded:.2f} s decoded, take {length:.2f} s"
    )
    # the recorder starts, pauses, resumes and stops when the page hears of it: a few
    # tenths of a second after the server each time
    assert abs(decoded - length) < 1.5, (decoded, length)
    assert run.bytes * 8 / decoded > 64_000  # the archival rate, not a phone call's
    assert matched_share(audio, room.source) >= 0.8
    room.watch.assert_clean()


async def test_a_reload_mid_take_starts_a_second_run_and_loses_nothing(room: Room) -> None:
    rec_dir = await start(room)
    await recording_for(room, 5.0)
    # what the first page keeps for the server when it goes away
    kept = await room.page.evaluate(
        "() => window.storyroom.capture.runs.map((r) => ({recorded: r.recorded, confirmed: r.confirmed}))"
    )
    assert len(kept) == 1 and kept[0]["recorded"] >= 3 and kept[0]["confirmed"] == 0, kept
    await room.page.reload()
    await turn_on_microphone(room.page)
    await room.release()
    # the second page sends the first page's run, then records its own
    await wait_for(
        lambda: len(layout.read_runs(rec_dir, "a")) == 2, timeout=30, what="a second run"
    )
    reloaded_at = elapsed_now(room)
    await recording_for(room, reloaded_at + 4.0)
    length = await stop(room)
    status = room.page.locator("#capture-status")
    await expect(status).to_have_text("Your recording is saved.", timeout=SAVED_MS)

    first, second = layout.read_runs(rec_dir, "a")
    assert first.closed and second.closed
    assert first.chunks >= kept[0]["recorded"], (first, kept)
    assert first.rec_start < second.rec_start <= reloaded_at
    parts = [decode_ogg(str(run.media)) for run in (first, second)]
    seconds = [len(p) / RATE for p in parts]
    print(
        f"reload: runs {seconds} s, rec_start {first.rec_start:.2f}/{second.rec_start:.2f}, take {length:.2f} s"
    )
    assert seconds[0] >= kept[0]["recorded"] - 1.0
    assert abs(seconds[1] - (length - second.rec_start)) < 1.5
    for part in parts:
        assert matched_share(part, room.source) >= 0.8
    room.watch.assert_clean()


async def test_the_console_shows_each_backup_arriving_and_saves_its_own(
    room: Room, speech_browser: Browser
) -> None:
    # the facilitator's console in Chromium too, in place of its Socket.IO client
    await room.facilitator.close()
    context = await speech_browser.new_context()
    try:
        console = await context.new_page()
        watch = PageWatch()
        watch.attach(console)
        await console.goto(with_raw_audio(room.created["seats"]["facilitator"]["url"]))
        await turn_on_microphone(console)
        start_button = console.get_by_role("button", name="Start recording")
        await expect(start_button).to_be_enabled()
        await start_button.click()
        await wait_for(lambda: room.server.services.rooms.live(room.created["id"]), what="room")
        await recording_for(room, 4.0)
        # the ack may come late on a busy machine: the room's state says when it stopped
        await console.evaluate("() => { window.storyroom.client.recording('stop'); }")
        await wait_for(lambda: room_state(room) == "stopped", timeout=60, what="the take stopped")
        card = console.locator('.seat-card[data-seat="a"] .backup')
        own = console.locator('.seat-card[data-seat="facilitator"] .backup')
        # the console's own upload is not held back; a's is, until now
        await expect(own).to_have_text("Backup from their browser: all arrived", timeout=SAVED_MS)
        await expect(card).to_be_hidden()
        await room.release()
        await expect(card).to_have_text("Backup from their browser: all arrived", timeout=SAVED_MS)
        await expect(console.locator("#capture-status")).to_have_text(
            "Your recording is saved.", timeout=SAVED_MS
        )
        await expect(room.page.locator("#capture-status")).to_have_text(
            "Your recording is saved.", timeout=SAVED_MS
        )
        rec_id = await console.evaluate("() => window.storyroom.view.snapshot.recording.id")
        rec_dir = room.server.settings.recordings_dir / rec_id
        assert layout.captured_seats(rec_dir) == ["a", "facilitator"]
        for seat in ("a", "facilitator"):
            (run,) = layout.read_runs(rec_dir, seat)
            assert run.closed and run.chunks >= 3
        watch.assert_clean()
    finally:
        await context.close()


async def test_a_take_past_its_upload_window_says_the_copy_could_not_be_sent(room: Room) -> None:
    rec_dir = await start(room)
    await recording_for(room, 3.0)
    await stop(room)
    room.server.services.captures.window_s = 0.0
    await room.release()
    status = room.page.locator("#capture-status")
    await expect(status).to_have_attribute("data-state", "failed", timeout=SAVED_MS)
    await expect(status).to_have_text(
        "Part of this browser's copy could not be sent. The server's recording is kept."
    )
    assert layout.read_runs(rec_dir, "a") == []


async def test_a_page_that_leaves_the_room_stops_recording_and_sends_what_it_has(
    room: Room,
) -> None:
    rec_dir = await start(room)
    await room.release()
    await recording_for(room, 3.0)
    assert await room.page.evaluate("() => Boolean(window.storyroom.capture.live)")
    # the person leaves: nothing more is recorded, and what was is sent and closed
    await room.page.evaluate("() => window.storyroom.view.leave()")
    await wait_for(
        lambda: room.page.evaluate("() => window.storyroom.capture.live === null"),
        what="the page's recorder stopped",
    )
    assert room_state(room) == "recording"  # the others go on
    await wait_for(
        lambda: [r.closed for r in layout.read_runs(rec_dir, "a")] == [True],
        timeout=SAVED_MS / 1000,
        what="the run sent and closed",
    )
    (run,) = layout.read_runs(rec_dir, "a")
    assert run.chunks >= 2
    room.watch.assert_clean()
