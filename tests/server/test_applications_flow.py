"""From applications to a session over HTTP: match, accept, schedule, confirm; three
invitations land in the outbox as well-formed messages with valid .ics files, their
links really connect to the room, nobody but staff sees contact details, and every
staff action is in the audit log under the person who signed in."""

from __future__ import annotations

import email.policy
import json
import re
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from support.apply import (
    DALE,
    FACILITATOR,
    ROSA,
    application,
    calendar_of,
    ics_properties,
)
from support.server import (
    AUTH,
    RunningServer,
    SeatClient,
    call,
    free_port,
    refused_connect,
    serving,
)
from support.staff import STAFF_EMAIL, add_staff, signed_in

CENTRE = application(first_name="Max", last_name="Moreno", email="max@example.org", placement=4)
SECRETS = [
    "Delgado",
    "Kowalski",
    "rosa@example.org",
    "dale@example.org",
    "555 01",
    "sam@example.org",
]


def parse(data: bytes) -> EmailMessage:
    message = BytesParser(policy=email.policy.default).parsebytes(data)
    assert isinstance(message, EmailMessage)
    return message


async def raw(http: aiohttp.ClientSession, url: str) -> bytes:
    async with http.get(url, headers=AUTH) as resp:
        assert resp.status == 200
        assert resp.content_type == "message/rfc822"
        return await resp.read()


async def submit(
    http: aiohttp.ClientSession, server: RunningServer, *people: dict[str, Any]
) -> dict[str, str]:
    for person in people:
        await call(http, "POST", f"{server.url}/api/applications", person, staff=False, expect=201)
    rows = (await call(http, "GET", f"{server.url}/api/applications"))["applications"]
    return {row["first_name"]: row["id"] for row in rows}


