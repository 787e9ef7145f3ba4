"""Finalization queued in PostgreSQL (storyroom.finalize.queue): the job row is written
in the transaction that stops the take, `storyroom worker` processes run it, a worker
SIGKILLed mid-job is replaced and the take is finalized once, and progress written by
the worker reaches the room on the web node. Real PostgreSQL (the run's own cluster),
a real server with aiortc peers sending tones, real worker processes."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from storyroom.app import STORE_MODULES
from storyroom.errors import NotFound
from storyroom.finalize.jobs import FinalizeJobs
from storyroom.finalize.queue import TASK_NAME, FinalizeQueue
from storyroom.orgs import EVERY_ORGANISATION
from storyroom.recording.layout import MANIFEST, PART_SUFFIX
from storyroom.status import FinalizeStatus
from storyroom.store import RecordingRow, Store
from support.media import start_recording, stop_recording, tone_room
from support.polling import wait_for, wait_until
from support.postgres import Postgres
from support.process import WorkerProcess, serve, storyroom, work
from support.server import finalized, free_port, serving, start_server

HEARTBEAT_S = 0.5
STALLED_S = 3.0
QUEUED = {"queue": "postgres", "queue_heartbeat_s": HEARTBEAT_S, "queue_stalled_s": STALLED_S}
"""A server whose finalization is queued in PostgreSQL and run by other processes."""


def worker_env(url: str) -> dict[str, str]:
    return {
        "STORYROOM_DATABASE_URL": url,
        "STORYROOM_QUEUE": "postgres",
        "STORYROOM_QUEUE_HEARTBEAT_S": str(HEARTBEAT_S),
        "STORYROOM_QUEUE_STALLED_S": str(STALLED_S),
    }


async def jobs_of(url: str, recording_id: str) -> list[dict[str, Any]]:
    """procrastinate's rows for the recording's finalization, oldest first."""
    async with await psycopg.AsyncConnection.connect(url, row_factory=dict_row) as db:
        cursor = await db.execute(
            "SELECT id, status, attempts, queueing_lock FROM procrastinate_jobs"
            " WHERE lock = %s AND task_name = %s ORDER BY id",
            (recording_id, TASK_NAME),
        )
        return await cursor.fetchall()


async def job_events(url: str, job_id: int) -> list[str]:
    async with await psycopg.AsyncConnection.connect(url) as db:
        cursor = await db.execute(
            "SELECT type::text FROM procrastinate_events WHERE job_id = %s ORDER BY id",
            (job_id,),
        )
        return [row[0] for row in await cursor.fetchall()]


async def finalize_status(url: str, recording_id: str) -> str | None:
    """The recording's finalization status as stored (staff see `queued` as finalizing)."""
    async with await psycopg.AsyncConnection.connect(url) as db:
        cursor = await db.execute(
            "SELECT finalize_status FROM recordings WHERE id = %s", (recording_id,)
        )
        row = await cursor.fetchone()
        assert row is not None
        return str(row[0]) if row[0] is not None else None


async def until_status(url: str, recording_id: str, status: str, timeout: float = 60) -> None:
    """Wait until the recording's stored finalization status is `status`."""

    async def reached() -> bool:
        return await finalize_status(url, recording_id) == status

    await wait_for(reached, timeout=timeout, interval=0.05, what=f"{recording_id} {status}")


async def until_jobs_done(url: str, recording_id: str) -> None:
    """Wait until no job of the recording waits or runs (a worker writes `ready`, then
    ends its job: stopping it in between would leave the job running)."""

    async def done() -> bool:
        jobs = await jobs_of(url, recording_id)
        return bool(jobs) and all(j["status"] not in ("todo", "doing") for j in jobs)

    await wait_for(done, timeout=30, interval=0.05, what=f"{recording_id}'s jobs done")


async def recorded_take(url: str, recordings: Path, seconds: float) -> Path:
    """A take of `seconds` of three aiortc seats' tones on the server at `url`, stopped;
    its folder."""
    async with tone_room(url) as (clients, _):
        rec_dir = await start_recording(recordings, clients)
        await wait_until(time.monotonic() + seconds)
        await stop_recording(clients, rec_dir)
    return rec_dir


