"""`/metrics`: Prometheus's text format, read by prometheus-client's own parser; the
figures follow a live take (rooms, seats, peer connections, forwarding latency, per-seat
packets and loss, finalization); open to the metrics networks, staff-only elsewhere."""

from __future__ import annotations

import os
import time
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from storyroom.web.health import HealthRoutes
from support.media import start_recording, tone_room
from support.polling import wait_for
from support.server import STAFF_TOKEN, RunningServer, serving

CONSENT = {"record": True, "archive": False, "public": False}
SEATS = ("a", "b", "facilitator")

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics", headers=headers) as r:
        return r.status, r.headers.get("Content-Type", ""), await r.text()


async def samples(url: str) -> Samples:
    """Every sample of a scrape, by name and labels."""
    status, content_type, text = await scrape(url)
    assert status == 200, text
    assert content_type.startswith("text/plain; version=0.0.4")
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: Samples, name: str, **labels: str) -> float:
    return found[(name, tuple(sorted(labels.items())))]


def by_seat(found: Samples, name: str) -> dict[str, float]:
    return {dict(k[1])["seat"]: v for k, v in found.items() if k[0] == name}


async def test_figures_follow_a_take(server: RunningServer) -> None:
    idle = await samples(server.url)
    assert value(idle, "storyroom_peer_connections") == 0
    assert value(idle, "storyroom_forward_latency_seconds_count") == 0
    assert value(idle, "storyroom_finalize_queue_length") == 0
    stat = os.statvfs(server.settings.data_dir)
    assert value(idle, "storyroom_data_free_bytes") == pytest.approx(
        stat.f_bavail * stat.f_frsize, rel=0.05
    )
    assert value(idle, "process_resident_memory_bytes") > 0

    async with tone_room(server.url) as (clients, peers):
        await wait_for(lambda: all(len(p.received) == 2 for p in peers.values()), timeout=20)
        await start_recording(server.settings.recordings_dir, clients, CONSENT)
        first = await samples(server.url)
        assert value(first, "storyroom_rooms", state="recording") == 1
        assert value(first, "storyroom_takes_recording") == 1
        assert value(first, "storyroom_peer_connections") == 3
        for seat in SEATS:
            assert value(first, "storyroom_seats_connected", seat=seat) == 1
        latency_before = value(first, "storyroom_forward_latency_seconds_count")
        packets_before = by_seat(first, "storyroom_seat_packets_total")
        assert set(packets_before) == set(SEATS)

        # 50 packets a second from each seat, forwarded to two others: wait for two
        # seconds' worth (a busy machine's peers can send later than the wall clock)
        async def two_seconds_counted() -> Samples | None:
            scraped = await samples(server.url)
            packets = by_seat(scraped, "storyroom_seat_packets_total")
            forwarded = value(scraped, "storyroom_forward_latency_seconds_count")
            if forwarded > latency_before + 150 and all(
                packets[seat] > packets_before[seat] + 50 for seat in SEATS
            ):
                return scraped
            return None

        second = await wait_for(two_seconds_counted, timeout=30, interval=0.5, what="2 s of audio")
        assert value(second, "storyroom_forward_latency_seconds_bucket", le="+Inf") == value(
            second, "storyroom_forward_latency_seconds_count"
        )
        assert value(second, "storyroom_forward_latency_seconds_bucket", le="0.1") > 0
        assert all(
            0.0 <= loss <= 1.0 for loss in by_seat(second, "storyroom_seat_loss_ratio").values()
        )

        assert (await clients["facilitator"].call("recording:stop"))["ok"]
        jobs = server.services.finalize_jobs
        await wait_for(lambda: jobs.outcomes, timeout=60, what="the take finalized")
        done = await samples(server.url)
        assert value(done, "storyroom_rooms", state="stopped") == 1
        assert value(done, "storyroom_takes_recording") == 0
        assert value(done, "storyroom_finalize_jobs_total", outcome="ready") == 1
        assert value(done, "storyroom_finalize_duration_seconds_count") == 1
        assert 0 < value(done, "storyroom_finalize_duration_seconds_sum") < 60
        assert value(done, "storyroom_finalize_queue_length") == 0


async def test_scrape_overhead_with_a_live_room(server: RunningServer) -> None:
    """Not a timed test: prints what a scrape costs beside a live room of three."""
    async with tone_room(server.url) as (_, peers):
        await wait_for(lambda: all(len(p.received) == 2 for p in peers.values()), timeout=20)
        # the same collectors as the route's, over the same live services
        health = HealthRoutes(server.runner.app, server.settings)
        rounds = 200
        started = time.perf_counter()
        for _ in range(rounds):
            text = generate_latest(health.registry)
        collect_ms = (time.perf_counter() - started) * 1000 / rounds
        started = time.perf_counter()
        for _ in range(50):
            status, _, _ = await scrape(server.url)
            assert status == 200
        request_ms = (time.perf_counter() - started) * 1000 / 50
        print(
            f"/metrics with a live room: {collect_ms:.2f} ms to collect "
            f"({len(text)} bytes), {request_ms:.2f} ms per request on loopback"
        )
        assert b"storyroom_seat_packets_total" in text


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer not-the-staff-token-at-all"}, 401),
        ({"Authorization": f"Bearer {STAFF_TOKEN}"}, 200),
    ],
    ids=["no-credentials", "wrong-token", "staff-token"],
)
async def test_outside_the_metrics_networks_only_staff_may_scrape(
    tmp_path: Path, headers: dict[str, str], status: int
) -> None:
    async with serving(tmp_path / "data", metrics_networks="10.0.0.0/8") as server:
        got, _, text = await scrape(server.url, headers)
        assert got == status, text
        if status == 200:
            assert "storyroom_rooms" in text
        else:
            assert "storyroom_rooms" not in text
        async with aiohttp.ClientSession() as http, http.get(f"{server.url}/readyz") as ready:
            assert ready.status == 200  # readiness stays public