async def test_match_schedule_confirm_and_join(server: RunningServer) -> None:
    url = server.url
    async with aiohttp.ClientSession() as http:
        ids = await submit(http, server, ROSA, DALE, CENTRE)
        await call(http, "POST", f"{url}/api/facilitators", FACILITATOR, expect=201)

        run = await call(http, "POST", f"{url}/api/matching/run")
        assert run["waiting"] == 3 and run["unmatched"] == 1
        [proposal] = run["proposals"]
        assert {p["first_name"] for p in proposal["people"]} == {"Rosa", "Dale"}
        ex = proposal["explanation"]
        assert ex["region"] == "nearby" and ex["languages"] == ["en"]
        assert ex["placement_gap"] == 4 and ex["slot"]["minutes"] >= 90
        assert all(p["slot"]["time_zone"] == "America/Chicago" for p in proposal["people"])
        assert not any(secret in json.dumps(proposal) for secret in SECRETS)
        statuses = {
            a["first_name"]: a["status"]
            for a in (await call(http, "GET", f"{url}/api/applications"))["applications"]
        }
        assert statuses == {"Rosa": "proposed", "Dale": "proposed", "Max": "new"}

        # nothing is planned before staff accept
        await call(http, "POST", f"{url}/api/proposals/{proposal['id']}/schedule", expect=409)
        accepted = await call(http, "POST", f"{url}/api/proposals/{proposal['id']}/accept")
        assert accepted["status"] == "accepted"
        await call(http, "POST", f"{url}/api/proposals/{proposal['id']}/accept", expect=409)

        planned = await call(http, "POST", f"{url}/api/proposals/{proposal['id']}/schedule")
        assert planned["status"] == "planned" and planned["facilitator"]["first_name"] == "Sam"
        assert planned["language"] == "en"  # the only language both speak
        starts = datetime.fromisoformat(planned["starts_at"])
        assert starts >= datetime.now(UTC) + timedelta(hours=23, minutes=59)
        local = starts.astimezone(ZoneInfo("America/Chicago"))
        # Rosa's and Dale's shared time is Tuesday 18:00-21:00 in Chicago
        assert (local.weekday(), local.hour, local.minute) == (1, 18, 0)

        confirmed = await call(http, "POST", f"{url}/api/schedules/{planned['id']}/confirm")
        assert confirmed["status"] == "confirmed"
        session_id = confirmed["session_id"]
        assert [i["role"] for i in confirmed["invitations"]] == ["a", "b", "facilitator"]
        assert {i["via"] for i in confirmed["invitations"]} == {"outbox"}
        await call(http, "POST", f"{url}/api/schedules/{planned['id']}/confirm", expect=409)

        # the session holds first names and bios only
        session = await call(http, "GET", f"{url}/api/sessions/{session_id}")
        seats = session["seats"]
        assert {seats[s]["name"] for s in ("a", "b", "facilitator")} == {"Dale", "Rosa", "Sam"}
        assert {seats["a"]["bio"], seats["b"]["bio"]} == {ROSA["bio"], DALE["bio"]}
        assert not any(secret in json.dumps(session) for secret in SECRETS)
        # where each participant's copy will go: their application's address and language
        contacts = (await call(http, "GET", f"{url}/api/sessions/{session_id}/contacts"))[
            "contacts"
        ]
        found = {
            seats[s]["name"]: (contacts[s]["email"], contacts[s]["language"], contacts[s]["source"])
            for s in ("a", "b")
        }
        assert found == {
            "Rosa": ("rosa@example.org", "es", "application"),
            "Dale": ("dale@example.org", "en", "application"),
        }
        async with server.services.store.db.execute("SELECT * FROM seats") as cur:
            stored = json.dumps([tuple(row) for row in await cur.fetchall()])
        assert not any(secret in stored for secret in SECRETS)

        # three well-formed messages in the outbox, each in its reader's language
        listed = (await call(http, "GET", f"{url}/api/outbox"))["messages"]
        assert len(listed) == 3
        messages = {}
        for entry in listed:
            message = parse(await raw(http, f"{url}/api/outbox/{entry['name']}/raw"))
            messages[message["To"].addresses[0].addr_spec] = message
            shown = await call(http, "GET", f"{url}/api/outbox/{entry['name']}")
            assert shown["subject"] == message["Subject"]
        assert set(messages) == {"rosa@example.org", "dale@example.org", "sam@example.org"}
        rosa_text = messages["rosa@example.org"].get_body(("plain",)).get_content()
        assert rosa_text.startswith("Hola, Rosa:") and "a las 18:00 (C" in rosa_text
        dale_text = messages["dale@example.org"].get_body(("plain",)).get_content()
        assert dale_text.startswith("Hello Dale,") and "at 6:00 PM (C" in dale_text
        sam_text = messages["sam@example.org"].get_body(("plain",)).get_content()
        assert "at 7:00 PM (E" in sam_text  # the facilitator's own zone
        for address, message in messages.items():
            text = message.get_body(("plain",)).get_content()
            others = [s for s in SECRETS if s not in address]
            assert not any(secret in text for secret in others if "@" in secret), address
            assert "Delgado" not in text and "Kowalski" not in text
            [ics_part] = list(message.iter_attachments())
            assert ics_part.get_content_type() == "text/calendar"
            payload = ics_part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            props = ics_properties(payload)  # CRLF, folding, 75 octets checked inside
            assert props["DTSTART"] == starts.strftime("%Y%m%dT%H%M%SZ")
            assert props["UID"].startswith(planned["id"])
            assert "DTSTAMP" in props and props["SUMMARY"]
            link = re.search(r"http://\S+#token=[\w-]+", text)
            assert link is not None
            assert link.group(0) in props["DESCRIPTION"]

        # each link connects to its own seat of the new session
        clients = []
        try:
            for address, seat in (
                ("rosa@example.org", None),
                ("dale@example.org", None),
                ("sam@example.org", "facilitator"),
            ):
                text = messages[address].get_body(("plain",)).get_content()
                link = re.search(r"(http://\S+/(room|console)/(ses_\w+))#token=([\w-]+)", text)
                assert link is not None and link.group(3) == session_id
                client = SeatClient(url, link.group(4))
                await client.connect()
                clients.append(client)
                snapshot = client.last
                assert snapshot["session"]["id"] == session_id
                assert not any(secret in json.dumps(snapshot) for secret in SECRETS)
                if seat:
                    assert link.group(2) == "console"
            final = clients[-1].last["seats"]
            assert all(final[s]["connected"] for s in ("a", "b", "facilitator"))
        finally:
            for client in clients:
                await client.close()

        statuses = {
            a["first_name"]: a["status"]
            for a in (await call(http, "GET", f"{url}/api/applications"))["applications"]
        }
        assert statuses == {"Rosa": "scheduled", "Dale": "scheduled", "Max": "new"}
        # a past pair is not proposed again
        assert (await call(http, "POST", f"{url}/api/matching/run"))["proposals"] == []
        assert ids["Rosa"] and ids["Dale"]