def finalize_of(snapshot: dict[str, Any]) -> dict[str, Any]:
    return snapshot["recording"]["finalize"] or {}


def check_outputs(rec_dir: Path) -> list[str]:
    """The manifest lists each file once, every file it lists is intact, no file of an
    unfinished run is left; the names it lists."""
    names = []
    for line in (rec_dir / MANIFEST).read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        path = rec_dir / name
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, name
        names.append(name)
    assert len(names) == len(set(names)), names
    assert not list(rec_dir.rglob(f"*{PART_SUFFIX}"))
    assert {"master.wav", "stems/a.flac", "stems/b.flac", "stems/facilitator.flac"} <= set(names)
    return names


async def finalized_once(url: str, rec_dir: Path, runs: int) -> list[str]:
    """One job for the recording, succeeded after `runs` runs, and intact outputs (see
    :func:`check_outputs`, whose names this returns)."""
    jobs = await jobs_of(url, rec_dir.name)
    assert [(j["status"], j["attempts"]) for j in jobs] == [("succeeded", runs)], jobs
    return check_outputs(rec_dir)


@pytest.mark.slow
async def test_a_stopped_take_stays_queued_until_a_worker_process_finalizes_it(
    tmp_path: Path, postgres: Postgres
) -> None:
    url = postgres.new_database()
    data = tmp_path / "data"
    worker: WorkerProcess | None = None
    async with serving(data, database_url=url, queue_worker=False, **QUEUED) as server:
        assert server.services.finalize_jobs.running
        async with tone_room(server.url) as (clients, _):
            rec_dir = await start_recording(server.settings.recordings_dir, clients)
            await wait_until(time.monotonic() + 3.0)
            await stop_recording(clients, rec_dir)
            facilitator = clients["facilitator"]
            # written with the stop; nothing here takes it
            jobs = await jobs_of(url, rec_dir.name)
            assert [(j["status"], j["queueing_lock"]) for j in jobs] == [("todo", rec_dir.name)]
            await facilitator.wait(lambda s: finalize_of(s).get("status") == "queued", "queued")
            await wait_until(time.monotonic() + 2 * STALLED_S)
            assert await finalize_status(url, rec_dir.name) == "queued"
            assert [j["status"] for j in await jobs_of(url, rec_dir.name)] == ["todo"]

            worker = work(data, tmp_path / "worker.log", worker_env(url))
            try:
                rec = await finalized(server.url, rec_dir.name, timeout=180)
                await until_jobs_done(url, rec_dir.name)
                # the room on this node heard the other process's progress, then `ready`
                await facilitator.wait(
                    lambda s: finalize_of(s).get("status") == "ready", "ready told", timeout=30
                )
            finally:
                worker.stop()
            told = [finalize_of(s) for s in facilitator.snapshots]
    print(worker.log()[-2000:])
    assert rec["duration_s"] > 2.0
    assert any(f.get("status") == "finalizing" and f["percent"] > 0 for f in told), told
    await finalized_once(url, rec_dir, runs=1)


@pytest.mark.slow
async def test_a_worker_killed_mid_job_is_replaced_and_the_take_is_finalized_once(
    tmp_path: Path, postgres: Postgres
) -> None:
    url = postgres.new_database()
    data = tmp_path / "data"
    workers: list[WorkerProcess] = []
    async with serving(data, database_url=url, queue_worker=False, **QUEUED) as server:
        try:
            rec_dir = await recorded_take(server.url, server.settings.recordings_dir, 8.0)
            workers.append(work(data, tmp_path / "first.log", worker_env(url)))
            await until_status(url, rec_dir.name, "finalizing")  # the first worker's run
            workers[0].stop()  # SIGKILL, mid-job
            killed = time.monotonic()
            assert (await jobs_of(url, rec_dir.name))[0]["status"] == "doing"
            workers.append(work(data, tmp_path / "second.log", worker_env(url)))
            rec = await finalized(server.url, rec_dir.name, timeout=180)
            await until_jobs_done(url, rec_dir.name)
            print(f"killed mid-job; ready {time.monotonic() - killed:.1f} s later")
        finally:
            for worker in workers:
                worker.stop()
    assert "retried" in workers[1].log(), workers[1].log()[-3000:]
    names = await finalized_once(url, rec_dir, runs=2)
    events = await job_events(url, (await jobs_of(url, rec_dir.name))[0]["id"])
    assert events.count("started") == 2 and events.count("succeeded") == 1, events
    assert rec["duration_s"] > 6.0
    assert {f["name"] for f in rec["files"]} >= set(names) - {MANIFEST}


