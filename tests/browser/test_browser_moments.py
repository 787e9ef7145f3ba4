"""The moments around the recording, in real Chromium, as each person sees them in
English and Spanish: a participant on a 390-px phone (all set, paused, the end screen
going from "preparing" to "ready"), the facilitator's console (reasons beside disabled
controls, markers in reach and on a key, no "Up next" after stop, the files' progress),
a recording made to fail, and the staff lists following a take by themselves.

The expected words come from the pages' own catalogues (static/i18n), filled in as the
page fills them: what is checked is that the page says them at the right moment."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, expect

from storyroom.room.questions import bank
from support.browser import (
    EXPECT_MS,
    LAPTOP,
    horizontal_overflow,
    screenshot,
    seat_page,
    sign_in_as_staff,
    turn_on_microphone,
    with_raw_audio,
)
from support.media import tone_room
from support.server import RunningServer, create_session, finalized, give_consent
from support.staff import add_staff

pytestmark = pytest.mark.slow

STATIC = Path(__file__).resolve().parents[2] / "static"
PHONE_390 = {"width": 390, "height": 844}
FINALIZE_S = 120  # a few seconds of audio are finalized in far less


def words(lang: str, key: str, **fill: Any) -> str:
    """The catalogue's text for `key` in `lang`, with its placeholders filled."""
    text: str = json.loads((STATIC / "i18n" / f"{lang}.json").read_text("utf-8"))[key]
    for name, value in fill.items():
        text = text.replace("{" + name + "}", str(value))
    return text


async def watch_texts(page: Page, selector: str) -> None:
    """Keep, in the page, every text `selector` shows from now on (in order, with
    performance.now()), so a state that lasts a moment is seen too."""
    await page.evaluate(
        """(selector) => {
            window.__seen = window.__seen || {};
            const seen = (window.__seen[selector] = []);
            const note = () => {
                const node = document.querySelector(selector);
                const text = node && !node.closest("[hidden]") ? node.textContent : "";
                if (text && seen[seen.length - 1]?.text !== text) {
                    seen.push({ text, at: performance.now() });
                }
            };
            new MutationObserver(note).observe(document.body, {
                subtree: true, childList: true, characterData: true, attributes: true,
            });
            note();
        }""",
        selector,
    )


async def seen_texts(page: Page, selector: str) -> list[str]:
    seen: list[dict[str, Any]] = await page.evaluate(
        "(selector) => window.__seen[selector]", selector
    )
    return [item["text"] for item in seen]


def in_order(seen: list[str], wanted: list[str]) -> bool:
    """`wanted` appear in `seen` in this order (others may come between)."""
    at = 0
    for text in seen:
        if at < len(wanted) and text == wanted[at]:
            at += 1
    return at == len(wanted)


async def within_viewport(page: Page, selector: str) -> bool:
    """The element is on screen without scrolling (the page scrolled to the top)."""
    await page.evaluate("() => window.scrollTo(0, 0)")
    box = await page.locator(selector).bounding_box()
    size = page.viewport_size
    assert box is not None and size is not None
    return box["y"] >= 0 and box["y"] + box["height"] <= size["height"]


