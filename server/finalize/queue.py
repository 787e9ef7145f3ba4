"""Finalization as a job queued in PostgreSQL, for a cluster (`STORYROOM_QUEUE=postgres`):
procrastinate's tables in the store's own database, through its psycopg 3 connector.

- **One transaction.** The job row is written by :meth:`FinalizeQueue.write_job`, which
  the store calls (`Store.job_writer`) inside the transaction that stops or interrupts
  the take, on the store's own connection (procrastinate defers with a given
  connection; a savepoint keeps a refused duplicate from aborting the transaction). The
  job exists if and only if the status changed.
- **One job per recording.** The job's `queueing_lock` is the recording id (at most one
  waiting job), its `lock` too (never two running at once); a job already waiting or
  running is not written again, except when a browser capture arrives during a run
  (:meth:`FinalizeQueue.write_job_again`: the recording is finalized once more after).
- **Workers.** `storyroom worker` (and `storyroom serve` when `STORYROOM_QUEUE_WORKER` is
  on) runs :meth:`FinalizeQueue.work`: procrastinate's worker, one job at a time, each
  run by :meth:`storyroom.finalize.jobs.FinalizeJobs.run` as in embedded mode (a worker
  process per job, rebuilt from shared storage when the folder is not here). Workers
  beat every `queue_heartbeat_s`; every beat, each worker also retries the running jobs
  of workers silent for `queue_stalled_s` (procrastinate offers the query and the retry,
  not the loop), and queues again the recordings left `queued` or `finalizing` with no
  job (a job aborted by a shutdown). A retried job whose recording is already `ready`
  (its worker died between writing `ready` and ending the job) ends without a run.
- **Progress.** A worker writes status, stage and percent to the recording's row, as
  in embedded mode (at each whole percent or new stage); every web node's
  :class:`FinalizeWatch` reads the rows being finalized every
  :data:`WATCH_INTERVAL_S` and tells its `on_update` (rooms, staff pages, transcripts,
  copies) of each change, once. Polling one indexed query twice a second was chosen over
  LISTEN/NOTIFY: no connection of its own to keep alive, and a node that was away
  catches up by reading.
- **Schema.** procrastinate's schema is one of our migrations (:data:`MIGRATIONS`, the
  `procrastinate` line of `module_versions`): applied once, with its version row, in one
  transaction, by whichever process migrates first; idempotent as every migration is.
  procrastinate is pinned to its 3.10 line: a newer schema comes as a new migration here.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import importlib.util
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from storyroom.database import Database, PerDialect, PostgresDatabase
from storyroom.orgs import EVERY_ORGANISATION
from storyroom.status import FinalizeStatus
from storyroom.store import ModuleMigrations, RecordingRow, Store
from storyroom.tasks import cancel_and_wait

if TYPE_CHECKING:
    from procrastinate.app import WorkerOptions
    from procrastinate.job_context import JobContext

log = logging.getLogger(__name__)

QUEUE_NAME = "finalize"
TASK_NAME = "storyroom.finalize"


def _schema() -> str:
    """procrastinate's schema script, read without importing it in an embedded install."""
    if importlib.util.find_spec("procrastinate") is None:
        return "SELECT 1"  # PostgreSQL needs the cluster extra, which brings procrastinate
    return (importlib.resources.files("procrastinate.sql") / "schema.sql").read_text()


MIGRATIONS = ModuleMigrations("procrastinate", (PerDialect(sqlite="", postgresql=_schema()),))
"""procrastinate's tables, on PostgreSQL only (the embedded queue keeps no table)."""

WATCH_INTERVAL_S = 0.5

JobRunner = Callable[[str], Awaitable[object]]
"""Finalizes one recording (`FinalizeJobs.run`)."""


class QueueUnavailable(RuntimeError):
    """The job queue's database cannot be reached, or has no job tables."""


