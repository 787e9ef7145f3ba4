"""Does a real Chromium send in-band FEC when the server's receiver reports tell it of
loss? A participant's page (Debian's Chromium, fake microphone playing speech) sends
through the impairment relay with 3% random loss on the way in; its own join script is
served with two hooks that send its offer and answer through the relay's ports.

Chromium's Opus encoder has FEC allowed (`useinbandfec=1` in the answer) but only adds
LBRR data once it believes packets are being lost, which it learns from RTCP receiver
reports. The stem shows whether it did, and finalization counts the packets rebuilt
from it."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Playwright, async_playwright

from storyroom.finalize import libopus
from storyroom.recording.oggopus import OggOpusReader, is_loss_filler
from support.browser import launch, through_relay, turn_on_microphone, with_raw_audio, write_speech
from support.netimpair import Impairment, Relay
from support.server import RunningServer, create_session, seat_clients, wait_for

pytestmark = pytest.mark.slow

LOSS = 0.03
SECONDS = 25.0
RATE = 48_000


@pytest.fixture
async def pw() -> AsyncIterator[Playwright]:
    async with async_playwright() as playwright:
        yield playwright


async def test_chromium_sends_fec_once_the_server_reports_loss(
    server: RunningServer, pw: Playwright, tmp_path: Path
) -> None:
    created = await create_session(server.url)
    clients = await seat_clients(server.url, created)
    relay = Relay()
    browser = await launch(pw, write_speech(tmp_path / "speech.wav"))

    try:
        # a's socket is the page's: the test's own client for a steps aside first
        await clients["a"].close()
        context = await browser.new_context()
        links = await through_relay(context, relay, "chromium", Impairment(loss=LOSS), 5)
        page = await context.new_page()
        await page.goto(with_raw_audio(created["seats"]["a"]["url"]))
        await turn_on_microphone(page)
        await wait_for(lambda: bool(links and links[0].server_addr), timeout=20, what="the offer")
        consent = {"record": True, "archive": True, "public": False}
        await page.evaluate("(c) => window.storyroom.client.request('consent', c)", consent)
        assert (await clients["b"].call("consent", consent))["ok"]
        f = clients["facilitator"]
        start = await f.call("recording:start")
        assert start["ok"], start
        rec_dir = server.settings.recordings_dir / start["recording"]["id"]
        began = time.time()
        await wait_for(lambda: time.time() - began > SECONDS, timeout=SECONDS + 10)
        stats: list[dict[str, Any]] = await page.evaluate(
            """async () => {
                const out = [];
                (await window.storyroom.client.pc.getStats()).forEach((s) => {
                    if (s.type === "remote-inbound-rtp" || s.type === "outbound-rtp")
                        out.push({type: s.type, packetsSent: s.packetsSent,
                                  packetsLost: s.packetsLost, fractionLost: s.fractionLost});
                });
                return out;
            }"""
        )
        assert (await f.call("recording:stop"))["ok"]
        await f.wait(lambda s: s["recording"]["status"] == "ready", "ready", timeout=180)
        await context.close()
    finally:
        await browser.close()
        for client in clients.values():
            await client.close()
        relay.close_all()

    remote = [s for s in stats if s["type"] == "remote-inbound-rtp"]
    assert remote and remote[0]["packetsLost"] > 0, stats  # the server told Chromium
    packets = [p for p, _ in OggOpusReader(rec_dir / "stems" / "a-01.opus").packets()]
    voice = [p for p in packets if not is_loss_filler(p)]
    half = voice[len(voice) // 2 :]
    lbrr_share = sum(map(libopus.has_lbrr, half)) / len(half)
    modes = {p[0] >> 3 for p in half}
    metadata = json.loads((rec_dir / "metadata.json").read_text())
    counts = metadata["stems"]["a"]["packets_lost"]
    print(
        f"chromium fec: remote-inbound {remote[0]}; second half: {len(half)} packets, "
        f"LBRR in {lbrr_share:.0%}, TOC configs {sorted(modes)}; metadata {counts}"
    )
    assert lbrr_share > 0.3, (lbrr_share, sorted(modes))
    assert counts["lost"] > 0 and counts["recovered_fec"] > 0, counts