@pytest.mark.parametrize("lang", ["en", "es"])
async def test_a_participant_is_told_each_moment_on_a_phone(
    server: RunningServer, browser: Browser, lang: str
) -> None:
    created = await create_session(server.url, language=lang)
    question = bank()["questions"][0]
    async with (
        tone_room(server.url, created, seats=("b", "facilitator")) as (clients, _),
        seat_page(browser, with_raw_audio(created["seats"]["a"]["url"]), "a", PHONE_390) as seat,
    ):
        page = seat.page
        await expect(page.locator("#conn-indicator")).to_have_attribute(
            "data-state", "connected", timeout=EXPECT_MS
        )
        await turn_on_microphone(page)
        all_set = page.locator("#all-set")
        await expect(all_set).to_be_hidden()

        # consent and one question: everything done, so "you're all set"
        await page.locator("#consent-record").check()
        await page.locator("#consent-form button[type=submit]").click()
        done = page.locator("#choose-done")
        await expect(done).to_be_disabled()
        await expect(page.locator("#choose-done-reason")).to_have_text(
            words(lang, "questions.done_reason_none")
        )
        await page.locator(f"#choose-{question['id']}").check()
        # marking a question folds nothing under the person's finger
        await expect(done).to_be_enabled(timeout=EXPECT_MS)
        await expect(page.locator("#question-groups")).to_be_visible()
        await expect(all_set).to_be_hidden()
        await done.click()
        await expect(all_set).to_be_visible(timeout=EXPECT_MS)
        await expect(all_set).to_be_focused()
        await expect(page.locator("#all-set-title")).to_have_text(
            words(lang, "allset.title", facilitator="Sam")
        )
        # the steps fold away: no 5,000-px question list under it
        for step in ("#check-step", "#consent-step", "#questions-step"):
            assert await page.locator(step).evaluate("(node) => !node.open"), step
        await expect(page.locator("#question-groups")).to_be_hidden()
        height = await page.evaluate("() => document.documentElement.scrollHeight")
        assert height < 3 * PHONE_390["height"], height
        assert await horizontal_overflow(page) == 0
        await screenshot(page, f"moments-{lang}-all-set")

        # recording, then paused: the card says so plainly
        await give_consent({"b": clients["b"]})
        f = clients["facilitator"]
        assert (await f.call("recording:start"))["ok"]
        live = page.locator("#live")
        await expect(live).to_be_visible(timeout=EXPECT_MS)
        await expect(all_set).to_be_hidden()
        await expect(page.locator("#paused-notice")).to_be_hidden()
        assert (await f.call("recording:pause"))["ok"]
        await expect(page.locator("#paused-notice")).to_have_text(
            words(lang, "live.paused_notice"), timeout=EXPECT_MS
        )
        await expect(live).to_have_attribute("data-state", "paused")
        assert await within_viewport(page, "#paused-notice")
        assert await horizontal_overflow(page) == 0
        await screenshot(page, f"moments-{lang}-paused")
        assert (await f.call("recording:resume"))["ok"]
        await expect(page.locator("#paused-notice")).to_be_hidden(timeout=EXPECT_MS)

        # stopped: thanks, no question, no timer; "preparing" then "ready"
        await watch_texts(page, "#ended-files .finalize-title")
        stopped_at = time.monotonic()
        assert (await f.call("recording:stop"))["ok"]
        recording_id = f.last["recording"]["id"]
        ended = page.locator("#ended")
        await expect(ended).to_be_visible(timeout=EXPECT_MS)
        await expect(page.locator("#ended-title")).to_have_text(
            words(lang, "ended.title_name", name="Rosa")
        )
        await expect(page.locator("#cue-text")).to_be_hidden()
        await expect(page.locator("#timer")).to_be_hidden()
        await expect(page.locator("#ended")).to_contain_text(words(lang, "ended.next_copy"))
        await expect(page.locator("#ended")).to_contain_text(words(lang, "ended.next_change"))
        await expect(page.locator("#ended-choices")).to_have_text(
            words(
                lang,
                "ended.next_choices",
                archive=words(lang, "common.no"),
                public=words(lang, "common.no"),
            )
        )
        await finalized(server.url, recording_id, timeout=FINALIZE_S)
        ready_at = time.monotonic()
        ready = words(lang, "finalize.room_ready_title")
        await expect(page.locator("#ended-files .finalize-title")).to_have_text(
            ready, timeout=EXPECT_MS
        )
        seen = await seen_texts(page, "#ended-files .finalize-title")
        assert in_order(seen, [words(lang, "finalize.room_finalizing_title"), ready]), seen
        print(f"{lang}: files ready {ready_at - stopped_at:.1f} s after stop")
        assert await horizontal_overflow(page) == 0
        await screenshot(page, f"moments-{lang}-ended")
        seat.watch.assert_clean()


