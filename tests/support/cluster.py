"""Two real `storyroom serve` nodes sharing one PostgreSQL database and one real
redis-server (on 127.0.0.1, no persistence), with the staff member of `support.staff`
added from the command line. Every process is stopped by pid."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from support.postgres import Postgres
from support.process import ServerProcess, environment, serve
from support.redis import RedisServer, running_redis
from support.staff import STAFF_EMAIL, STAFF_PASSWORD


@dataclass
class Nodes:
    a: ServerProcess
    b: ServerProcess
    redis: RedisServer


async def add_staff_member(env: Mapping[str, str], data_dir: Path) -> None:
    """The staff member of `support.staff`, added with `storyroom staff add` to the
    database of `env` (STORYROOM_* settings), as an operator adds one."""
    added = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "storyroom", "staff", "add", STAFF_EMAIL],
        input=STAFF_PASSWORD + "\n",
        env=environment({**env, "STORYROOM_DATA_DIR": str(data_dir)}),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert added.returncode == 0, added.stderr


@asynccontextmanager
async def two_nodes(
    folder: Path, postgres: Postgres, settings: Mapping[str, str] | None = None
) -> AsyncIterator[Nodes]:
    """Nodes `a` and `b` (ready: /readyz answers 200) for the life of the context, with
    `settings` (STORYROOM_* variables) besides the database and Redis; their data
    folders and logs in `folder`."""
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    with running_redis() as redis:
        env = {
            **(settings or {}),
            "STORYROOM_DATABASE_URL": postgres.new_database(),
            "STORYROOM_REDIS_URL": redis.url,
        }
        await add_staff_member(env, folder / "cli")
        # one after the other: the first brings the database's schema up to date
        a = serve(folder / "a", folder / "a.log", env=env)
        b: ServerProcess | None = None
        try:
            await a.ready()
            b = serve(folder / "b", folder / "b.log", env=env)
            await b.ready()
            yield Nodes(a, b, redis)
        finally:
            a.stop()
            if b is not None:
                b.stop()