async def test_rejected_pairs_are_never_proposed_again(server: RunningServer) -> None:
    url = server.url
    async with aiohttp.ClientSession() as http:
        await submit(http, server, ROSA, DALE)
        [proposal] = (await call(http, "POST", f"{url}/api/matching/run"))["proposals"]
        rejected = await call(http, "POST", f"{url}/api/proposals/{proposal['id']}/reject")
        assert rejected["status"] == "rejected"
        statuses = {
            a["status"]
            for a in (await call(http, "GET", f"{url}/api/applications"))["applications"]
        }
        assert statuses == {"new"}
        assert (await call(http, "POST", f"{url}/api/matching/run"))["proposals"] == []
        # a newcomer on the other side is proposed to Rosa instead
        await submit(
            http,
            server,
            application(first_name="Joan", last_name="Li", email="joan@example.org", placement=7),
        )
        [again] = (await call(http, "POST", f"{url}/api/matching/run"))["proposals"]
        assert {p["first_name"] for p in again["people"]} == {"Rosa", "Joan"}
        listed = (await call(http, "GET", f"{url}/api/proposals?status=rejected"))["proposals"]
        assert [p["id"] for p in listed] == [proposal["id"]]
        await call(http, "GET", f"{url}/api/proposals?status=maybe", expect=400)


async def test_withdrawing_cancels_open_proposals(server: RunningServer) -> None:
    url = server.url
    async with aiohttp.ClientSession() as http:
        ids = await submit(http, server, ROSA, DALE)
        [proposal] = (await call(http, "POST", f"{url}/api/matching/run"))["proposals"]
        await call(http, "POST", f"{url}/api/applications/{ids['Rosa']}/withdraw")
        [cancelled] = (await call(http, "GET", f"{url}/api/proposals?status=cancelled"))[
            "proposals"
        ]
        assert cancelled["id"] == proposal["id"]
        dale = await call(http, "GET", f"{url}/api/applications/{ids['Dale']}")
        assert dale["status"] == "new"
        assert dale["proposals"][0]["partner"] == "Rosa"
        await call(http, "POST", f"{url}/api/proposals/{proposal['id']}/accept", expect=409)
        # deleting takes the application and its proposals with it
        async with http.delete(f"{url}/api/applications/{ids['Rosa']}", headers=AUTH) as resp:
            assert resp.status == 204
        assert (await call(http, "GET", f"{url}/api/proposals"))["proposals"] == []


SCHEDULE_CASES: list[tuple[str, dict[str, Any] | None, int, str]] = [
    ("no facilitator speaks Spanish", None, 409, "no_facilitator"),
    ("unknown facilitator", {"facilitator_id": "fac_0000000000000000"}, 404, "not_found"),
    ("bad facilitator id", {"facilitator_id": "../x"}, 400, "invalid_fields"),
    ("naive time", {"starts_at": "2030-01-01T18:00:00"}, 400, "invalid_fields"),
    ("not a time", {"starts_at": "tomorrow"}, 400, "invalid_fields"),
    ("off the quarter hour", {"starts_at": "2030-01-01T18:05:00+00:00"}, 400, "invalid_fields"),
    ("unknown field", {"when": "now"}, 400, "invalid_fields"),
]


