"""The proof of issue 15 (support.proof on support.topology): PostgreSQL, SeaweedFS,
Redis, HAProxy, two `storyroom serve` nodes with the finalization queue in PostgreSQL
and no in-process worker, and one separate `storyroom worker`, all on 127.0.0.1 and
stopped by pid. Six rooms of three aiortc seats record through the proxy; a staff page
on node-1 sees them all live; node-2 is SIGKILLed mid-take. Every take is finalized by
the worker with exactly one successful job, none is lost, no room is ever split, node-2's
rooms record again on node-1 within 20 s with at most 2.5 s missing at the kill, and
node-2, restarted, takes a new room and none of the failed-over ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.media import TONES
from support.postgres import Postgres
from support.proof import prove
from support.topology import running_cluster

ROOMS = 6
RECORD_S = 6.0
DEAD_AFTER_S = 6.0
SETTINGS = {
    "STORYROOM_NODE_HEARTBEAT_S": "0.5",
    "STORYROOM_NODE_DEAD_AFTER_S": str(DEAD_AFTER_S),
    "STORYROOM_NODE_REAP_INTERVAL_S": "0.5",
    "STORYROOM_QUEUE_HEARTBEAT_S": "0.5",
    "STORYROOM_QUEUE_STALLED_S": "3",
    "STORYROOM_LOG_LEVEL": "INFO",
}


@pytest.mark.cluster
@pytest.mark.slow
@pytest.mark.timeout(600)  # ~2.5 min on a busy 2-core machine; finalizing 10 takes is most
async def test_six_rooms_on_two_nodes_survive_a_node_killed_mid_take(
    postgres: Postgres, tmp_path: Path
) -> None:
    async with running_cluster(tmp_path, postgres, SETTINGS) as cluster:
        figures = await prove(cluster, ROOMS, RECORD_S)
    print()
    for line in figures.lines():
        print(line)

    assert {node: len(ids) for node, ids in figures.rooms_on.items()} == {
        "node-1": ROOMS // 2,
        "node-2": ROOMS // 2,
    }
    assert figures.staff_saw == ROOMS
    # every take (the first six, node-2's rooms' next takes on node-1, the new room's
    # take on the restarted node-2) ready, by the worker, with exactly one job
    assert len(figures.takes) == ROOMS + ROOMS // 2 + 1
    assert figures.lost == 0, figures.finalized
    assert figures.jobs == {take: ["succeeded"] for take in figures.takes}, figures.jobs
    assert figures.by_worker == len(figures.takes)
    assert figures.samples > 20 and figures.splits == 0
    assert len(figures.back_recording_s) == ROOMS // 2
    # never before the reaper may declare node-2 dead; within 20 s of the kill
    assert all(DEAD_AFTER_S - 1.0 <= s <= 20.0 for s in figures.back_recording_s)
    assert len(figures.killed) == ROOMS // 2
    for take in figures.killed:
        assert take.missing_s <= 2.5, take
        # the seats' tracks fall behind the wall clock on a busy machine: bound by
        # what they sent, not by RECORD_S
        assert min(take.finalized_s.values()) > 1.0, take
        for seat, frequency in take.frequency.items():
            assert frequency == pytest.approx(TONES[seat], abs=5), take
    assert figures.restarted_took_new
    assert figures.restarted_took_failed_over == 0
    assert figures.seats_on == {"node-1": 3 * ROOMS // 2, "node-2": 3 * ROOMS // 2}