async def test_one_server_with_its_own_worker_finalizes_alone(
    tmp_path: Path, postgres: Postgres
) -> None:
    url = postgres.new_database()
    async with serving(tmp_path / "data", database_url=url, **QUEUED) as server:
        rec_dir = await recorded_take(server.url, server.settings.recordings_dir, 2.0)
        rec = await finalized(server.url, rec_dir.name, timeout=180)
        await until_jobs_done(url, rec_dir.name)
        assert server.services.finalize_jobs.outcomes["ready"] == 1  # by this process
    assert rec["duration_s"] > 1.0
    await finalized_once(url, rec_dir, runs=1)


@pytest.mark.slow
async def test_a_take_interrupted_by_a_killed_server_is_queued_when_it_starts_again(
    tmp_path: Path, postgres: Postgres
) -> None:
    url = postgres.new_database()
    data = tmp_path / "data"
    env = {**worker_env(url), "STORYROOM_QUEUE_WORKER": "off"}
    server = serve(data, tmp_path / "first.log", env=env)
    worker: WorkerProcess | None = None
    try:
        await server.ready()
        async with tone_room(server.url) as (clients, _):
            rec_dir = await start_recording(data / "recordings", clients)
            await wait_until(time.monotonic() + 3.0)
            server.stop()  # SIGKILL mid-take: no status change, no job
        assert await finalize_status(url, rec_dir.name) is None
        assert await jobs_of(url, rec_dir.name) == []

        server = serve(data, tmp_path / "second.log", port=server.port, env=env)
        await server.ready()
        # marked interrupted at the start, its job written with it
        assert await finalize_status(url, rec_dir.name) == "queued"
        assert [j["status"] for j in await jobs_of(url, rec_dir.name)] == ["todo"]
        worker = work(data, tmp_path / "worker.log", worker_env(url))
        rec = await finalized(server.url, rec_dir.name, timeout=180)
        await until_jobs_done(url, rec_dir.name)
    finally:
        server.stop()
        if worker is not None:
            worker.stop()
    assert "stopped while this recording was recording" in rec["status_reason"]
    assert rec["duration_s"] > 2.0
    await finalized_once(url, rec_dir, runs=1)


@pytest.mark.slow
async def test_a_job_cut_short_by_its_server_stopping_is_run_again_by_a_worker(
    tmp_path: Path, postgres: Postgres
) -> None:
    url = postgres.new_database()
    data = tmp_path / "data"
    server = await start_server(data, database_url=url, **QUEUED)  # with its own worker
    try:
        # long enough that its finalization outlasts the 2 s grace on a busy machine too
        # (an 8 s take's could end within it: the job then succeeded, not aborted)
        rec_dir = await recorded_take(server.url, server.settings.recordings_dir, 30.0)
        await until_status(url, rec_dir.name, "finalizing")  # the server's own run
    finally:
        await server.close()  # the running job gets 2 s, then is aborted
    assert [j["status"] for j in await jobs_of(url, rec_dir.name)] == ["aborted"]
    assert await finalize_status(url, rec_dir.name) == "finalizing"

    worker = work(data, tmp_path / "worker.log", worker_env(url))
    try:
        await until_status(url, rec_dir.name, "ready", timeout=180)
        await until_jobs_done(url, rec_dir.name)
    finally:
        worker.stop()
    assert "had no finalize job: queued again" in worker.log()
    jobs = await jobs_of(url, rec_dir.name)
    assert [j["status"] for j in jobs] == ["aborted", "succeeded"], jobs
    check_outputs(rec_dir)


async def _store_with_take(url: str) -> tuple[Store, FinalizeQueue, RecordingRow]:
    store = await Store.open(url, modules=STORE_MODULES)
    queue = FinalizeQueue(url, HEARTBEAT_S, STALLED_S)
    store.job_writer = queue.write_job
    await store.db.execute(
        "INSERT INTO sessions (id, title, language, target_minutes, questions, created_at)"
        " VALUES ('ses_0123456789abcdef', 't', 'en', 40, '[]', 0)"
    )
    await store.db.commit()
    rec = RecordingRow(
        "rec_0123456789abcdef", "ses_0123456789abcdef", 1, "recording", 1.0, None, 0.0, 1.0, None
    )
    await store.insert_recording(rec)
    return store, queue, rec


