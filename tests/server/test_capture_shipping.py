"""Browser captures reach shared storage too (SeaweedFS on loopback), so a node's loss
loses none of them: uploaded during the take and after stop, they are shipped as they
arrive (each run's media only as far as its index vouches, the index after it), they
come back byte for byte, and a finalization on a node without the folder finds them."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from storyroom.capture import layout as capture_layout
from storyroom.orgs import EVERY_ORGANISATION
from support.captures import encode_capture
from support.media import RATE, start_recording, stop_recording, tone_room
from support.polling import wait_for
from support.seaweedfs import seaweed_s3
from support.server import RunningServer, create_session, serving

WEBM = "audio/webm;codecs=opus"
CAPTURE_S = 3.0


class Uploader:
    """Seat a's page, as far as the capture endpoints see it."""

    def __init__(self, server: RunningServer, http: aiohttp.ClientSession, created: Any) -> None:
        self.server = server
        self.http = http
        self.token = created["seats"]["a"]["token"]
        self.run = 0

    async def call(self, method: str, url: str, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.token}", **kwargs.pop("headers", {})}
        async with self.http.request(method, url, headers=headers, **kwargs) as resp:
            body = await resp.json()
            assert resp.status in (200, 201), body
            return body

    async def open(self, recording_id: str) -> None:
        self.base = f"{self.server.url}/api/capture/{recording_id}/runs"
        body = await self.call(
            "POST", self.base, json={"mime": WEBM, "rec_start": 0.2, "server_start": 0, "key": "k"}
        )
        self.run = int(body["run"])

    async def put(self, seq: int, data: bytes) -> None:
        await self.call(
            "PUT",
            f"{self.base}/{self.run}/chunks/{seq}",
            data=data,
            headers={
                "Content-Type": "application/octet-stream",
                "X-Chunk-Sha256": hashlib.sha256(data).hexdigest(),
                "X-Capture-Recorded": str(seq + 1),
            },
        )

    async def close(self, chunks: int) -> None:
        await self.call("POST", f"{self.base}/{self.run}/close", json={"chunks": chunks})


def pieces(data: bytes, count: int) -> list[bytes]:
    size = -(-len(data) // count)
    return [data[i : i + size] for i in range(0, len(data), size)]


async def test_captures_are_shipped_rebuilt_and_finalized_from_shared_storage(
    tmp_path: Path,
) -> None:
    tone = 0.3 * np.sin(2 * np.pi * 440.0 * np.arange(int(CAPTURE_S * RATE)) / RATE)
    chunks = pieces(encode_capture(tone.astype(np.float32)), 5)
    async with seaweed_s3(tmp_path / "s3") as s3:
        settings = {k.removeprefix("STORYROOM_").lower(): v for k, v in s3.settings().items()}
        async with (
            serving(tmp_path / "data", **settings, s3_ship_interval_s="0.5") as server,
            aiohttp.ClientSession() as http,
        ):
            shipper = server.services.shipper
            shared = server.services.shared
            assert shipper is not None and shared is not None
            created = await create_session(server.url)
            page = Uploader(server, http, created)
            async with tone_room(server.url, created) as (clients, peers):
                await wait_for(lambda: all(len(p.received) == 2 for p in peers.values()), 30)
                rec_dir = await start_recording(server.settings.recordings_dir, clients)
                rec_id = rec_dir.name
                await page.open(rec_id)
                for seq in range(3):
                    await page.put(seq, chunks[seq])
                await stop_recording(clients, rec_dir)
            # the rest arrives after stop, when the recorder is done with the take
            await wait_for(lambda: rec_id not in server.services.recorder.writing(), 20)
            for seq in range(3, len(chunks)):
                await page.put(seq, chunks[seq])
            await page.close(len(chunks))

            # a crash mid-append leaves a torn tail the index does not vouch for
            (run,) = capture_layout.read_runs(rec_dir, "a")
            run.media.write_bytes(run.media.read_bytes() + b"torn tail")
            index = f"capture/a/{run.run:02d}.jsonl"
            media = f"capture/a/{run.media.name}"
            size = (rec_dir / index).stat().st_size

            def shipped() -> bool:
                return shipper.shipped.get((rec_id, index)) == size

            await wait_for(shipped, timeout=30, what="the capture shipped")
            assert shipper.shipped[(rec_id, media)] == run.bytes  # never the torn tail

            rebuilt = tmp_path / "rebuilt"
            files = {f.name: f for f in await shared.rebuild(rec_id, rebuilt)}
            assert files[media].bytes == run.bytes and files[media].holes == 0
            assert (rebuilt / media).read_bytes() == b"".join(chunks)
            assert (rebuilt / index).read_bytes() == (rec_dir / index).read_bytes()
            again = capture_layout.read_runs(rebuilt, "a")
            assert [(r.chunks, r.bytes, r.closed) for r in again] == [(5, run.bytes, True)]

            # the node's disk is gone: finalized elsewhere from the objects, with its capture
            jobs = server.services.finalize_jobs
            await wait_for(lambda: jobs.current is None and not jobs.queued, 120, what="idle")
            shutil.rmtree(rec_dir)
            done = await jobs.run(rec_id)
            assert done is not None and done.finalize_status == "ready", done
            metadata = json.loads((rec_dir / "metadata.json").read_text())
            (used,) = metadata["stems"]["a"]["capture"]["runs"]
            assert used["file"] == media, used
            assert abs(used["captured_s"] - CAPTURE_S) < 0.1, used
            rec = await server.services.store.get_recording(rec_id, EVERY_ORGANISATION)
            assert rec is not None and rec.finalize_status == "ready"
