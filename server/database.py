"""One database interface over two engines: SQLite through aiosqlite (the embedded
default, one file under the data folder) and PostgreSQL through psycopg 3 (a cluster's
shared authority, selected by `STORYROOM_DATABASE_URL`).

The store modules write their SQL once, in the dialect both engines share: `?`
placeholders, `INSERT ... ON CONFLICT`, `RETURNING`, integers for booleans. This
module makes the rest line up:

- `?` becomes psycopg's `%s` (and a literal `%` is doubled) outside quoted text;
- a row answers to its column's name and its position on both engines (:class:`Row`);
- a Python bool is stored as 0 or 1, as SQLite stores it, so columns stay INTEGER;
- schema scripts are written for SQLite and :func:`postgres_ddl` rewrites the column
  types that differ (`REAL` is single precision in PostgreSQL: every time would lose
  its seconds); where a dialect needs another statement altogether (full-text search,
  triggers), a migration gives both bodies (:class:`PerDialect`);
- the errors a caller may handle are :data:`IntegrityError` on both engines.

Transactions are the sqlite3 module's on both: the first statement opens one and
`commit()` or `rollback()` ends it. One connection per process, as with SQLite: its
statements run one at a time, in order.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import aiosqlite

if TYPE_CHECKING:
    import psycopg

Dialect = Literal["sqlite", "postgresql"]

try:
    from psycopg import errors as _pg_errors

    IntegrityError: tuple[type[Exception], ...] = (
        sqlite3.IntegrityError,
        _pg_errors.IntegrityError,
    )
except ImportError:  # the embedded install has no PostgreSQL driver
    IntegrityError = (sqlite3.IntegrityError,)


@dataclass(frozen=True, slots=True)
class PerDialect:
    """A schema step whose statements differ between the engines."""

    sqlite: str
    postgresql: str

    def body(self, dialect: Dialect) -> str:
        return self.sqlite if dialect == "sqlite" else self.postgresql


Script = str | PerDialect
"""A migration: SQLite's text (rewritten for PostgreSQL by :func:`postgres_ddl`), or
each engine's own."""


class Row:
    """A result row: `row[0]`, `row["name"]`, `row.keys()` and `dict(row)`, like
    sqlite3.Row, on both engines."""

    __slots__ = ("_index", "_values")

    def __init__(self, index: dict[str, int], values: Sequence[Any]) -> None:
        self._index = index
        self._values = tuple(values)

    def __getitem__(self, key: int | str | slice) -> Any:
        if isinstance(key, str):
            return self._values[self._index[key]]
        return self._values[key]

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def keys(self) -> list[str]:
        return list(self._index)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Row):
            return self._values == other._values
        return self._values == other

    def __hash__(self) -> int:
        return hash(self._values)

    def __repr__(self) -> str:
        return f"Row({dict(zip(self._index, self._values, strict=True))!r})"


