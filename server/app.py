"""The one app factory: `create_app(settings)`, used by the CLI, tests and benchmarks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import socketio
from aiohttp import web

from storyroom import readiness
from storyroom.archive import catalogue as archive_module
from storyroom.archive import copies as copies_module
from storyroom.archive.bagit import BagMaker
from storyroom.archive.catalogue import Archive
from storyroom.archive.clips import Clipper
from storyroom.archive.copies import Copies
from storyroom.archive.delivery import CopyDelivery
from storyroom.archive.waveforms import WaveformLevels
from storyroom.capture.service import Captures
from storyroom.config import Settings
from storyroom.finalize import mp3_encoder
from storyroom.finalize import queue as finalize_queue
from storyroom.finalize.jobs import FinalizeJobs
from storyroom.finalize.mp3_encoder import Mp3Encoder
from storyroom.finalize.queue import FinalizeQueue
from storyroom.matching import partner_invites
from storyroom.matching.outbox import Outbox, mailer
from storyroom.matching.store import TABLES as APPLICATION_TABLES
from storyroom.matching.store import ApplicationStore
from storyroom.media.plane import MediaPlane
from storyroom.recording.recorder import Recorder, mark_interrupted_on_disk
from storyroom.room.rooms import CloseReason, Rooms
from storyroom.room.signaling import Signaling
from storyroom.services import SERVICES, Services
from storyroom.staff import accounts as accounts_module
from storyroom.staff import audit as audit_module
from storyroom.staff.accounts import Accounts
from storyroom.staff.audit import Audit
from storyroom.staff.tokens import TOKEN_FILE, load_or_create_staff_token
from storyroom.status import StopReason
from storyroom.storage.objects import open_s3
from storyroom.storage.recordings import RecordingStorage
from storyroom.storage.shipper import Shipper
from storyroom.store import RecordingRow, Store
from storyroom.transcribe import store as transcripts_module
from storyroom.transcribe.jobs import TranscribeJobs
from storyroom.transcribe.store import TranscriptStore
from storyroom.web.edge import add_http_edge

log = logging.getLogger(__name__)

# Every module's own tables, in the order they are brought up to date.
STORE_MODULES = (
    APPLICATION_TABLES,
    accounts_module.TABLES,
    audit_module.TABLES,
    archive_module.TABLES,
    copies_module.TABLES,
    readiness.TABLES,
    transcripts_module.TABLES,
    partner_invites.TABLES,
    finalize_queue.MIGRATIONS,
)


def queue_of(settings: Settings) -> FinalizeQueue | None:
    """The PostgreSQL job queue, when finalization is queued there (`queue` setting)."""
    if settings.queue != "postgres":
        return None
    return FinalizeQueue(
        settings.database_url, settings.queue_heartbeat_s, settings.queue_stalled_s
    )


def create_app(settings: Settings) -> web.Application:
    """Build the aiohttp app with Socket.IO attached; services start in cleanup_ctx."""
    app = web.Application(client_max_size=settings.max_request_bytes)
    sio = socketio.AsyncServer(
        async_mode="aiohttp",
        cors_allowed_origins=[settings.base_url],
        # Above this engine.io drops the connection; below it, protocol.check_size answers
        # oversize events with a "too_large" ack and the connection stays.
        max_http_buffer_size=1024 * 1024,
        logger=False,
        engineio_logger=False,
    )
    sio.attach(app)
    add_http_edge(app, settings)

    async def services(app: web.Application) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        # the shared storage's client, when configured: opened first, closed last
        storage = contextlib.AsyncExitStack()
        shared: RecordingStorage | None = None
        shipper: Shipper | None = None
        if settings.shared_storage:
            objects = await storage.enter_async_context(open_s3(settings))
            shared = RecordingStorage(
                objects, prefix=settings.s3_prefix, url_ttl_s=settings.s3_url_ttl_s
            )
        staff_token, created = load_or_create_staff_token(settings.data_dir, settings.staff_token)
        if created:
            # where it is, never the token itself: logs are kept and shared
            log.warning("generated a staff token, saved in %s", settings.data_dir / TOKEN_FILE)
        store = await Store.open(settings.database, modules=STORE_MODULES)
        jobs_queue = queue_of(settings)
        if jobs_queue is not None:
            # before the first status change: each stop writes its job with it
            store.job_writer = jobs_queue.write_job
        accounts = Accounts(store, settings)
        await accounts.load()
        copies = Copies(store, settings)
        bags = BagMaker()
        interrupted = await store.mark_running_interrupted(now=_now())
        for rec_id in interrupted:
            log.warning(
                "recording %s was running when the server stopped: marked interrupted", rec_id
            )
            mark_interrupted_on_disk(settings.recordings_dir, rec_id)
        _say_mp3_encoder()
        rooms = Rooms(settings, store)
        recorder = Recorder(settings.recordings_dir)
        if shared is not None:
            shipper = Shipper(
                shared.objects,
                settings.recordings_dir,
                recorder.writing,
                prefix=settings.s3_prefix,
                interval=settings.s3_ship_interval_s,
            )
        media = MediaPlane(settings, subscribers=[recorder])
        sender = mailer(settings)
        delivery = CopyDelivery(store, settings, copies, sender)
        transcribe_jobs = TranscribeJobs(
            store,
            TranscriptStore(store.db),
            settings.recordings_dir,
            settings.data_dir / "models",
            rooms.transcript_updated,
        )

        async def recording_updated(rec: RecordingRow) -> None:
            # transcription queued before the room hears `ready`: whoever sees it also
            # sees the job
            await transcribe_jobs.finalize_updated(rec)
            await rooms.recording_updated(rec)
            await delivery.recording_updated(rec)  # a ready recording's copies go out

        finalize_jobs = FinalizeJobs(
            store,
            settings.recordings_dir,
            recording_updated,
            shared,
            settings.capture_wait_s,
            queue=jobs_queue,
            work=settings.queue_worker,
        )
        rooms.follow(recorder)
        rooms.follow(finalize_jobs)  # after the recorder: stems are closed first
        signaling = Signaling(sio, settings, store, rooms, media, accounts.tokens)
        captures = Captures(store, settings.recordings_dir)
        captures.on_progress(signaling.capture_progress)
        rooms.on_change(captures.room_changed)  # after signaling: the snapshot goes first
        # a run that completes after its take was finalized: finalized again with it
        captures.on_run_closed(finalize_jobs.capture_arrived)
        app[SERVICES] = Services(
            settings=settings,
            sio=sio,
            store=store,
            rooms=rooms,
            signaling=signaling,
            staff_token=staff_token,
            media=media,
            recorder=recorder,
            finalize_jobs=finalize_jobs,
            accounts=accounts,
            audit=Audit(store),
            copies=copies,
            archive=Archive(store, settings, copies, transcribe_jobs),
            transcribe_jobs=transcribe_jobs,
            bags=bags,
            applications=ApplicationStore(store.db),
            outbox=Outbox(settings.outbox_dir),
            mailer=sender,
            delivery=delivery,
            clipper=Clipper(),
            waveforms=WaveformLevels(settings.recordings_dir),
            captures=captures,
            shared=shared,
            shipper=shipper,
        )
        recorder.start()
        if shipper is not None:
            for rec_id in interrupted:
                # its last seconds (and the `interrupted` line) are only on this disk
                await shipper.resume(rec_id)
            shipper.start()
        media.start()
        signaling.start()
        await delivery.start()
        await finalize_jobs.start()
        await transcribe_jobs.start()
        try:
            yield
        finally:
            await transcribe_jobs.close()
            await finalize_jobs.close()
            await delivery.close()
            await asyncio.to_thread(bags.close)
            await signaling.close()
            await media.close()
            await recorder.close()
            if shipper is not None:
                await shipper.close()  # after the recorder: its last bytes are on disk
            await rooms.close(CloseReason.SERVER_SHUTDOWN)
            await store.close()
            await storage.aclose()

    async def on_shutdown(app: web.Application) -> None:
        # SIGTERM (or any orderly stop): live takes end cleanly and every seat hears why,
        # then the connections close, all before the services go away.
        services = app[SERVICES]
        await end_live_takes(services)
        await services.signaling.disconnect_all()
        await sio.shutdown()

    app.cleanup_ctx.append(services)
    app.on_shutdown.append(on_shutdown)
    return app


def _say_mp3_encoder() -> None:
    """At start-up: which encoder will make access copies; a warning for the slower
    fallback, an error when there is none (finalization would fail; /readyz says so)."""
    encoder = mp3_encoder.available()
    if encoder is Mp3Encoder.LAME:
        log.info("MP3 encoder: %s", mp3_encoder.describe(encoder))
    elif encoder is Mp3Encoder.PYAV:
        log.warning("MP3 encoder: %s", mp3_encoder.describe(encoder))
    else:
        log.error("%s: recordings cannot be finalized", mp3_encoder.describe(encoder))


async def end_live_takes(services: Services) -> None:
    """Stop every live take for a restart within `shutdown_grace_s`: stems flushed and
    closed, the take `stopped` with reason `server_restart`, its finalization queued
    (and run at the next start if this process ends first), every seat told. Room events
    are refused from here on. A take that could not be stopped in time is found
    `interrupted` at the next start, as after a crash."""
    services.signaling.refuse_events()
    grace = services.settings.shutdown_grace_s
    try:
        async with asyncio.timeout(grace):
            stopped = await services.rooms.end_live_takes(StopReason.SERVER_RESTART)
    except TimeoutError:
        log.error("shutting down: live takes were not all stopped within %.1f s", grace)
        return
    if stopped:
        log.info("shutting down: %d live take(s) stopped cleanly: %s", len(stopped), stopped)


def _now() -> float:
    import time

    return time.time()