@pytest.mark.parametrize("lang", ["en", "es"])
async def test_the_console_says_why_and_when_the_files_are_safe(
    server: RunningServer, browser: Browser, lang: str
) -> None:
    created = await create_session(server.url, language=lang)
    async with tone_room(server.url, created, seats=("a", "b")) as (clients, _):
        await give_consent(clients)
        link = with_raw_audio(created["seats"]["facilitator"]["url"])
        async with seat_page(browser, link, "facilitator", LAPTOP) as seat:
            page = seat.page
            await expect(page.locator("#start-hint")).to_have_text(
                words(lang, "console.ready"), timeout=EXPECT_MS
            )
            # before the start: each disabled control says why, next to it
            for control, reason, key in (
                ("#next-button", "#next-reason", "console.reason_cue_start"),
                ("#marker-button", "#marker-reason", "markers.reason_start"),
                ("#use-picks", "#picks-reason", "console.reason_no_picks"),
            ):
                await expect(page.locator(control)).to_be_disabled()
                await expect(page.locator(control)).to_have_attribute(
                    "aria-describedby", reason.removeprefix("#")
                )
                await expect(page.locator(reason)).to_have_text(words(lang, key))
                await expect(page.locator(reason)).to_be_visible()
            # markers are in reach without scrolling
            assert await within_viewport(page, "#marker-button")

            await page.locator("#start-button").click()
            await expect(page.locator("#rec-indicator")).to_have_attribute(
                "data-state", "recording", timeout=EXPECT_MS
            )
            await expect(page.locator("#marker-reason")).to_be_hidden()
            await expect(page.locator("#marker-button")).to_be_enabled()
            # M places a marker, as N cues the next question
            await page.locator("#main").focus()
            await page.keyboard.press("m")
            await clients["a"].wait(lambda s: len(s["markers"]) == 1, "the marker")
            await expect(page.locator("#marker-list li")).to_have_count(1)
            assert clients["a"].last["markers"][0]["label"] == words(lang, "markers.default_label")

            await page.locator("#pause-button").click()
            await expect(page.locator("#start-hint")).to_have_text(
                words(lang, "console.paused_hint"), timeout=EXPECT_MS
            )
            await page.locator("#resume-button").click()
            await expect(page.locator("#rec-indicator")).to_have_attribute(
                "data-state", "recording", timeout=EXPECT_MS
            )

            await watch_texts(page, "#finalize-box .finalize-title")
            await page.locator("#stop-button").click()
            await page.get_by_role("button", name=words(lang, "console.stop_confirm")).click()
            await expect(page.locator("#rec-indicator")).to_have_attribute(
                "data-state", "stopped", timeout=EXPECT_MS
            )
            recording_id = clients["a"].last["recording"]["id"]
            # nothing "up next" once the conversation is over; the reason says so
            await expect(page.locator("#next-preview")).to_be_hidden()
            await expect(page.locator("#next-reason")).to_have_text(
                words(lang, "console.reason_finished")
            )
            await finalized(server.url, recording_id, timeout=FINALIZE_S)
            ready = words(lang, "finalize.console_ready_title")
            box = page.locator("#finalize-box")
            await expect(box.locator(".finalize-title")).to_have_text(ready, timeout=EXPECT_MS)
            seen = await seen_texts(page, "#finalize-box .finalize-title")
            assert in_order(seen, [words(lang, "finalize.console_finalizing_title"), ready]), seen
            await expect(box.locator(".finalize-progress")).to_be_hidden()
            staff_link = box.get_by_role("link", name=words(lang, "finalize.staff_link"))
            await expect(staff_link).to_have_attribute("href", f"/staff/recordings/{recording_id}")
            length = re.escape(words(lang, "finalize.length", time="TIME"))
            await expect(box).to_contain_text(re.compile(length.replace("TIME", r"\d+:\d\d")))
            await screenshot(page, f"moments-{lang}-console-ready")
            seat.watch.assert_clean()


async def test_a_failed_recording_is_said_in_plain_words(
    server: RunningServer, browser: Browser
) -> None:
    created = await create_session(server.url)
    async with tone_room(server.url, created, seats=("b",)) as (clients, _):
        await give_consent(clients)
        console_link = with_raw_audio(created["seats"]["facilitator"]["url"])
        room_link = with_raw_audio(created["seats"]["a"]["url"])
        async with (
            seat_page(browser, console_link, "facilitator", LAPTOP) as console,
            seat_page(browser, room_link, "a", PHONE_390) as room,
        ):
            await turn_on_microphone(room.page)
            await room.page.locator("#consent-record").check()
            await room.page.locator("#consent-form button[type=submit]").click()
            await expect(console.page.locator("#start-hint")).to_have_text(
                words("en", "console.ready"), timeout=EXPECT_MS
            )
            await console.page.locator("#start-button").click()
            await clients["b"].wait(lambda s: s["recording"]["state"] == "recording", "start")
            recording_id = clients["b"].last["recording"]["id"]
            # the master's name taken by a folder: finalization cannot write it
            squatter = server.settings.data_dir / "recordings" / recording_id / "master.wav"
            squatter.mkdir(parents=True)
            (squatter / "keep").write_text("not a file the finalizer may replace")
            await console.page.locator("#stop-button").click()
            await console.page.get_by_role(
                "button", name=words("en", "console.stop_confirm")
            ).click()
            failed = await clients["b"].wait(
                lambda s: (s["recording"]["finalize"] or {}).get("status") == "failed",
                "finalization failed",
                timeout=FINALIZE_S,
            )
            assert failed["recording"]["finalize"]["reason"]
            box = console.page.locator("#finalize-box")
            await expect(box.locator(".finalize-title")).to_have_text(
                words("en", "finalize.console_failed_title"), timeout=EXPECT_MS
            )
            await expect(box).to_contain_text(words("en", "finalize.console_failed_body"))
            await expect(box).to_contain_text(
                words("en", "finalize.console_failed_id", id=recording_id)
            )
            files = room.page.locator("#ended-files")
            await expect(files.locator(".finalize-title")).to_have_text(
                words("en", "finalize.room_failed_title"), timeout=EXPECT_MS
            )
            await expect(files).to_contain_text(words("en", "finalize.room_failed_body"))
            # the server's reason (an OS error) is for staff, never shown to people
            for page in (console.page, room.page):
                text = await page.locator("body").inner_text()
                assert "Error" not in text and "master.wav" not in text
            await screenshot(console.page, "moments-console-failed")
            await screenshot(room.page, "moments-room-failed")
            console.watch.assert_clean()
            room.watch.assert_clean()