FAILURES = {
    "the job cannot be written": (
        "procrastinate_jobs",
        "BEFORE INSERT",
        "no job today",
    ),
    "the status change cannot be written": (
        "recording_events",
        "BEFORE INSERT",
        "no event today",
    ),
}


@pytest.mark.parametrize("failure", FAILURES, ids=list(FAILURES))
async def test_the_job_exists_if_and_only_if_the_status_changed(
    postgres: Postgres, failure: str
) -> None:
    table, when, message = FAILURES[failure]
    url = postgres.new_database()
    store, _, rec = await _store_with_take(url)
    stopped = replace(
        rec, status="stopped", stopped_at=2.0, elapsed_before=1.0, run_started_at=None
    )
    try:
        await store.db.executescript(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS"
            f" $$ BEGIN RAISE EXCEPTION '{message}'; END $$;"
            f" CREATE TRIGGER refuse {when} ON {table} FOR EACH ROW EXECUTE FUNCTION refuse();"
        )
        # procrastinate wraps psycopg's error in its own
        with pytest.raises(Exception) as failed:
            await store.update_recording(stopped, "stop", 2.0, 1.0)
        assert message in str(failed.value) + str(failed.value.__cause__)
        after = await store.get_recording(rec.id, EVERY_ORGANISATION)
        assert after is not None
        assert (after.status, after.finalize_status) == ("recording", None)
        assert await jobs_of(url, rec.id) == []

        # the same stop once the failure is gone: both, and one job however often asked
        await store.db.executescript("DROP TRIGGER refuse ON " + table)
        await store.update_recording(stopped, "stop", 2.0, 1.0)
        await store.queue_finalize(rec.id)
        after = await store.get_recording(rec.id, EVERY_ORGANISATION)
        assert after is not None
        assert (after.status, after.finalize_status) == ("stopped", "queued")
        assert [j["status"] for j in await jobs_of(url, rec.id)] == ["todo"]
    finally:
        await store.close()


async def test_one_job_waits_per_recording_and_a_late_capture_queues_one_more_run(
    tmp_path: Path, postgres: Postgres
) -> None:
    url = postgres.new_database()
    store, queue, rec = await _store_with_take(url)
    jobs = FinalizeJobs(store, tmp_path / "recordings", queue=queue, work=False)

    async def states() -> list[str]:
        return [j["status"] for j in await jobs_of(url, rec.id)]

    async def set_job(status: str) -> None:
        await store.db.execute(
            "UPDATE procrastinate_jobs SET status = ? WHERE lock = ? AND status <> 'succeeded'",
            (status, rec.id),
        )
        await store.db.commit()

    try:
        await store.update_recording(
            replace(rec, status="stopped", stopped_at=2.0, run_started_at=None), "stop", 2.0, 1.0
        )
        assert await states() == ["todo"]
        await jobs.enqueue(rec.id)  # the reaper, say, for a take already queued
        await jobs.capture_arrived(rec.id)  # still queued: nothing to do
        assert await states() == ["todo"]

        # being finalized when a capture completes: one more run, after this one
        await set_job("doing")
        await store.set_finalize(rec.id, FinalizeStatus.FINALIZING, 40.0)
        await jobs.capture_arrived(rec.id)
        await jobs.capture_arrived(rec.id)  # refused by the queueing lock, in a savepoint
        assert await states() == ["doing", "todo"]
        after = await store.get_recording(rec.id, EVERY_ORGANISATION)
        assert after is not None and after.finalize_status is FinalizeStatus.QUEUED

        # both runs done: a capture now queues one run again
        await set_job("succeeded")
        await store.set_finalize(rec.id, FinalizeStatus.READY, 100.0)
        await jobs.capture_arrived(rec.id)
        assert await states() == ["succeeded", "succeeded", "todo"]
    finally:
        await jobs.close()
        await store.close()


