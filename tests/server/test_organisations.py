"""Two organisations on one storyroom: neither sees nor changes the other's people and
recordings.

Organisation A is the default one, holding the run's finished recording (with copy
links, an export and a transcript) and a matched, scheduled and confirmed pair of
applicants with their facilitator and invitations. Organisation B ("riverside") has its
own staff member, its own admin and a session of its own. Every route of the app's
router that is not public is tried with A's ids, by B's staff member, by B's admin and
by B's facilitator (their seat token as a bearer token): the facilitator is refused,
B's staff get exactly the answer they get for an id that does not exist (so nothing
says that A's exists), lists and searches show them none of A's names, ids or counts,
and the database and A's files are as they were. A platform admin sees both."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from yarl import URL

from storyroom.__main__ import demo_session
from storyroom.archive.catalogue import bag_source
from storyroom.orgs import EVERY_ORGANISATION
from storyroom.staff.accounts import Role
from support.apply import DALE, FACILITATOR, ROSA
from support.archive import TITLE, Finished, issue_copy_links
from support.routes import PARAMETER, guarded_routes
from support.server import STAFF_TOKEN, RunningServer, SeatClient, call, refused_connect
from support.staff import STAFF_EMAIL, STAFF_PASSWORD, StaffBrowser, cookie_session

PASSWORD = "a long enough password for tests"
B_SLUG = "riverside"
B_NAME = "Riverside Public Radio"
B_STAFF = "staff@riverside.example.org"
B_ADMIN = "admin@riverside.example.org"
PLATFORM = "platform@example.org"
MADE_UP = "x_0000000000000000"

# the one route that ends the caller's own session, whatever its organisation
OWN_SESSION = {("POST", "/api/staff/signout")}


@dataclass
class World:
    server: RunningServer
    a: dict[str, str]
    """A's value of each route parameter (`name` is a file's; the outbox's is `message`)."""
    secrets: list[str]
    """Names, ids and words of A's that B must never read."""
    b_org: int
    b_session: dict[str, Any]
    said: str
    """A word A's transcript says."""
    copy_token: str
    """A participant's copy link of A's recording."""


def fill(path: str, values: dict[str, str]) -> str:
    """`path` with each `{parameter}` from `values` (the outbox's `{name}` is a message)."""

    def one(match: Any) -> str:
        name = match.group(0)[1:-1].split(":")[0]
        if name == "name" and path.startswith("/api/outbox"):
            name = "message"
        return values[name]

    return PARAMETER.sub(one, path)


def made_up(values: dict[str, str]) -> dict[str, str]:
    """The same parameters, with every id one that exists nowhere."""
    keep = {"seat", "turn", "name"}
    return {k: (v if k in keep else MADE_UP) for k, v in values.items()}


async def sign_in(server: RunningServer, email: str, password: str) -> StaffBrowser:
    staff = StaffBrowser(cookie_session(), server.url)
    status, body = await staff.sign_in(email, password)
    assert status == 200, body
    return staff


@pytest.fixture
def archive_settings() -> dict[str, Any]:
    # every refused call below counts against 127.0.0.1: keep the limit out of the way;
    # /metrics is open to its networks only: with none that holds 127.0.0.1, it is
    # guarded here like any staff route
    return {"bad_token_limit": 100_000, "metrics_networks": "10.0.0.0/8"}


