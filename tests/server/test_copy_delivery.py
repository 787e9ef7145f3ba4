"""Copies without a staff step, on a real finalized recording: each participant with an
address is emailed their personal link once the recording is ready and both agree to
copies, in their language, at most once per recording and seat (across restarts);
staff can still resend; nothing goes when copies were not agreed."""

from __future__ import annotations

import re
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from storyroom.orgs import EVERY_ORGANISATION
from storyroom.status import FinalizeStatus
from support.archive import Finished, copy_of
from support.polling import wait_for
from support.server import AUTH, RunningServer, call, serving
from support.staff import StaffBrowser

ADDRESSES = {"a": ("rosa@example.org", "es"), "b": ("dale@example.org", "en")}
LINK = re.compile(r"(http://\S+/copy#token=(\S+))")


async def set_contacts(staff: StaffBrowser, session_id: str) -> None:
    for seat, (email, language) in ADDRESSES.items():
        body = {"email": email, "language": language}
        await staff.call("PUT", f"/api/sessions/{session_id}/contacts/{seat}", body)


async def agree_to_copies(staff: StaffBrowser, recording_id: str, seats: str = "ab") -> None:
    for seat in seats:
        body = {"seat": seat, "copies": True, "note": "by phone"}
        await staff.call("PUT", f"/api/recordings/{recording_id}/consent", body)


async def outbox(server: RunningServer) -> dict[str, EmailMessage]:
    """The messages in the outbox folder, by the address they go to."""
    out = {}
    for entry in await server.services.outbox.entries(EVERY_ORGANISATION):
        message, _ = await server.services.outbox.read(entry.name, EVERY_ORGANISATION)
        out[message["To"].addresses[0].addr_spec] = message
    return out


async def messages(server: RunningServer, count: int) -> dict[str, EmailMessage]:
    async def enough() -> dict[str, EmailMessage] | None:
        found = await outbox(server)
        return found if len(found) >= count else None

    return await wait_for(enough, what=f"{count} copy emails in the outbox")


def link_in(message: EmailMessage) -> tuple[str, str]:
    body = message.get_body(("plain",))
    assert isinstance(body, EmailMessage)
    found = LINK.search(body.get_content())
    assert found, body.get_content()
    return found.group(1), found.group(2)


