"""`storyroom check`: is this machine set up to run storyroom? Before a first start or
after an upgrade, with the same settings as `storyroom serve`; safe beside a running
server. Each check names itself and says what it found:

- `settings`: every STORYROOM_* variable is a setting (they all parsed, or the command
  would not have got this far), and TLS's certificate and key load;
- `mp3_encoder`, `flac_encoder`, `opus_decoder`: what finalization encodes and decodes
  with;
- `aiortc_internals`, `ice_binding`: the private aiortc/aioice names the media plane
  relies on are still there in the installed versions;
- `data_folder`, `free_space`, `database`: as `/readyz` asks them;
- `turn <url>`: for each configured TURN URL, a real allocation with the configured
  credentials, released at once (only to that address; TLS for `turns:`);
- `shared_storage`: with a bucket configured, the bucket answers with these keys and
  refuses to overwrite an object (the conditional create the shipper relies on), on a
  probe object under `<prefix>storyroom-check/`, deleted after.
"""

from __future__ import annotations

import asyncio
import secrets
import ssl
from collections.abc import Mapping
from typing import Any, Final, Literal
from urllib.parse import urlsplit

import aioice
import aioice.turn
import aiortc
import av

from storyroom import fanout, readiness
from storyroom.app import STORE_MODULES
from storyroom.config import Settings, unknown_variables
from storyroom.errors import InvalidInput
from storyroom.media.aiortc_internals import check_ice_binding, check_internals
from storyroom.media.turn import seat_turn_server
from storyroom.readiness import Check
from storyroom.storage.objects import StorageError, open_s3
from storyroom.store import Store
from storyroom.web.tls import tls_context

TURN_TIMEOUT_S: Final = 5.0


def settings_check(settings: Settings, environ: Mapping[str, str]) -> Check:
    unknown = unknown_variables(environ)
    if unknown:
        return Check("settings", False, "; ".join(unknown))
    try:
        tls_context(settings)
    except InvalidInput as exc:
        return Check("settings", False, exc.message)
    said = sorted(name for name in environ if name.startswith("STORYROOM_"))
    return Check(
        "settings",
        True,
        f"{len(said)} STORYROOM_* variable(s) read; data in {settings.data_dir}"
        + ("; TLS certificate loads" if settings.tls_cert else ""),
    )


def codec_check(name: str, codec: str, mode: Literal["r", "w"], what: str) -> Check:
    try:
        av.codec.Codec(codec, mode)
    except av.codec.codec.UnknownCodecError:
        return Check(name, False, f"PyAV's FFmpeg has no {codec} {what}")
    return Check(name, True, f"{codec} ({what}, PyAV {av.__version__})")


def internals_check(name: str, check: Any, found: str) -> Check:
    try:
        check()
    except RuntimeError as exc:
        return Check(name, False, str(exc))
    return Check(name, True, found)


class _Relayed(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)


async def turn_check(settings: Settings, url: str) -> Check:
    """A TURN allocation on `url` with the credentials a seat would get, then released."""
    name = f"turn {url}"
    server = seat_turn_server(settings, "storyroom-check", "check")
    assert server is not None  # turn_urls is set
    parts = urlsplit(url.replace(":", "://", 1))
    secure = url.startswith("turns:")
    transport = "tcp" if secure or parts.query == "transport=tcp" else "udp"
    address = (parts.hostname or "", parts.port or (5349 if secure else 3478))
    try:
        async with asyncio.timeout(TURN_TIMEOUT_S):
            relay, protocol = await aioice.turn.create_turn_endpoint(
                _Relayed,
                address,
                server.username,
                server.credential,
                lifetime=60,
                ssl=ssl.create_default_context() if secure else None,
                transport=transport,
            )
            relayed = relay.get_extra_info("sockname")
            relay.close()  # releases the allocation
            await protocol.lost
    except TimeoutError:
        return Check(
            name,
            False,
            f"no TURN answer from {address[0]}:{address[1]} within {TURN_TIMEOUT_S:.0f} s",
        )
    except Exception as exc:  # every way an allocation fails is this check's answer
        return Check(name, False, f"allocation refused or failed: {type(exc).__name__}: {exc}")
    return Check(
        name, True, f"allocated relay {relayed[0]}:{relayed[1]} over {transport}, released"
    )


async def database_check(settings: Settings) -> Check:
    """The database opens at this version's schema (brought up to date, as a start
    would) and takes a write."""
    where = (
        readiness.redacted(settings.database_url)
        if settings.database_url
        else str(settings.database_path)
    )
    try:
        store = await Store.open(settings.database, modules=STORE_MODULES)
    except Exception as exc:  # a newer schema, a corrupt or unreadable file: all this check's
        return Check("database", False, f"{where}: {type(exc).__name__}: {exc}")
    await store.close()
    return await asyncio.to_thread(readiness.database, settings.database)


async def shared_storage_check(settings: Settings) -> Check:
    """The bucket takes a conditional create and refuses a second one on the same key."""
    where = f"bucket {settings.s3_bucket!r} at {settings.s3_endpoint or 'AWS S3'}"
    key = f"{settings.s3_prefix}storyroom-check/{secrets.token_hex(8)}"
    try:
        async with open_s3(settings) as objects:
            created = await objects.put_new(key, b"storyroom check\n")
            again = await objects.put_new(key, b"overwritten\n")
            await objects.delete(key)
    except StorageError as exc:
        return Check("shared_storage", False, str(exc))
    if not created or again:
        return Check(
            "shared_storage",
            False,
            f"{where} does not honour If-None-Match: a partitioned node could overwrite "
            "what another shipped; use a store that supports conditional writes",
        )
    return Check("shared_storage", True, f"{where} takes writes and refuses overwrites")


async def run_checks(settings: Settings, environ: Mapping[str, str]) -> list[Check]:
    """Every check, in the order they are printed."""
    checks = [
        settings_check(settings, environ),
        readiness.mp3_encoder_present(),
        codec_check("flac_encoder", "flac", "w", "encoder for the stems"),
        codec_check("opus_decoder", "opus", "r", "decoder for the recorded voices"),
        internals_check(
            "aiortc_internals",
            check_internals,
            f"aiortc {aiortc.__version__} has the receiver and sender internals "
            "storyroom.media.aiortc_internals uses",
        ),
        internals_check(
            "ice_binding",
            check_ice_binding,
            f"aioice {aioice.__version__} binds host candidates the way ICE port ranges need",
        ),
    ]
    data_dir = settings.data_dir
    try:
        data_dir.mkdir(parents=True, exist_ok=True)  # as `storyroom serve` would
    except OSError as exc:
        checks.append(Check("data_folder", False, f"{data_dir} cannot be made: {exc.strerror}"))
    else:
        checks.append(await asyncio.to_thread(readiness.data_folder, data_dir))
        checks.append(readiness.free_space(data_dir, settings.min_free_mb))
        checks.append(await database_check(settings))
    for url in settings.turn_urls:
        checks.append(await turn_check(settings, url))
    if settings.shared_storage:
        checks.append(await shared_storage_check(settings))
    if settings.redis_url:
        checks.append(await fanout.reachable(settings))
    return checks