@pytest.fixture
async def world(archive: RunningServer, finished: Finished) -> AsyncIterator[World]:
    server, url = archive, archive.url
    async with aiohttp.ClientSession() as http:
        org = await call(
            http,
            "POST",
            f"{url}/api/organisations",
            {"slug": B_SLUG, "name": B_NAME, "contact": "help@riverside.example.org"},
            expect=201,
        )
        for email, role in ((B_STAFF, "staff"), (B_ADMIN, "admin")):
            body = {"email": email, "password": PASSWORD, "role": role, "organisation": B_SLUG}
            added = await call(http, "POST", f"{url}/api/staff/accounts", body, expect=201)
            assert added["org_id"] == org["id"]
        await server.services.accounts.add_user(PLATFORM, PASSWORD, 1, Role.PLATFORM)
        # A's applicants, through A's public form
        for person in (ROSA, DALE):
            await call(http, "POST", f"{url}/api/applications", person, staff=False, expect=201)

    a_admin = await sign_in(server, STAFF_EMAIL, STAFF_PASSWORD)
    b_admin = await sign_in(server, B_ADMIN, PASSWORD)
    try:
        rec_path = f"/api/recordings/{finished.recording_id}"
        facilitator = await a_admin.call("POST", "/api/facilitators", FACILITATOR, expect=201)
        [proposal] = (await a_admin.call("POST", "/api/matching/run"))["proposals"]
        await a_admin.call("POST", f"/api/proposals/{proposal['id']}/accept")
        planned = await a_admin.call("POST", f"/api/proposals/{proposal['id']}/schedule")
        confirmed = await a_admin.call("POST", f"/api/schedules/{planned['id']}/confirm")
        links = await issue_copy_links(a_admin, finished.recording_id)
        export = (await a_admin.call("POST", f"{rec_path}/exports", expect=201))["export"]
        messages = (await a_admin.call("GET", "/api/outbox"))["messages"]
        assert len(messages) == 3  # the confirmed pair's three invitations
        accounts = (await a_admin.call("GET", "/api/staff/accounts"))["accounts"]
        [a_account] = [x for x in accounts if x["email"] == STAFF_EMAIL]
        recording = await a_admin.call("GET", rec_path)
        # the shared recording is of tones, so its transcript says nothing: A's search
        # index is given a turn of words here, as the transcription wing would write it
        said = "zeppelinesque"
        await server.services.store.db.execute(
            "INSERT INTO transcript_words (text, recording_id, turn) VALUES (?, ?, 0)",
            (f"a {said} evening on the porch", finished.recording_id),
        )
        await server.services.store.db.commit()
        people = list(recording["people"].values())
        b_session = await b_admin.call("POST", "/api/sessions", create_payload(), expect=201)
    finally:
        await a_admin.http.close()
        await b_admin.http.close()

    a = {
        "session_id": finished.session_id,
        "recording_id": finished.recording_id,
        "application_id": proposal["people"][0]["id"],
        "proposal_id": proposal["id"],
        "schedule_id": planned["id"],
        "facilitator_id": facilitator["id"],
        "link_id": links[0]["id"],
        "export_id": export["id"],
        "message": messages[0]["name"],
        "name": recording["files"][0]["name"],
        "account_id": str(a_account["id"]),
        "seat": "a",
        "turn": "0",
    }
    secrets = [
        *(v for k, v in a.items() if k not in ("seat", "turn", "name", "account_id")),
        confirmed["session_id"],
        *(p["id"] for p in proposal["people"]),
        "Rosa",
        "Delgado",
        "Kowalski",
        "sam@example.org",
        "rosa@example.org",
        STAFF_EMAIL,
        TITLE,
        *people,
        said,
    ]
    yield World(server, a, secrets, org["id"], b_session, said, links[0]["token"])


def create_payload() -> dict[str, Any]:
    """B's own session, with people of its own (A's recording has the demo's)."""
    return demo_session(
        title="Riverside evening",
        participants=[{"name": "Bea", "bio": "Beekeeper."}, {"name": "Cal", "bio": "Baker."}],
        facilitator={"name": "Dot"},
    )


async def db_state(
    server: RunningServer, b_org: int, b_session: str
) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table but B's own: its session's rows, its audit entries and
    the staff's sign-in sessions (B signing in is B's business), and the nodes' heartbeats. Read through the
    store's engine-neutral interface, so the same check holds on PostgreSQL."""
    db = server.services.store.db
    if db.dialect == "sqlite":
        listed = await db.fetch_all("SELECT name FROM sqlite_master WHERE type = 'table'")
    else:
        listed = await db.fetch_all(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
        )
    state = {}
    for (table,) in listed:
        # a cluster node's heartbeat row moves on its own every 2 s
        if table in ("staff_sessions", "sqlite_sequence", "nodes") or table.startswith(
            "transcript_words_"
        ):
            continue
        if db.dialect == "sqlite":
            columns = {r[1] for r in await db.fetch_all(f"PRAGMA table_info({table})")}
        else:
            found = await db.fetch_all(
                "SELECT column_name FROM information_schema.columns WHERE table_name = ?",
                (table,),
            )
            columns = {r[0] for r in found}
        where, args = "1 = 1", ()
        if "session_id" in columns:
            where, args = "(session_id IS NULL OR session_id != ?)", (b_session,)
        elif table == "audit_log":
            where, args = "(org_id IS NULL OR org_id != ?)", (b_org,)
        rows = await db.fetch_all(f"SELECT * FROM {table} WHERE {where}", args)
        state[table] = sorted((tuple(r) for r in rows), key=repr)
    return state


def files(server: RunningServer) -> set[str]:
    """Every file of the data directory but the database's own."""
    data = server.services.settings.data_dir
    database = server.services.settings.database_path.name
    return {
        str(p.relative_to(data))
        for p in data.rglob("*")
        if p.is_file() and not p.name.startswith(database)
    }


async def answer(
    http: aiohttp.ClientSession, url: str, method: str, headers: dict[str, str]
) -> tuple[int, str | None, bytes]:
    """(status, error code, body) of one call."""
    async with http.request(method, url, json={}, headers=headers, allow_redirects=False) as resp:
        body = await resp.read()
        code = None
        if resp.content_type == "application/json" and body:
            code = (json.loads(body).get("error") or {}).get("code")
        return resp.status, code, body