async def test_staff_lists_follow_a_take_by_themselves_and_agree(
    server: RunningServer, browser: Browser
) -> None:
    await add_staff(server)
    created = await create_session(server.url)
    async with tone_room(server.url, created) as (clients, _):
        await give_consent(clients)
        f = clients["facilitator"]
        assert (await f.call("recording:start"))["ok"]
        recording_id = f.last["recording"]["id"]
        async with seat_page(browser, f"{server.url}/staff", "staff", LAPTOP) as staff:
            page = staff.page
            await sign_in_as_staff(page)
            sessions_tag = page.locator(
                f'#sessions-body tr[data-session="{created["id"]}"] .state-tag'
            )
            await expect(sessions_tag).to_have_text(words("en", "rec.recording"), timeout=EXPECT_MS)
            lists = await page.context.new_page()
            await lists.goto(f"{server.url}/staff/recordings")
            list_tag = lists.locator(
                f'#results-body tr[data-recording="{recording_id}"] .state-tag'
            )
            await expect(list_tag).to_have_text(words("en", "rec.recording"), timeout=EXPECT_MS)
            detail = await page.context.new_page()
            await detail.goto(f"{server.url}/staff/recordings/{recording_id}")
            await expect(detail.locator("#rec-state")).to_have_text(
                words("en", "rec.recording"), timeout=EXPECT_MS
            )
            session_row = f'#sessions-body tr[data-session="{created["id"]}"] .state-tag'
            list_row = f'#results-body tr[data-recording="{recording_id}"] .state-tag'
            watched = ((page, session_row), (lists, list_row), (detail, "#rec-state"))
            for shown, selector in watched:
                await watch_texts(shown, selector)

            assert (await f.call("recording:stop"))["ok"]
            await finalized(server.url, recording_id, timeout=FINALIZE_S)
            ready = words("en", "rec.ready")
            # no reload: each page follows the take by itself, and all say the same
            await expect(sessions_tag).to_have_text(ready, timeout=EXPECT_MS)
            await expect(list_tag).to_have_text(ready, timeout=EXPECT_MS)
            await expect(detail.locator("#rec-state")).to_have_text(ready, timeout=EXPECT_MS)
            await expect(detail.locator("#files-table tbody tr").first).to_be_visible()
            preparing = words("en", "rec.finalizing")
            for shown, selector in watched:
                seen = await seen_texts(shown, selector)
                assert seen[-1] == ready, seen
                # while preparing, the words carry the percentage
                assert all(
                    text.startswith(f"{preparing} · ") and text.endswith("%")
                    for text in seen
                    if text.startswith(preparing)
                ), seen
            staff.watch.assert_clean()


async def test_staff_reissue_an_expired_link_from_the_sessions_list(
    server: RunningServer, browser: Browser
) -> None:
    await add_staff(server)
    # its conversation was three days ago: the links have run out
    past = datetime.now(UTC) - timedelta(days=3)
    created = await create_session(server.url, starts_at=past.isoformat())
    old_link = created["seats"]["a"]["url"]
    async with seat_page(browser, old_link, "a", PHONE_390) as seat:
        await expect(seat.page.locator("#banner-text")).to_have_text(
            words("en", "refused.token_expired"), timeout=EXPECT_MS
        )

    async with seat_page(browser, f"{server.url}/staff", "staff", LAPTOP) as staff:
        page = staff.page
        await sign_in_as_staff(page)
        row = page.locator(f'#sessions-body tr[data-session="{created["id"]}"]')
        await row.get_by_role(
            "button",
            name=words(
                "en", "staff.reissue_label", seat=words("en", "seat.a"), title="Demo conversation"
            ),
        ).click()
        await page.get_by_role("button", name=words("en", "staff.reissue_confirm")).click()
        new_link = await page.locator("#link-a").input_value()
        assert new_link.startswith(f"{server.url}/room/{created['id']}#token=")
        assert new_link != old_link
        await expect(page.locator("#sessions-status")).to_have_text(
            words("en", "staff.reissued", seat=words("en", "seat.a"), title="Demo conversation")
        )
        staff.watch.assert_clean()

    # the old link is refused as unknown now; the new one opens the seat
    async with seat_page(browser, old_link, "a", PHONE_390) as seat:
        await expect(seat.page.locator("#banner-text")).to_have_text(
            words("en", "refused.token_invalid"), timeout=EXPECT_MS
        )
    async with seat_page(browser, new_link, "a", PHONE_390) as seat:
        await expect(seat.page.locator("#conn-indicator")).to_have_attribute(
            "data-state", "connected", timeout=EXPECT_MS
        )
        await expect(seat.page.locator("#welcome-title")).to_contain_text("Rosa")
        seat.watch.assert_clean()