@pytest.mark.parametrize(
    ("body", "status", "code"), [c[1:] for c in SCHEDULE_CASES], ids=[c[0] for c in SCHEDULE_CASES]
)
async def test_scheduling_refusals(
    server: RunningServer, body: dict[str, Any] | None, status: int, code: str
) -> None:
    url = server.url
    spanish = {"speaks": ["es"], "language": "es"}
    async with aiohttp.ClientSession() as http:
        await submit(
            http,
            server,
            application(**spanish),
            application(
                **spanish, first_name="Ana", last_name="Ruiz", email="ana@example.org", placement=6
            ),
        )
        await call(
            http, "POST", f"{url}/api/facilitators", {**FACILITATOR, "speaks": ["en"]}, expect=201
        )
        [proposal] = (await call(http, "POST", f"{url}/api/matching/run"))["proposals"]
        await call(http, "POST", f"{url}/api/proposals/{proposal['id']}/accept")
        answer = await call(
            http, "POST", f"{url}/api/proposals/{proposal['id']}/schedule", body, expect=status
        )
        assert answer["error"]["code"] == code


async def test_staff_can_choose_the_time_and_facilitator(server: RunningServer) -> None:
    url = server.url
    async with aiohttp.ClientSession() as http:
        await submit(http, server, ROSA, DALE)
        sam = await call(http, "POST", f"{url}/api/facilitators", FACILITATOR, expect=201)
        kim = await call(
            http,
            "POST",
            f"{url}/api/facilitators",
            {**FACILITATOR, "first_name": "Kim", "email": "kim@example.org"},
            expect=201,
        )
        [proposal] = (await call(http, "POST", f"{url}/api/matching/run"))["proposals"]
        await call(http, "POST", f"{url}/api/proposals/{proposal['id']}/accept")
        first = await call(
            http,
            "POST",
            f"{url}/api/proposals/{proposal['id']}/schedule",
            {"facilitator_id": kim["id"]},
        )
        assert first["facilitator"]["id"] == kim["id"]
        later = datetime.fromisoformat(first["starts_at"]) + timedelta(days=7, minutes=60)
        second = await call(
            http,
            "POST",
            f"{url}/api/proposals/{proposal['id']}/schedule",
            {"facilitator_id": sam["id"], "starts_at": later.isoformat()},
        )
        assert second["id"] == first["id"]  # re-planned, not a second plan
        assert second["facilitator"]["id"] == sam["id"]
        assert datetime.fromisoformat(second["starts_at"]) == later
        # outside their shared time: refused
        await call(
            http,
            "POST",
            f"{url}/api/proposals/{proposal['id']}/schedule",
            {"starts_at": (later + timedelta(hours=5)).isoformat()},
            expect=409,
        )
        deactivated = await call(http, "POST", f"{url}/api/facilitators/{sam['id']}/deactivate")
        assert deactivated["active"] is False
        await call(
            http,
            "POST",
            f"{url}/api/proposals/{proposal['id']}/schedule",
            {"facilitator_id": sam["id"]},
            expect=404,
        )


async def confirmed_pair(http: aiohttp.ClientSession, server: RunningServer) -> dict[str, Any]:
    """Rosa and Dale matched, accepted, scheduled with Sam and confirmed."""
    url = server.url
    await submit(http, server, ROSA, DALE)
    await call(http, "POST", f"{url}/api/facilitators", FACILITATOR, expect=201)
    [proposal] = (await call(http, "POST", f"{url}/api/matching/run"))["proposals"]
    await call(http, "POST", f"{url}/api/proposals/{proposal['id']}/accept")
    planned = await call(http, "POST", f"{url}/api/proposals/{proposal['id']}/schedule")
    confirmed: dict[str, Any] = await call(
        http, "POST", f"{url}/api/schedules/{planned['id']}/confirm"
    )
    return confirmed