def leaked(body: bytes, secrets: list[str]) -> list[str]:
    text = body.decode("utf-8", "replace")
    return [s for s in secrets if s and s in text]


@pytest.mark.parametrize("who", ["B's staff", "B's admin"])
async def test_another_organisations_staff_reach_nothing_of_a(world: World, who: str) -> None:
    server = world.server
    routes = [r for r in guarded_routes(server) if r not in OWN_SESSION]
    before, before_files = await db_state(server, world.b_org, world.b_session["id"]), files(server)
    email = B_STAFF if who == "B's staff" else B_ADMIN
    staff = await sign_in(server, email, PASSWORD)
    wrong: list[str] = []
    try:
        for method, path in routes:
            if "{" not in path:
                continue
            headers = staff.headers()
            theirs = await answer(staff.http, server.url + fill(path, world.a), method, headers)
            nobody = await answer(
                staff.http, server.url + fill(path, made_up(world.a)), method, headers
            )
            if path.startswith(("/api/", "/metrics")):
                if theirs[0] < 400:
                    wrong.append(f"{method} {path}: {theirs[0]} for A's")
                if method == "GET" and theirs[0] != 404:
                    wrong.append(f"{method} {path}: {theirs[0]}, not 404")
            # the same answer as for nothing at all: status, code and (pages) the body
            if theirs[:2] != nobody[:2] or (not path.startswith("/api/") and theirs != nobody):
                wrong.append(f"{method} {path}: {theirs[:2]} for A's, {nobody[:2]} for none")
            if found := leaked(theirs[2], world.secrets):
                wrong.append(f"{method} {path}: shows {found}")
        # the routes without an id: lists, searches, creating things in B
        for method, path in routes:
            if "{" in path:
                continue
            status, _code, body = await answer(
                staff.http, server.url + path, method, staff.headers()
            )
            if found := leaked(body, world.secrets):
                wrong.append(f"{method} {path}: {status} shows {found}")
    finally:
        await staff.http.close()
    assert not wrong, f"{who} reached A:\n" + "\n".join(wrong)
    assert await db_state(server, world.b_org, world.b_session["id"]) == before
    assert files(server) == before_files


async def test_a_facilitator_reaches_no_staff_route(world: World) -> None:
    """B's facilitator's seat token opens B's seat, and nothing staff see."""
    server = world.server
    token = world.b_session["seats"]["facilitator"]["token"]
    wrong = []
    async with aiohttp.ClientSession() as http:
        for method, path in guarded_routes(server):
            status, _code, _body = await answer(
                http,
                server.url + fill(path, world.a),
                method,
                {"Authorization": f"Bearer {token}"},
            )
            expected = 401 if path.startswith(("/api/", "/metrics")) else 303
            if status != expected:
                wrong.append(f"{method} {path}: {status}")
    assert not wrong, "\n".join(wrong)


async def test_lists_and_searches_show_b_nothing_of_a(world: World) -> None:
    server = world.server
    staff = await sign_in(server, B_STAFF, PASSWORD)
    platform = await sign_in(server, PLATFORM, PASSWORD)
    try:
        lists = {
            "/api/sessions": "sessions",
            "/api/recordings": "recordings",
            f"/api/recordings?said={world.said}": "recordings",
            "/api/applications": "applications",
            "/api/proposals": "proposals",
            "/api/schedules": "schedules",
            "/api/facilitators": "facilitators",
            "/api/outbox": "messages",
            "/api/audit": "entries",
            "/api/organisations": "organisations",
        }
        for path, key in lists.items():
            theirs = (await staff.call("GET", path))[key]
            everyone = (await platform.call("GET", path))[key]
            if path == "/api/sessions":
                assert [s["id"] for s in theirs] == [world.b_session["id"]]
            elif path == "/api/audit":
                # B's own: its making and its accounts (by the operator's token), its
                # sign-ins; none of A's actors, actions or targets
                assert {e["actor"] for e in theirs} <= {B_STAFF, B_ADMIN, "staff token"}
                assert {e["action"] for e in theirs} <= {
                    "organisation_created",
                    "staff_added",
                    "sign_in",
                }, theirs
            elif path == "/api/organisations":
                assert [o["slug"] for o in theirs] == [B_SLUG]
            else:
                assert theirs == [], (path, theirs)
            # the platform admin sees A's (and, for sessions, B's too)
            assert everyone, path
            assert not leaked(str(theirs).encode(), world.secrets), path
        sessions = {s["id"] for s in (await platform.call("GET", "/api/sessions"))["sessions"]}
        assert {world.a["session_id"], world.b_session["id"]} <= sessions
        found = (await platform.call("GET", f"/api/recordings?said={world.said}"))["recordings"]
        assert [r["id"] for r in found] == [world.a["recording_id"]]
        # a matching run in B pairs nobody and says nothing of A's waiting applicants
        run = await staff.call("POST", "/api/matching/run")
        assert run == {"waiting": 0, "unmatched": 0, "proposals": []}
    finally:
        await staff.http.close()
        await platform.http.close()