class FinalizeQueue:
    """procrastinate on the store's PostgreSQL. Owner: the app, or `storyroom worker`."""

    def __init__(self, database_url: str, heartbeat_s: float, stalled_s: float) -> None:
        import procrastinate

        self.heartbeat_s = heartbeat_s
        self.stalled_s = stalled_s
        self.app = procrastinate.App(
            connector=procrastinate.PsycopgConnector(
                conninfo=database_url,
                min_size=1,
                max_size=3,
                kwargs={"application_name": "storyroom-queue"},
            )
        )
        self._runner: JobRunner | None = None
        self._store: Store | None = None

        @self.app.task(name=TASK_NAME, queue=QUEUE_NAME, pass_context=True)
        async def finalize(context: JobContext, recording_id: str) -> None:
            if self._runner is None or self._store is None:  # set by `work`
                raise RuntimeError("a finalize job reached a queue that runs none")
            if context.job.attempts > 0 and await self._ready(self._store, recording_id):
                # the run this retries wrote `ready`; its worker died before ending the job
                log.info("recording %s: ready before this retry, not finalized again", recording_id)
                return
            await self._runner(recording_id)

    async def _ready(self, store: Store, recording_id: str) -> bool:
        rec = await store.get_recording(recording_id, EVERY_ORGANISATION)
        return rec is not None and rec.finalize_status is FinalizeStatus.READY

    async def write_job(self, db: Database, recording_id: str) -> None:
        """`Store.job_writer`: in `db`'s open transaction, the recording's job, unless
        one is already waiting or running."""
        if await self._pending(db, recording_id):
            return
        await self._defer(db, recording_id)

    async def write_job_again(self, db: Database, recording_id: str) -> None:
        """A job even while one runs (it waits for the running one: same `lock`)."""
        await self._defer(db, recording_id)

    async def _pending(self, db: Database, recording_id: str) -> bool:
        row = await db.fetch_one(
            "SELECT 1 FROM procrastinate_jobs WHERE lock = ? AND task_name = ?"
            " AND status IN ('todo', 'doing') LIMIT 1",
            (recording_id, TASK_NAME),
        )
        return row is not None

    async def _defer(self, db: Database, recording_id: str) -> None:
        from procrastinate.exceptions import AlreadyEnqueued

        if not isinstance(db, PostgresDatabase):
            raise TypeError("the postgres job queue needs the store on PostgreSQL")
        connection = db.connection
        deferrer = self.app.configure_task(
            TASK_NAME,
            queue=QUEUE_NAME,
            lock=recording_id,
            queueing_lock=recording_id,
            connection=connection,
        )
        try:
            # a savepoint: a refused duplicate leaves the caller's transaction usable
            async with connection.transaction():
                await deferrer.defer_async(recording_id=recording_id)
        except AlreadyEnqueued:
            log.debug("recording %s: its job is already waiting", recording_id)

    async def check(self) -> None:
        """The database answers and holds the job tables; QueueUnavailable saying why."""
        try:
            async with self.app.open_async():
                found = await self.app.job_manager.check_connection_async()
        except Exception as exc:
            raise QueueUnavailable(f"the job queue's database cannot be reached: {exc}") from None
        if not found:
            raise QueueUnavailable("the database has no job tables (procrastinate_jobs)")

    async def work(
        self, store: Store, runner: JobRunner, *, signals: bool, grace_s: float | None
    ) -> None:
        """Run finalize jobs until cancelled (and, with `signals`, until SIGTERM or
        SIGINT). The running job then has `grace_s` to end (None: as long as it takes);
        after that it is aborted, and the next beat of any worker queues its recording
        again (:meth:`requeue_jobless`)."""
        self._runner, self._store = runner, store
        async with self.app.open_async():
            tending = asyncio.create_task(self._tend(store), name="finalize-queue-tend")
            options: WorkerOptions = {
                "queues": [QUEUE_NAME],
                "name": "storyroom-finalize",
                "concurrency": 1,  # a job's worker process takes a core
                "install_signal_handlers": signals,
                "update_heartbeat_interval": self.heartbeat_s,
                "stalled_worker_timeout": self.stalled_s,
                "fetch_job_polling_interval": max(self.heartbeat_s, 1.0),
            }
            if grace_s is not None:
                options["shutdown_graceful_timeout"] = grace_s
            try:
                await self.app.run_worker_async(**options)
            finally:
                await cancel_and_wait(tending)
                self._runner = self._store = None

    async def _tend(self, store: Store) -> None:
        """Every beat: retry the jobs of dead workers, queue recordings left jobless."""
        while True:
            try:
                await self.retry_stalled()
                await self.requeue_jobless(store)
            except Exception:
                # the next beat tries again; a worker must not die of a lost connection
                log.exception("tending the finalize queue failed")
            await asyncio.sleep(self.heartbeat_s)

    async def retry_stalled(self) -> list[int]:
        """Running jobs of workers silent for `stalled_s`, back to waiting; their ids."""
        stalled = await self.app.job_manager.get_stalled_jobs(
            queue=QUEUE_NAME, seconds_since_heartbeat=self.stalled_s
        )
        retried = []
        for job in stalled:
            assert job.id is not None
            try:
                await self.app.job_manager.retry_job(job)
            except Exception as exc:  # another worker retried it first
                log.info("job %s not retried here: %s", job.id, exc)
                continue
            log.warning("job %s (%s) of a dead worker retried", job.id, _args(job.task_kwargs))
            retried.append(job.id)
        return retried

    async def requeue_jobless(self, store: Store) -> list[str]:
        """Recordings `queued` or `finalizing` with no job waiting or running (their job
        was aborted by a shutdown, or they stopped before the queue was configured),
        queued again; their ids."""
        rows = await store.db.fetch_all(
            "SELECT id FROM recordings r WHERE status IN ('stopped', 'interrupted')"
            " AND (finalize_status IS NULL OR finalize_status IN ('queued', 'finalizing'))"
            " AND NOT EXISTS (SELECT 1 FROM procrastinate_jobs j WHERE j.lock = r.id"
            " AND j.task_name = ? AND j.status IN ('todo', 'doing'))",
            (TASK_NAME,),
        )
        for row in rows:
            log.warning("recording %s had no finalize job: queued again", row[0])
            await store.queue_finalize(row[0])
        return [row[0] for row in rows]