async def open_copy(url: str, token: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {token}"}
        async with http.get(f"{url}/api/copy", headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            page: dict[str, Any] = await resp.json()
        async with http.get(f"{url}/api/copy/file", headers=headers) as resp:
            assert resp.status == 200
            page["downloaded"] = len(await resp.read())
    return page


async def test_both_agree_and_each_gets_their_link_once(
    archive: RunningServer, staff: StaffBrowser, finished: Finished
) -> None:
    rec_id = finished.recording_id
    await set_contacts(staff, finished.session_id)
    await agree_to_copies(staff, rec_id)
    sent = await messages(archive, 2)
    assert set(sent) == {"rosa@example.org", "dale@example.org"}
    rosa, dale = sent["rosa@example.org"], sent["dale@example.org"]
    # each in their own language, naming the partner by first name only
    assert rosa["Content-Language"] == "es" and dale["Content-Language"] == "en"
    assert rosa["Subject"] == "Su conversación con Dale ya está lista"
    assert dale["Subject"] == "Your conversation with Rosa is ready"
    assert "dale@example.org" not in rosa.as_string()
    # every link works, for its own person, and downloads the copy
    rec = await staff.call("GET", f"/api/recordings/{rec_id}")
    access = next(f for f in rec["files"] if f["kind"] == "access")
    for message, (seat, name) in ((rosa, ("a", "Rosa")), (dale, ("b", "Dale"))):
        url, token = link_in(message)
        assert url.startswith(f"{archive.url}/copy#token=")
        page = await open_copy(archive.url, token)
        assert (page["seat"], page["name"]) == (seat, name)
        assert page["downloaded"] == access["bytes"]
    rec = await staff.call("GET", f"/api/recordings/{rec_id}")
    assert [(m["seat"], m["state"], m["via"]) for m in rec["copy_mailings"]] == [
        ("a", "sent", "outbox"),
        ("b", "sent", "outbox"),
    ]
    assert {c["source"] for c in rec["contacts"].values()} == {"staff"}

    # more nudges send nothing more: a consent recorded again, an address changed
    await agree_to_copies(staff, rec_id, "a")
    await set_contacts(staff, finished.session_id)
    assert await archive.services.delivery.send_due(rec_id) == []
    assert len(await outbox(archive)) == 2

    # staff can still resend one: a new link, the old one stops working
    _, old_token = link_in(rosa)
    resent = await staff.call("POST", f"/api/recordings/{rec_id}/copies/a/send", expect=201)
    assert resent["sent"]["seat"] == "a"

    async def three() -> bool:
        return len(await archive.services.outbox.entries(EVERY_ORGANISATION)) == 3

    await wait_for(three, what="the resent email")
    async with aiohttp.ClientSession() as http:
        resp = await http.get(
            f"{archive.url}/api/copy", headers={"Authorization": f"Bearer {old_token}"}
        )
        assert resp.status == 401 and (await resp.json())["error"]["code"] == "link_revoked"
    actions = [e["action"] for e in (await staff.call("GET", "/api/audit"))["entries"]]
    assert "copy_resent" in actions and actions.count("contact_changed") == 4


async def test_nothing_goes_without_both_agreeing(
    archive: RunningServer, staff: StaffBrowser, finished: Finished
) -> None:
    rec_id = finished.recording_id
    await set_contacts(staff, finished.session_id)
    await agree_to_copies(staff, rec_id, "a")
    body = {"seat": "b", "copies": False, "note": "said no"}
    await staff.call("PUT", f"/api/recordings/{rec_id}/consent", body)
    assert await archive.services.delivery.send_due(rec_id) == []
    assert await outbox(archive) == {}
    refused = await staff.call("POST", f"/api/recordings/{rec_id}/copies/a/send", expect=409)
    assert refused["error"]["code"] == "no_copies_consent"
    rec = await staff.call("GET", f"/api/recordings/{rec_id}")
    assert rec["copy_mailings"] == [] and rec["copy_links"] == []


async def test_copies_go_when_the_recording_becomes_ready_and_never_again(
    finished: Finished, tmp_path: Path
) -> None:
    """Consent and addresses first, then finalization ends: the emails go; after a
    restart the start-up sweep sends nothing twice."""
    data = copy_of(finished, tmp_path / "data")
    rec_id = finished.recording_id
    async with serving(data) as server, aiohttp.ClientSession() as http:
        # the recording is being finalized again: not ready, so nothing may go yet
        await server.services.store.set_finalize(rec_id, FinalizeStatus.QUEUED)
        for seat, (email, language) in ADDRESSES.items():
            body = {"email": email, "language": language}
            url = f"{server.url}/api/sessions/{finished.session_id}/contacts/{seat}"
            await call(http, "PUT", url, body)
        for seat in "ab":
            body = {"seat": seat, "copies": True, "note": "on the form"}
            await call(http, "PUT", f"{server.url}/api/recordings/{rec_id}/consent", body)
        assert await server.services.delivery.send_due(rec_id) == []
        assert await outbox(server) == {}
        await server.services.finalize_jobs.enqueue(rec_id)
        sent = await messages(server, 2)
        assert set(sent) == {"rosa@example.org", "dale@example.org"}
        rec = await server.services.store.get_recording(rec_id, EVERY_ORGANISATION)
        assert rec is not None and rec.finalize_status is FinalizeStatus.READY
    async with serving(data) as server:
        assert await server.services.copies.unmailed() == []
        assert await server.services.delivery.send_due(rec_id) == []
        assert len(await outbox(server)) == 2


BAD_CONTACTS: list[tuple[str, Any, int, str]] = [
    ("a", {"email": "not an address", "language": "en"}, 400, "invalid_email"),
    ("a", {"email": "rosa@example.org", "language": "fr"}, 400, "invalid_value"),
    ("a", {"email": "rosa@example.org"}, 400, "missing_field"),
    ("a", {"email": "rosa@example.org", "language": "en", "phone": "1"}, 400, "unknown_field"),
    ("a", {"email": 7, "language": "en"}, 400, "invalid_type"),
    ("a", ["rosa@example.org"], 400, "invalid_type"),
    ("facilitator", {"email": "sam@example.org", "language": "en"}, 404, "not_found"),
    ("c", {"email": "sam@example.org", "language": "en"}, 404, "not_found"),
]


@pytest.mark.parametrize(("seat", "body", "status", "code"), BAD_CONTACTS)
async def test_bad_contacts_are_refused(
    archive: RunningServer,
    staff: StaffBrowser,
    finished: Finished,
    seat: str,
    body: Any,
    status: int,
    code: str,
) -> None:
    path = f"/api/sessions/{finished.session_id}/contacts/{seat}"
    refused = await staff.call("PUT", path, body, expect=status)
    assert refused["error"]["code"] == code
    assert (await staff.call("GET", f"/api/sessions/{finished.session_id}/contacts")) == {
        "contacts": {}
    }


async def test_contacts_are_staff_only(archive: RunningServer, finished: Finished) -> None:
    async with aiohttp.ClientSession() as http:
        path = f"{archive.url}/api/sessions/{finished.session_id}/contacts"
        assert (await http.get(path)).status == 401
        body = {"email": "x@example.org", "language": "en"}
        assert (await http.put(f"{path}/a", json=body)).status == 401
        assert (await http.get(path, headers=AUTH)).status == 200
        await call(http, "GET", f"{archive.url}/api/sessions/ses_nope/contacts", expect=404)