async def test_a_platform_admin_reads_a_and_b(world: World) -> None:
    """Every staff read of A's things that B was refused, the platform admin gets."""
    server = world.server
    platform = await sign_in(server, PLATFORM, PASSWORD)
    wrong = []
    try:
        for method, path in guarded_routes(server):
            if method != "GET" or "{" not in path or not path.startswith("/api/"):
                continue
            status, code, _ = await answer(
                platform.http, server.url + fill(path, world.a), method, {}
            )
            if status != 200:
                wrong.append(f"{method} {path}: {status} {code}")
        b = await platform.call("GET", f"/api/sessions/{world.b_session['id']}")
        assert b["title"] == "Riverside evening"
    finally:
        await platform.http.close()
    assert not wrong, "\n".join(wrong)


async def test_socketio_has_no_staff_events_and_refuses_staff(world: World) -> None:
    """The Socket.IO boundary has only seat events (each opens its own seat's room, by
    its token); a staff cookie or bearer token opens nothing there. A staff event added
    later must join this table, and the route table above."""
    server = world.server
    seat_events = {
        "connect",
        "disconnect",
        "*",
        "consent",
        "questions:choose",
        "question:cue",
        "recording:start",
        "recording:pause",
        "recording:resume",
        "recording:stop",
        "marker",
        "note",
        "rtc:offer",
    }
    assert set(server.services.sio.handlers["/"]) == seat_events
    staff = await sign_in(server, B_ADMIN, PASSWORD)
    try:
        cookie = staff.http.cookie_jar.filter_cookies(URL(server.url))["storyroom_staff"].value
        for auth in ({"token": cookie}, {"token": STAFF_TOKEN}):
            error = await refused_connect(server.url, auth)
            assert error["data"]["code"] == "token_invalid", error
    finally:
        await staff.http.close()
    # B's facilitator's events reach B's room only
    before = await db_state(server, world.b_org, world.b_session["id"])
    facilitator = SeatClient(server.url, world.b_session["seats"]["facilitator"]["token"])
    await facilitator.connect()
    try:
        assert facilitator.last["session"]["id"] == world.b_session["id"]
        assert facilitator.last["session"]["organisation"]["name"] == B_NAME
        ack = await facilitator.call("note", {"text": "B's note"})
        assert ack["ok"], ack
        # refused in B's room (nobody has consented there), and nothing anywhere else
        start = await facilitator.call("recording:start")
        assert not start["ok"], start
    finally:
        await facilitator.close()
    assert await db_state(server, world.b_org, world.b_session["id"]) == before


async def test_the_organisations_name_is_on_its_pages_invitations_and_bags(world: World) -> None:
    """B's name and contact line: in its room's snapshot (above), its copy page, its
    invitations and its bag-info; A (the default, unnamed) keeps the settings' words."""
    server = world.server
    async with aiohttp.ClientSession() as http:
        public = await call(http, "GET", f"{server.url}/api/public/organisations/{B_SLUG}")
        assert public == {
            "slug": B_SLUG,
            "name": B_NAME,
            "logo_url": None,
            "contact": "help@riverside.example.org",
        }
        for bad in ("nobody", "UPPER", "a" * 41, "-x", "x--"):
            status = (
                await answer(http, f"{server.url}/api/public/organisations/{bad}", "GET", {})
            )[0]
            assert status == 404, bad
        # the copy page of A's recording: the default organisation, with no name to show
        async with http.get(
            f"{server.url}/api/copy", headers={"Authorization": f"Bearer {world.copy_token}"}
        ) as resp:
            assert resp.status == 200
            copy = await resp.json()
        assert copy["organisation"] == {
            "slug": "default",
            "name": "",
            "logo_url": None,
            "contact": None,
        }
    bag_info = next(server.services.settings.data_dir.glob("exports/*/*/bag-info.txt"))
    assert "Source-Organization: storyroom" in bag_info.read_text("utf-8")
    store = server.services.store
    org = await store.organisation_by_slug(B_SLUG)
    assert org is not None
    source = bag_source(server.services.settings, org)
    assert (source.organization, source.contact_name) == (B_NAME, "help@riverside.example.org")
    # A's invitations end as they always did: the default organisation has no name yet
    for entry in await server.services.outbox.entries(EVERY_ORGANISATION):
        message, _ = await server.services.outbox.read(entry.name, EVERY_ORGANISATION)
        body = message.get_body(("plain",))
        assert body is not None
        assert body.get_content().rstrip().endswith("\nstoryroom")
        assert message["X-Storyroom-Organisation"] == "1"