async def outbox_by_notice(
    http: aiohttp.ClientSession, url: str
) -> dict[tuple[str, int], EmailMessage]:
    """Every message in the outbox by (recipient, calendar SEQUENCE)."""
    out = {}
    for entry in (await call(http, "GET", f"{url}/api/outbox"))["messages"]:
        message = parse(await raw(http, f"{url}/api/outbox/{entry['name']}/raw"))
        [event] = calendar_of(message).events
        out[(message["To"].addresses[0].addr_spec, int(event["SEQUENCE"]))] = message
    return out


def seat_token(message: EmailMessage) -> str:
    link = re.search(r"#token=([\w-]+)", message.get_body(("plain",)).get_content())
    assert link is not None
    return link.group(1)


async def test_moved_and_cancelled_sessions_replace_the_calendar_entries(
    server: RunningServer,
) -> None:
    url = server.url
    people = ("rosa@example.org", "dale@example.org", "sam@example.org")
    async with aiohttp.ClientSession() as http:
        confirmed = await confirmed_pair(http, server)
        schedule_id, session_id = confirmed["id"], confirmed["session_id"]
        first = datetime.fromisoformat(confirmed["starts_at"])
        sent = await outbox_by_notice(http, url)
        assert set(sent) == {(who, 0) for who in people}
        uids = {}
        for who in people:
            calendar = calendar_of(sent[(who, 0)])
            [event] = calendar.events
            assert str(calendar["METHOD"]) == "REQUEST" and str(event["STATUS"]) == "CONFIRMED"
            assert event.decoded("DTSTART") == first
            assert str(event["ATTENDEE"]) == f"mailto:{who}"
            uids[who] = str(event["UID"])
        assert len(set(uids.values())) == 3

        # moved a week later: same UIDs, SEQUENCE 1, the new time, new links
        later = first + timedelta(days=7)
        moved = await call(
            http,
            "POST",
            f"{url}/api/schedules/{schedule_id}/reschedule",
            {"starts_at": later.isoformat()},
        )
        assert moved["status"] == "confirmed" and moved["sequence"] == 1
        assert datetime.fromisoformat(moved["starts_at"]) == later
        sent = await outbox_by_notice(http, url)
        assert set(sent) == {(who, n) for who in people for n in (0, 1)}
        for who in people:
            update = sent[(who, 1)]
            calendar = calendar_of(update)
            [event] = calendar.events
            assert str(calendar["METHOD"]) == "REQUEST" and str(event["STATUS"]) == "CONFIRMED"
            assert str(event["UID"]) == uids[who]
            assert event.decoded("DTSTART") == later
            assert seat_token(update) != seat_token(sent[(who, 0)])
            assert seat_token(update) in str(event["DESCRIPTION"])
        rosa_update = sent[("rosa@example.org", 1)]
        assert rosa_update["Subject"].startswith("Nueva hora: ")
        assert "ha cambiado" in rosa_update.get_body(("plain",)).get_content()
        session = await call(http, "GET", f"{url}/api/sessions/{session_id}")
        assert session["starts_at"] == later.timestamp()
        assert session["seats"]["a"]["token_expires_at"] == later.timestamp() + 48 * 3600
        # the first links open nothing now; the new ones open their seats
        old = await refused_connect(url, {"token": seat_token(sent[("sam@example.org", 0)])})
        assert old["data"]["code"] == "token_invalid"
        client = SeatClient(url, seat_token(sent[("sam@example.org", 1)]))
        await client.connect()
        assert client.last["you"] == "facilitator"
        await client.close()

        # cancelled: same UIDs, SEQUENCE 2, METHOD:CANCEL, and the links stop working
        cancelled = await call(http, "POST", f"{url}/api/schedules/{schedule_id}/cancel")
        assert cancelled["status"] == "cancelled" and cancelled["sequence"] == 2
        sent = await outbox_by_notice(http, url)
        assert len(sent) == 9
        for who in people:
            cancellation = sent[(who, 2)]
            calendar = calendar_of(cancellation)
            [event] = calendar.events
            assert str(calendar["METHOD"]) == "CANCEL" and str(event["STATUS"]) == "CANCELLED"
            assert str(event["UID"]) == uids[who]
            assert "#token=" not in cancellation.as_string()
        assert sent[("dale@example.org", 2)]["Subject"].startswith("Cancelled: ")
        gone = await refused_connect(url, {"token": seat_token(sent[("rosa@example.org", 1)])})
        assert gone["data"]["code"] == "token_expired"
        # a cancelled session is neither moved nor cancelled again
        for action, body in (("reschedule", {"starts_at": later.isoformat()}), ("cancel", None)):
            refused = await call(
                http, "POST", f"{url}/api/schedules/{schedule_id}/{action}", body, expect=409
            )
            assert refused["error"]["code"] == "invalid_state"
        actions = [e["action"] for e in (await call(http, "GET", f"{url}/api/audit"))["entries"]]
        assert "schedule_moved" in actions and "schedule_cancelled" in actions


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({}, 400, "invalid_fields"),
        ({"starts_at": "next Tuesday"}, 400, "invalid_fields"),
        ({"starts_at": "2030-01-01T18:00:00"}, 400, "invalid_fields"),  # no offset
        ({"starts_at": "+7 days 00:07"}, 400, "invalid_fields"),  # off the slots
        ({"starts_at": "+7 days", "facilitator_id": "fac_x"}, 400, "invalid_fields"),
        (["+7 days"], 400, "invalid_type"),
        ({"starts_at": "+7 days 05:00"}, 409, "no_time"),  # not free then
    ],
)
async def test_reschedule_refuses_bad_input(
    server: RunningServer, body: Any, status: int, code: str
) -> None:
    url = server.url
    async with aiohttp.ClientSession() as http:
        confirmed = await confirmed_pair(http, server)
        first = datetime.fromisoformat(confirmed["starts_at"])

        def fill(value: Any) -> Any:
            if isinstance(value, str) and value.startswith("+7 days"):
                shift = value.removeprefix("+7 days").strip()
                h, m = (int(x) for x in shift.split(":")) if shift else (0, 0)
                return (first + timedelta(days=7, hours=h, minutes=m)).isoformat()
            return value

        payload = (
            {k: fill(v) for k, v in body.items()}
            if isinstance(body, dict)
            else [fill(v) for v in body]
        )
        answer = await call(
            http,
            "POST",
            f"{url}/api/schedules/{confirmed['id']}/reschedule",
            payload,
            expect=status,
        )
        assert answer["error"]["code"] == code and answer["error"]["message"]
        # nothing moved, nothing sent
        assert len((await call(http, "GET", f"{url}/api/outbox"))["messages"]) == 3


