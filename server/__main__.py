"""Command line: `storyroom serve`, `storyroom session create`, `storyroom staff add`,
`storyroom recording finalize|export-bag`, `storyroom backup`, `storyroom check`,
`storyroom worker`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import getpass
import logging
import os
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from aiohttp import web

from storyroom import fields
from storyroom.app import STORE_MODULES, create_app, queue_of
from storyroom.archive.bagit import build_bag
from storyroom.archive.catalogue import Archive
from storyroom.archive.copies import Copies
from storyroom.backup import backup
from storyroom.check import run_checks
from storyroom.config import Settings, SettingsError
from storyroom.errors import InvalidInput, StoryroomError
from storyroom.fields import ID_RE
from storyroom.finalize.jobs import FinalizeJobs
from storyroom.logs import configure_logging
from storyroom.orgs import DEFAULT_ORG_ID, DEFAULT_ORG_SLUG, EVERY_ORGANISATION
from storyroom.recording.layout import recording_dir
from storyroom.room.protocol import parse_session_create
from storyroom.room.sessions import CreatedSession, create_session
from storyroom.seats import SessionKind
from storyroom.staff.accounts import Accounts, Role, normalize_email
from storyroom.staff.audit import Audit
from storyroom.staff.tokens import TOKEN_FILE, load_or_create_staff_token
from storyroom.status import FinalizeStatus, RecordingState
from storyroom.storage.objects import StorageError, open_s3
from storyroom.storage.recordings import RecordingStorage
from storyroom.store import ModuleMigrations, RecordingRow, Store
from storyroom.web.request_ids import RequestIdAccessLogger
from storyroom.web.tls import tls_context

if TYPE_CHECKING:
    Commands: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]

log = logging.getLogger(__name__)


def _add_settings_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="data directory (default: media/; env STORYROOM_DATA_DIR)")
    p.add_argument("--public-url", help="base URL of join links (env STORYROOM_PUBLIC_URL)")


def _group(commands: Commands, name: str, help: str) -> Commands:
    """A command made of commands: `storyroom <name> <command>`."""
    group = commands.add_parser(name, help=help)
    return group.add_subparsers(dest=f"{name}_command", required=True)


def _command(commands: Commands, name: str, help: str) -> argparse.ArgumentParser:
    """A command of a group; each runs with the settings, so each takes their flags."""
    command = commands.add_parser(name, help=help)
    _add_settings_flags(command)
    return command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="storyroom", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument("--host", help="listen address (default 127.0.0.1; env STORYROOM_HOST)")
    serve.add_argument("--port", type=int, help="listen port (default 8080; env STORYROOM_PORT)")
    _add_settings_flags(serve)
    serve.add_argument("--tls-cert", help="serve HTTPS with this PEM certificate chain")
    serve.add_argument("--tls-key", help="the certificate's PEM private key")
    serve.add_argument(
        "--demo", action="store_true", help="create a demo session and print its three join links"
    )

    session = _group(sub, "session", "manage sessions")
    create = _command(session, "create", "create a session and print its join links")
    create.add_argument("--title", required=True)
    create.add_argument("--language", choices=fields.LANGUAGES, default="en")
    create.add_argument("--target-minutes", type=int, default=40)
    create.add_argument("--a-name", required=True, help="first participant's first name")
    create.add_argument("--a-bio", default="")
    create.add_argument("--b-name", required=True, help="second participant's first name")
    create.add_argument("--b-bio", default="")
    create.add_argument(
        "--facilitator-name", help="the facilitator's first name (not with --self-guided)"
    )
    create.add_argument(
        "--self-guided",
        action="store_true",
        help="two people who know each other, no facilitator: either of them runs the room",
    )

    recording = _group(sub, "recording", "manage recordings")
    finalize = _command(recording, "finalize", "(re)make a recording's archival files")
    finalize.add_argument("recording_id")
    export = _command(
        recording,
        "export-bag",
        "make a validated BagIt bag of a recording (both participants must agree to archiving)",
    )
    export.add_argument("recording_id")
    export.add_argument(
        "dest", help="the bag directory to create (inside it, if it is an existing directory)"
    )

    _command(
        sub,
        "backup",
        "copy the database (SQLite online backup), recordings, staff token and outbox "
        "to DEST; safe while the server runs",
    ).add_argument("dest", help="a folder that does not exist yet (or is empty)")
    _command(
        sub,
        "check",
        "check settings, encoders, aiortc, the data folder and TURN; non-zero if any fails",
    )

    _command(
        sub,
        "worker",
        "run finalization jobs queued in PostgreSQL (STORYROOM_QUEUE=postgres) until "
        "SIGTERM or SIGINT",
    )

    staff = _group(sub, "staff", "manage staff accounts")
    add = _command(staff, "add", "add a staff member (asks for a password)")
    add.add_argument("email")
    add.add_argument(
        "--organisation",
        default=DEFAULT_ORG_SLUG,
        help="the slug of the organisation they work for (default: the default one)",
    )
    add.add_argument(
        "--role",
        choices=[r.value for r in Role],
        default=Role.ADMIN.value,
        help="staff; admin (adds and removes the organisation's staff and facilitators);"
        " platform (creates organisations, sees across them). Default: admin",
    )
    _command(
        staff, "password", "set a staff member's password (signs them out everywhere)"
    ).add_argument("email")
    return parser


CLI_ACTOR = "command line"


def _read_password() -> str:
    """From the terminal (asked twice), or one line of standard input for scripts."""
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Password again: ") != first:
        raise InvalidInput("the two passwords differ")
    return first


@contextlib.asynccontextmanager
async def _opened_store(
    settings: Settings, modules: Sequence[ModuleMigrations] = ()
) -> AsyncIterator[Store]:
    """The database for one command, closed when it is done."""
    store = await Store.open(settings.database, modules=modules)
    try:
        yield store
    finally:
        await store.close()


async def _staff(settings: Settings, args: argparse.Namespace, password: str) -> int:
    command, email = args.staff_command, args.email
    async with _opened_store(settings, STORE_MODULES) as store:
        accounts = Accounts(store, settings)
        if command == "add":
            org = await store.organisation_by_slug(args.organisation)
            if org is None:
                raise InvalidInput(f"there is no organisation {args.organisation!r}")
            user = await accounts.add_user(email, password, org.id, Role(args.role))
            print(f"Staff member {user.email} added; they sign in at {settings.base_url}/staff")
        else:
            await accounts.set_password(email, password)
            print(f"Password of {normalize_email(email)} changed; their sessions have ended")
        return 0


async def _named_recording(store: Store, recording_id: str) -> RecordingRow | None:
    """The recording a command names; None, once said, when there is no such recording."""
    rec = (
        await store.get_recording(recording_id, EVERY_ORGANISATION)
        if ID_RE.match(recording_id)
        else None
    )
    if rec is None:
        print(f"storyroom: no recording {recording_id!r}", file=sys.stderr)
    return rec


async def _export_bag(settings: Settings, recording_id: str, bag_dir: Path) -> int:
    """Make and validate a bag of one recording here and now (staff can also download
    one from the recording's page)."""
    async with _opened_store(settings, STORE_MODULES) as store:
        rec = await _named_recording(store, recording_id)
        if rec is None:
            return 2
        archive = Archive(store, settings, Copies(store, settings))
        try:
            request = await archive.bag_request(rec, bag_dir)
        except StoryroomError as exc:
            print(f"storyroom: {exc.message}", file=sys.stderr)
            return 2
        result = await asyncio.to_thread(build_bag, request)
        await Audit(store).record(
            CLI_ACTOR,
            "export",
            rec.id,
            {"dest": result.bag_dir, "files": result.files, "payload_oxum": result.payload_oxum},
        )
        print(
            f"Bag of recording {rec.id} made and validated in {result.bag_dir}\n"
            f"  {result.files} files, {result.bytes} bytes, Payload-Oxum {result.payload_oxum}"
        )
        return 0


async def _finalize(settings: Settings, recording_id: str) -> int:
    """Run finalization now, as the server's job queue does: one job, in a worker."""
    async with _opened_store(settings) as store:
        rec = await _named_recording(store, recording_id)
        if rec is None:
            return 2
        if rec.status not in (RecordingState.STOPPED, RecordingState.INTERRUPTED):
            print(f"storyroom: recording {rec.id} is still {rec.status}", file=sys.stderr)
            return 2
        directory = recording_dir(settings.recordings_dir, rec.id)
        async with contextlib.AsyncExitStack() as stack:
            shared = None
            if settings.shared_storage:
                # a folder missing here is rebuilt from the bucket; the results go up
                objects = await stack.enter_async_context(open_s3(settings))
                shared = RecordingStorage(objects, prefix=settings.s3_prefix)
            jobs = FinalizeJobs(store, settings.recordings_dir, shared=shared)
            try:
                done = await jobs.run(rec.id)
            finally:
                await jobs.close()
        result = done.finalized if done is not None else None
        if done is None or done.finalize_status is not FinalizeStatus.READY or result is None:
            reason = done.finalize_reason if done is not None else "the recording is gone"
            print(f"storyroom: finalizing {rec.id} failed: {reason}", file=sys.stderr)
            return 1
        print(f"Recording {rec.id} ready ({result.duration_s:.1f} s) in {directory}")
        for entry in result.files:
            print(f"  {entry.kind:<9} {entry.bytes:>12}  {entry.name}")
        return 0


async def _work(settings: Settings) -> int:
    """`storyroom worker`: finalize the jobs of the PostgreSQL queue, as many workers as
    are started, until SIGTERM or SIGINT (the running job ends first)."""
    queue = queue_of(settings)
    if queue is None:
        print(
            "storyroom: a worker takes jobs from PostgreSQL: set STORYROOM_QUEUE=postgres"
            " and STORYROOM_DATABASE_URL",
            file=sys.stderr,
        )
        return 2
    import psycopg

    async with contextlib.AsyncExitStack() as stack:
        try:
            store = await stack.enter_async_context(_opened_store(settings, STORE_MODULES))
        except psycopg.OperationalError as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            print(f"storyroom: cannot reach the database: {reason}", file=sys.stderr)
            return 2
        store.job_writer = queue.write_job
        shared = None
        if settings.shared_storage:
            # a folder missing here is rebuilt from the bucket; the results go up
            objects = await stack.enter_async_context(open_s3(settings))
            shared = RecordingStorage(objects, prefix=settings.s3_prefix)
        jobs = FinalizeJobs(
            store,
            settings.recordings_dir,
            shared=shared,
            capture_wait_s=settings.capture_wait_s,
            queue=queue,
        )
        print(f"storyroom: worker taking finalize jobs (pid {os.getpid()})", flush=True)
        await jobs.serve_queue(signals=True)
    return 0


async def _reach_shared_storage(settings: Settings) -> None:
    """Before serving: the bucket answers (`StorageError` saying why not), so a bad
    endpoint, bucket or key stops the start instead of the first recording."""
    async with open_s3(settings):
        pass


def _backup(settings: Settings, dest: Path) -> int:
    made = backup(settings, dest)
    print(f"Backup of {settings.data_dir} written to {made.dest} in {made.seconds:.2f} s")
    for part in made.parts:
        print(f"  {part.name:<20} {part.files:>6} file(s) {part.bytes:>14,} bytes  {part.what}")
    print(f"  {'total':<20} {made.files:>6} file(s) {made.bytes:>14,} bytes")
    return 0


def _check(settings: Settings) -> int:
    checks = asyncio.run(run_checks(settings, os.environ))
    width = max(len(check.name) for check in checks)
    for check in checks:
        print(f"{'ok  ' if check.ok else 'FAIL'} {check.name:<{width}}  {check.detail}")
    failing = [check.name for check in checks if not check.ok]
    if failing:
        print(f"storyroom: {len(failing)} check(s) failed: {', '.join(failing)}", file=sys.stderr)
        return 1
    print(f"storyroom: all {len(checks)} checks passed")
    return 0


def print_links(created: CreatedSession, out: object = None) -> None:
    labels = {"a": "Participant A", "b": "Participant B", "facilitator": "Facilitator"}
    kind = " (self-guided)" if created.kind is SessionKind.SELF_GUIDED else ""
    print(f"Session {created.id}{kind}")
    for seat, url in created.urls.items():
        print(f"  {labels[seat]:<14} {url}")
    sys.stdout.flush()


async def _create(settings: Settings, payload: Mapping[str, Any]) -> CreatedSession:
    async with _opened_store(settings) as store:
        return await create_session(store, settings, parse_session_create(payload), DEFAULT_ORG_ID)


DEMO: Mapping[str, Any] = {
    "title": "Demo conversation",
    "language": "en",
    "target_minutes": 40,
    "participants": [
        {"name": "Rosa", "bio": "Nurse from El Paso, grandmother of four, loves gardening."},
        {"name": "Dale", "bio": "Retired machinist from Ohio, coaches youth baseball."},
    ],
    "facilitator": {"name": "Sam"},
}


def demo_session(**changes: Any) -> dict[str, Any]:
    """A `POST /api/sessions` payload: the demo conversation (`serve --demo`) with
    `changes` to its top-level fields; the benchmarks' sessions are made from it too."""
    return {**copy.deepcopy(DEMO), **changes}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.load(
            host=getattr(args, "host", None),
            port=getattr(args, "port", None),
            tls_cert=getattr(args, "tls_cert", None),
            tls_key=getattr(args, "tls_key", None),
            data_dir=args.data_dir,
            public_url=args.public_url,
        )
    except SettingsError as exc:
        print(f"storyroom: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings)
    try:
        if args.command == "backup":
            return _backup(settings, Path(args.dest))
        if args.command == "check":
            return _check(settings)
        if args.command == "staff":
            return asyncio.run(_staff(settings, args, _read_password()))
        if args.command == "worker":
            return asyncio.run(_work(settings))
        if args.command == "recording" and args.recording_command == "export-bag":
            dest = Path(args.dest)
            bag_dir = (dest / args.recording_id if dest.is_dir() else dest).resolve()
            if bag_dir.exists():
                print(f"storyroom: {bag_dir} already exists", file=sys.stderr)
                return 2
            return asyncio.run(_export_bag(settings, args.recording_id, bag_dir))
        if args.command == "recording":
            return asyncio.run(_finalize(settings, args.recording_id))
        if args.command == "session":
            payload: dict[str, object] = {
                "title": args.title,
                "language": args.language,
                "target_minutes": args.target_minutes,
                "participants": [
                    {"name": args.a_name, "bio": args.a_bio},
                    {"name": args.b_name, "bio": args.b_bio},
                ],
            }
            if args.self_guided:
                payload["kind"] = SessionKind.SELF_GUIDED.value
            if args.facilitator_name is not None:
                payload["facilitator"] = {"name": args.facilitator_name}
            print_links(asyncio.run(_create(settings, payload)))
            return 0
        if settings.shared_storage:
            asyncio.run(_reach_shared_storage(settings))
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        _, created = load_or_create_staff_token(settings.data_dir, settings.staff_token)
        if created:
            # where it is, never the token itself: logs and terminals are kept and shared
            log.warning("generated a staff token, saved in %s", settings.data_dir / TOKEN_FILE)
        if args.demo:
            print_links(asyncio.run(_create(settings, demo_session())))
        ssl_context = tls_context(settings)
    except InvalidInput as exc:
        print(f"storyroom: {exc.message}", file=sys.stderr)
        return 2
    except StorageError as exc:
        print(f"storyroom: {exc}", file=sys.stderr)
        return 2
    print(f"storyroom: serving on {settings.base_url} (data in {settings.data_dir})", flush=True)
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        ssl_context=ssl_context,
        print=None,
        access_log_class=RequestIdAccessLogger,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