class Cursor:
    """What a statement left: its rows, how many rows it changed."""

    def __init__(self, rows: list[Row], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    async def fetchone(self) -> Row | None:
        return self._rows.pop(0) if self._rows else None

    async def fetchall(self) -> list[Row]:
        rows, self._rows = self._rows, []
        return rows


class _Statement:
    """`await db.execute(...)` and `async with db.execute(...) as cursor` alike."""

    def __init__(self, database: Database, sql: str, params: Sequence[Any]) -> None:
        self._database = database
        self._sql = sql
        self._params = params

    def __await__(self) -> Generator[Any, None, Cursor]:
        return self._database._run(self._sql, self._params).__await__()

    async def __aenter__(self) -> Cursor:
        return await self._database._run(self._sql, self._params)

    async def __aexit__(self, *exc: object) -> None:
        return None


class Database:
    """A connection to one of the two engines."""

    dialect: Dialect
    _db: Any
    """The engine's own connection."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> _Statement:
        return _Statement(self, sql, params)

    async def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return await (await self._run(sql, params)).fetchall()

    async def fetch_one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        return await (await self._run(sql, params)).fetchone()

    async def _run(self, sql: str, params: Sequence[Any]) -> Cursor:
        raise NotImplementedError

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        raise NotImplementedError

    async def executescript(self, script: Script) -> None:
        """Run a schema script as it is (no parameters), in its own transaction."""
        raise NotImplementedError

    # aiosqlite's and psycopg's connections end a transaction and close alike
    async def commit(self) -> None:
        await self._db.commit()

    async def rollback(self) -> None:
        await self._db.rollback()

    async def close(self) -> None:
        await self._db.close()


class SqliteDatabase(Database):
    dialect: Dialect = "sqlite"

    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._db = connection

    @classmethod
    async def open(cls, path: Path) -> SqliteDatabase:
        path.parent.mkdir(parents=True, exist_ok=True)
        connection = await aiosqlite.connect(path)
        try:
            for pragma in (
                "journal_mode=WAL",
                "synchronous=FULL",
                "foreign_keys=ON",
                "busy_timeout=5000",
            ):
                await connection.execute(f"PRAGMA {pragma}")
        except BaseException:
            await connection.close()
            raise
        return cls(connection)

    async def _run(self, sql: str, params: Sequence[Any]) -> Cursor:
        async with self._db.execute(sql, params) as cursor:
            names = {d[0]: i for i, d in enumerate(cursor.description or ())}
            rows = [Row(names, values) for values in await cursor.fetchall()]
            return Cursor(rows, cursor.rowcount)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self._db.executemany(sql, rows)

    async def executescript(self, script: Script) -> None:
        body = script.body("sqlite") if isinstance(script, PerDialect) else script
        await self._db.executescript(f"BEGIN; {body}; COMMIT;")


class PostgresDatabase(Database):
    dialect: Dialect = "postgresql"

    def __init__(self, connection: psycopg.AsyncConnection[Any]) -> None:
        self._db = connection

    @property
    def connection(self) -> psycopg.AsyncConnection[Any]:
        """psycopg's connection, for a library that writes in our open transaction (the
        job queue defers a job in the transaction that stops a take)."""
        return self._db

    @classmethod
    async def open(cls, url: str) -> PostgresDatabase:
        import psycopg
        from psycopg.adapt import Dumper
        from psycopg.pq import Format

        class BoolAsInteger(Dumper):
            """True/False as SQLite stores them: the columns stay INTEGER on both."""

            oid = psycopg.adapters.types["int8"].oid
            format = Format.TEXT

            def dump(self, obj: Any) -> bytes:
                return b"1" if obj else b"0"

        connection = await psycopg.AsyncConnection.connect(url)
        connection.adapters.register_dumper(bool, BoolAsInteger)
        return cls(connection)

    async def _run(self, sql: str, params: Sequence[Any]) -> Cursor:
        if sql.strip().upper() == "BEGIN":
            # psycopg opens the transaction itself, before the next statement
            return Cursor([], -1)
        async with self._db.cursor() as cursor:
            if params:
                await cursor.execute(postgres_sql(sql), tuple(params))
            else:
                await cursor.execute(sql.encode())
            rows: list[Row] = []
            if cursor.description is not None:
                names = {d.name: i for i, d in enumerate(cursor.description)}
                rows = [Row(names, values) for values in await cursor.fetchall()]
            return Cursor(rows, cursor.rowcount)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        async with self._db.cursor() as cursor:
            await cursor.executemany(postgres_sql(sql), [tuple(r) for r in rows])

    async def executescript(self, script: Script) -> None:
        body = script.postgresql if isinstance(script, PerDialect) else postgres_ddl(script)
        async with self._db.transaction():
            await self._db.execute(body.encode())


async def open_database(url_or_path: str | Path) -> Database:
    """`postgresql://...` opens PostgreSQL; anything else is a SQLite file's path."""
    text = str(url_or_path)
    if text.startswith(("postgresql://", "postgres://")):
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise RuntimeError(
                "a PostgreSQL database_url needs the cluster extra:"
                " pip install 'storyroom[cluster]'"
            ) from None
        return await PostgresDatabase.open(text)
    return await SqliteDatabase.open(Path(text))


_PLACEHOLDER_SCAN = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|\?|%")


def postgres_sql(sql: str) -> str:
    """`?` placeholders as `%s`, a literal `%` as `%%`; quoted text left as it is."""

    def replace(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "?":
            return "%s"
        if token == "%":
            return "%%"
        return token.replace("%", "%%")

    return _PLACEHOLDER_SCAN.sub(replace, sql)


_DDL_TYPES = (
    (
        re.compile(r"\bINTEGER PRIMARY KEY(?: AUTOINCREMENT)?\b", re.I),
        "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
    ),
    (re.compile(r"\bREAL\b", re.I), "DOUBLE PRECISION"),
    (re.compile(r"\bINTEGER\b", re.I), "BIGINT"),
)


def postgres_ddl(script: str) -> str:
    """A schema script written for SQLite, with PostgreSQL's names for its column types:
    identity keys, double precision for REAL (PostgreSQL's REAL has 6 digits), BIGINT
    for INTEGER (SQLite's integers are 64-bit)."""
    for pattern, replacement in _DDL_TYPES:
        script = pattern.sub(replacement, script)
    return script