async def test_only_confirmed_sessions_move_or_cancel(server: RunningServer) -> None:
    url = server.url
    async with aiohttp.ClientSession() as http:
        await submit(http, server, ROSA, DALE)
        await call(http, "POST", f"{url}/api/facilitators", FACILITATOR, expect=201)
        [proposal] = (await call(http, "POST", f"{url}/api/matching/run"))["proposals"]
        await call(http, "POST", f"{url}/api/proposals/{proposal['id']}/accept")
        planned = await call(http, "POST", f"{url}/api/proposals/{proposal['id']}/schedule")
        later = (datetime.fromisoformat(planned["starts_at"]) + timedelta(days=7)).isoformat()
        for schedule_id, action, body, status, code in (
            (planned["id"], "reschedule", {"starts_at": later}, 409, "invalid_state"),
            (planned["id"], "cancel", None, 409, "invalid_state"),
            (planned["id"], "cancel", {"why": "x"}, 400, "unknown_field"),
            ("sch_nosuch", "cancel", None, 404, "not_found"),
            ("sch_nosuch", "reschedule", {"starts_at": later}, 404, "not_found"),
        ):
            answer = await call(
                http, "POST", f"{url}/api/schedules/{schedule_id}/{action}", body, expect=status
            )
            assert answer["error"]["code"] == code, (action, body)
        assert (await call(http, "GET", f"{url}/api/outbox"))["messages"] == []


