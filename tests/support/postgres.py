"""A private PostgreSQL cluster on loopback, started by a test and stopped by it.

Debian's `postgresql` package (tests/run.sh installs it): `initdb` in a temporary folder
and `postgres` as a normal process on 127.0.0.1 and a free port, never the system's
cluster. PostgreSQL refuses to run as root; as root, the cluster runs as the `postgres`
user the package creates, in a folder that user owns. Durability is off (`fsync=off`):
the tests are about what the SQL does, and the cluster is thrown away.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from support.server import free_port

START_TIMEOUT_S = 60.0


def _bin_dir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        raise RuntimeError("PostgreSQL is not installed (tests/run.sh installs it from apt)")
    return found[-1].parent


@dataclass
class Postgres:
    """One running cluster. Owner: the test (or fixture) that called `start_postgres`."""

    port: int
    folder: Path
    log_path: Path
    process: subprocess.Popen[bytes] = field(repr=False)
    databases: int = 0

    @property
    def admin_url(self) -> str:
        return f"postgresql://storyroom@127.0.0.1:{self.port}/postgres"

    def new_database(self, copy_of: str | None = None) -> str:
        """A database of its own, empty or a copy of the one at `copy_of` (a URL of this
        cluster, with nobody connected to it); its URL."""
        import psycopg

        self.databases += 1
        name = f"t{os.getpid()}_{self.databases}"
        template = f' TEMPLATE "{copy_of.rsplit("/", 1)[1]}"' if copy_of else ""
        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"{template}'.encode())
        return f"postgresql://storyroom@127.0.0.1:{self.port}/{name}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        """Idempotent: fast shutdown (SIGINT), then SIGKILL if it lingers; the folder goes."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        shutil.rmtree(self.folder, ignore_errors=True)


@dataclass(frozen=True)
class _Owner:
    """Who runs the cluster: us, or the `postgres` user when we are root."""

    user: int | None = None
    group: int | None = None


def _owner(folder: Path) -> _Owner:
    """The `postgres` user when we are root (the folder is then theirs), else us."""
    if os.geteuid() != 0:
        return _Owner()
    account = pwd.getpwnam("postgres")
    for path in (folder, *folder.rglob("*")):
        os.chown(path, account.pw_uid, account.pw_gid)
    return _Owner(account.pw_uid, account.pw_gid)


def start_postgres() -> Postgres:
    bin_dir = _bin_dir()
    folder = Path(tempfile.mkdtemp(prefix="storyroom-pg-"))
    folder.chmod(0o755)
    data, sockets = folder / "data", folder / "sockets"
    sockets.mkdir()
    owner = _owner(folder)
    env = {"PATH": os.environ.get("PATH", ""), "LANG": "C.UTF-8", "HOME": str(folder)}
    subprocess.run(
        [
            str(bin_dir / "initdb"),
            "-D",
            str(data),
            "-U",
            "storyroom",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        ],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
        user=owner.user,
        group=owner.group,
    )
    port = free_port()
    log_path = folder / "postgres.log"
    with open(log_path, "wb") as log:  # the process keeps its own copy of the file
        process = subprocess.Popen(
            [
                str(bin_dir / "postgres"),
                "-D",
                str(data),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-k",
                str(sockets),
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "max_connections=200",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            user=owner.user,
            group=owner.group,
        )
    cluster = Postgres(port, folder, log_path, process)
    try:
        _wait_ready(cluster)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _wait_ready(cluster: Postgres) -> None:
    import psycopg

    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if cluster.process.poll() is not None:
            raise RuntimeError(f"postgres exited:\n{cluster.log()[-3000:]}")
        try:
            with psycopg.connect(cluster.admin_url, connect_timeout=2):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"postgres did not start:\n{cluster.log()[-3000:]}") from None
            time.sleep(0.1)


@contextlib.contextmanager
def running_postgres() -> Iterator[Postgres]:
    cluster = start_postgres()
    try:
        yield cluster
    finally:
        cluster.stop()
