"""The soak benchmark's short profile (issue 8), as a test: the same harness as
`bench/soak.py` for two minutes, two rooms, 3% loss and 30 ms jitter each way, one
network outage and one drop-and-rejoin per seat, then a small reconnection storm.

The goals are asserted with thresholds a two-minute run can honestly support. Memory
growth per minute and latency creep need the long run (`bench/soak.py --minutes 40`);
here RSS and latency only have to stay within bounds that catch a gross leak or a
stalled loop.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import soak

CI_PROFILE = [
    "--minutes", "2", "--rooms", "2", "--loss", "3", "--jitter-ms", "30",
    "--outage-every", "50", "--outage-s", "6", "--first-outage-s", "20", "--poll-s", "20",
    "--storm-rooms", "2", "--storm-settle-s", "5",
]  # fmt: skip


@pytest.mark.slow
@pytest.mark.timeout(460)
def test_soak_short_profile_meets_the_goals() -> None:
    figures, text = soak.run_soak(soak.build_parser().parse_args(CI_PROFILE), hard_limit=False)
    print(text)
    rooms: list[dict[str, Any]] = figures["rooms"]

    # every recording finalized
    assert [r["status"] for r in rooms] == ["ready", "ready"], text
    for room in rooms:
        assert abs(room["duration_s"] - room["wall_s"]) < 1.0, room

    # each seat had one outage of each kind, each an explicit gap at the right place
    gaps = [g for r in rooms for s in r["seats"].values() for g in s["gaps"]]
    assert sorted(g["kind"] for g in gaps) == ["network"] * 6 + ["rejoin"] * 6, gaps
    for gap in gaps:
        assert gap["found"], gap
        assert abs(gap["start_error_ms"]) <= 20, gap
        assert abs(gap["end_error_ms"]) <= 20, gap

    # bursts stay where they were sent, also after a reconnect
    for room in rooms:
        for seat, placed in room["seats"].items():
            assert placed["bursts_placed"] >= 5, (seat, placed)
            assert placed["max_drift_ms"] <= 20, (seat, placed)

    # the server loses nothing of its own: the relay explains the loss, within 1.5 points
    expected = sum(t["expected"] for r in rooms for t in r["loss"].values())
    lost = sum(t["lost"] for r in rooms for t in r["loss"].values())
    assert expected > 20_000
    assert 100 * lost / expected <= figures["expected_path_loss_pct"] + 1.5, text

    # nothing left behind once the rooms are closed (after the storm too)
    server = figures["server"]
    for key in ("asyncio_tasks", "open_fds"):
        assert server[key]["closed"] <= server[key]["idle"], (key, server[key])
        assert server[key]["after_storm"] <= server[key]["idle"], (key, server[key])
    assert server["rss_mb"]["end"] - server["rss_mb"]["start"] < 25, server["rss_mb"]

    # forwarding stays quick: no interval's p99 beyond 50 ms
    latencies = [i["p99_ms"] for i in figures["latency"] if i["p99_ms"] is not None]
    assert len(latencies) >= 4
    assert max(latencies) < 50, figures["latency"]

    # the storm: all six seats dropped and rejoined at once; each room hears everyone
    # again within 5 s, and its recording continues in new segments
    storm = figures["storm"]
    assert storm["recovered"] == storm["rooms"] == 2, storm
    assert max(storm["recover_s"].values()) <= 5.0, storm
    assert all(v == "ready" for v in storm["status"].values()), storm
    for segments in storm["segments"].values():
        assert set(segments) == {"a", "b", "facilitator"}
        assert min(segments.values()) >= 2, storm