async def test_smtp_failure_keeps_the_invitations_in_the_outbox(tmp_path: Path) -> None:
    # nothing listens on this port: every SMTP attempt is refused
    async with (
        serving(
            tmp_path / "data", smtp_host="127.0.0.1", smtp_port=free_port(), smtp_security="none"
        ) as running,
        aiohttp.ClientSession() as http,
    ):
        url = running.url
        confirmed = await confirmed_pair(http, running)
        assert {(i["via"], i["error"]) for i in confirmed["invitations"]} == {
            ("outbox", "smtp_failed")
        }
        outbox = await call(http, "GET", f"{url}/api/outbox")
        assert outbox["via"] == "smtp" and len(outbox["messages"]) == 3


async def test_staff_actions_are_audited_under_the_signed_in_person(
    server: RunningServer,
) -> None:
    url = server.url
    await add_staff(server)
    async with aiohttp.ClientSession() as http, signed_in(server) as staff:
        ids = await submit(http, server, ROSA, DALE)
        sam = await staff.call("POST", "/api/facilitators", FACILITATOR, expect=201)
        await staff.call("POST", f"/api/facilitators/{sam['id']}/deactivate")
        await staff.call("POST", f"/api/facilitators/{sam['id']}/activate")
        [first] = (await staff.call("POST", "/api/matching/run"))["proposals"]
        await staff.call("POST", f"/api/proposals/{first['id']}/reject")
        joan = application(first_name="Joan", last_name="Li", email="joan@example.org", placement=7)
        await call(http, "POST", f"{url}/api/applications", joan, staff=False, expect=201)
        [second] = (await staff.call("POST", "/api/matching/run"))["proposals"]
        await staff.call("POST", f"/api/proposals/{second['id']}/accept")
        planned = await staff.call("POST", f"/api/proposals/{second['id']}/schedule")
        confirmed = await staff.call("POST", f"/api/schedules/{planned['id']}/confirm")
        message = (await staff.call("GET", "/api/outbox"))["messages"][0]["name"]
        await staff.call("GET", f"/api/outbox/{message}")
        await staff.call("GET", f"/api/outbox/{message}/raw")
        await staff.call("POST", f"/api/applications/{ids['Dale']}/withdraw")
        await staff.call("DELETE", f"/api/applications/{ids['Dale']}", expect=204)

        entries = (await staff.call("GET", "/api/audit"))["entries"]
        assert {e["actor"] for e in entries} == {STAFF_EMAIL}
        assert {e["address"] for e in entries} == {"127.0.0.1"}
        done = [(e["action"], e["target"], e["detail"]) for e in reversed(entries)]
        assert done == [
            ("sign_in", None, {}),
            ("facilitator_added", sam["id"], {}),
            ("facilitator_deactivated", sam["id"], {}),
            ("facilitator_activated", sam["id"], {}),
            ("matching_run", None, {"waiting": 2, "proposals": [first["id"]]}),
            ("proposal_rejected", first["id"], {}),
            ("matching_run", None, {"waiting": 3, "proposals": [second["id"]]}),
            ("proposal_accepted", second["id"], {}),
            (
                "proposal_scheduled",
                second["id"],
                {
                    "schedule": planned["id"],
                    "starts_at": planned["starts_at"],
                    "facilitator": sam["id"],
                },
            ),
            (
                "schedule_confirmed",
                planned["id"],
                {"proposal": second["id"], "session_id": confirmed["session_id"]},
            ),
            ("outbox_read", message, {}),
            ("outbox_read", message, {"raw": True}),
            ("application_withdrawn", ids["Dale"], {}),
            ("application_deleted", ids["Dale"], {}),
        ]
        # the audit log's filter knows the new actions
        accepted = (await staff.call("GET", "/api/audit?action=proposal_accepted"))["entries"]
        assert [e["target"] for e in accepted] == [second["id"]]