async def test_a_retried_job_whose_run_had_written_ready_ends_without_a_run(
    tmp_path: Path, postgres: Postgres
) -> None:
    """A worker killed after writing `ready` but before ending its job: the retry finds
    the take ready and does not finalize it again."""
    url = postgres.new_database()
    store, queue, rec = await _store_with_take(url)
    jobs = FinalizeJobs(store, tmp_path / "recordings", queue=queue)
    await store.update_recording(
        replace(rec, status="stopped", stopped_at=2.0, run_started_at=None), "stop", 2.0, 1.0
    )
    await store.set_finalize(rec.id, FinalizeStatus.READY, 100.0)
    ready = await store.get_recording(rec.id, EVERY_ORGANISATION)
    assert ready is not None
    # as a dead worker leaves it: running, with no live worker
    await store.db.execute(
        "UPDATE procrastinate_jobs SET status = 'doing', worker_id = NULL WHERE lock = ?",
        (rec.id,),
    )
    await store.db.commit()
    worker = asyncio.create_task(jobs.serve_queue())
    try:
        await until_jobs_done(url, rec.id)
    finally:
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker
        await jobs.close()
    after = await store.get_recording(rec.id, EVERY_ORGANISATION)
    await store.close()
    assert [(j["status"], j["attempts"]) for j in await jobs_of(url, rec.id)] == [("succeeded", 2)]
    assert after is not None and after.finalize_status is FinalizeStatus.READY
    assert after.finalized_at == ready.finalized_at
    assert not jobs.outcomes  # no run


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
async def test_enqueue_of_an_unknown_recording_is_refused(
    tmp_path: Path, postgres: Postgres, engine: str
) -> None:
    if engine == "sqlite":
        store = await Store.open(tmp_path / "db.sqlite3", modules=STORE_MODULES)
        jobs = FinalizeJobs(store, tmp_path / "recordings")
    else:
        url = postgres.new_database()
        store, queue, _ = await _store_with_take(url)
        jobs = FinalizeJobs(store, tmp_path / "recordings", queue=queue, work=False)
    try:
        for unknown in ("rec_ffffffffffffffff", "", "not an id"):
            with pytest.raises(NotFound) as refused:
                await jobs.enqueue(unknown)
            assert refused.value.code == "unknown_recording"
            assert unknown in refused.value.message or not unknown
        if engine == "postgresql":
            assert await jobs_of(url, "rec_ffffffffffffffff") == []
    finally:
        await jobs.close()
        await store.close()


BAD_WORKERS = {
    "nothing listens there": (
        {
            "STORYROOM_QUEUE": "postgres",
            "STORYROOM_DATABASE_URL": "postgresql://127.0.0.1:{port}/x",
        },
        "cannot reach the database",
    ),
    "not PostgreSQL": (
        {"STORYROOM_QUEUE": "postgres", "STORYROOM_DATABASE_URL": "mysql://127.0.0.1/x"},
        "database_url must be a PostgreSQL URL",
    ),
    "no database": ({"STORYROOM_QUEUE": "postgres"}, "queue postgres needs database_url"),
    "the embedded queue": (
        {"STORYROOM_DATABASE_URL": "postgresql://127.0.0.1:{port}/x"},
        "set STORYROOM_QUEUE=postgres",
    ),
    "an unknown queue": ({"STORYROOM_QUEUE": "redis"}, "queue must be one of inprocess, postgres"),
    "a heartbeat longer than the stall": (
        {
            "STORYROOM_QUEUE": "postgres",
            "STORYROOM_DATABASE_URL": "postgresql://127.0.0.1:{port}/x",
            "STORYROOM_QUEUE_HEARTBEAT_S": "10",
            "STORYROOM_QUEUE_STALLED_S": "15",
        },
        "queue_stalled_s must be at least twice queue_heartbeat_s",
    ),
}


@pytest.mark.parametrize("case", BAD_WORKERS, ids=list(BAD_WORKERS))
def test_a_worker_with_a_bad_database_says_why_and_exits(tmp_path: Path, case: str) -> None:
    env, message = BAD_WORKERS[case]
    port = str(free_port())
    env = {k: v.replace("{port}", port) for k, v in env.items()}
    done = storyroom("worker", "--data-dir", str(tmp_path), env=env)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