Announce = Callable[[RecordingRow], Awaitable[None]]


class FinalizeWatch:
    """Finalization progress, whichever process finalizes, told to this one's
    `on_update` once per change. Owner: `FinalizeJobs` of a server on the queue."""

    def __init__(self, store: Store, on_update: Announce | None) -> None:
        self.store = store
        self.on_update = on_update
        self.told: dict[str, tuple[str | None, int, str | None]] = {}
        """What `on_update` last heard of each recording still being finalized."""
        self.pending = 0
        """Recordings queued or being finalized, at the last read."""
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        self._task = asyncio.create_task(self._watch(), name="finalize-watch")

    async def close(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def announce(self, rec: RecordingRow) -> None:
        """Tell `on_update` of `rec`'s finalization, unless it was told this already."""
        status = rec.finalize_status
        told = (status, int(rec.finalize_percent), rec.finalize_stage)
        if self.told.get(rec.id) == told:
            return
        if status in (FinalizeStatus.QUEUED, FinalizeStatus.FINALIZING):
            self.told[rec.id] = told
        else:  # ended: nothing more to watch
            self.told.pop(rec.id, None)
        if self.on_update is not None:
            await self.on_update(rec)

    async def _watch(self) -> None:
        while True:
            try:
                await self.read()
            except Exception:
                # a lost connection: the next read catches up
                log.exception("reading finalization progress failed")
            await asyncio.sleep(WATCH_INTERVAL_S)

    async def read(self) -> None:
        """One read of the rows being finalized (and of those last seen so)."""
        rows = await self.store.finalize_states(list(self.told))
        self.pending = sum(
            row[1] in (FinalizeStatus.QUEUED, FinalizeStatus.FINALIZING) for row in rows
        )
        for row in rows:
            if self.told.get(row[0]) != (row[1], int(row[2]), row[3]):
                rec = await self.store.get_recording(row[0], EVERY_ORGANISATION)
                if rec is not None:
                    await self.announce(rec)


def _args(task_kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in task_kwargs.items())
