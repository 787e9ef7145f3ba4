"""The staff page in Chromium on node A follows a room that lives on node B, through
Redis: node A's own list knows nothing of B's seats (a room lives on one node), so every
"3 of 3" and "Recording" on A's page came through the live feed."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from support.browser import EXPECT_MS, PageWatch, sign_in_as_staff, watched_page
from support.cluster import Nodes, two_nodes
from support.postgres import Postgres
from support.server import CONSENT, close_clients, create_session, give_consent, seat_clients


@pytest.fixture
async def nodes(tmp_path: Path, postgres: Postgres) -> AsyncIterator[Nodes]:
    async with two_nodes(tmp_path, postgres) as running:
        yield running


async def test_the_staff_page_on_one_node_follows_a_room_on_the_other(
    nodes: Nodes, browser: Browser
) -> None:
    created = await create_session(nodes.b.url, title="On node B")
    watch = PageWatch()
    async with watched_page(browser, f"{nodes.a.url}/staff", watch=watch) as (page, _):
        await sign_in_as_staff(page)
        row = page.locator("#sessions-body tr", has_text="On node B")
        await expect(row).to_contain_text("Nobody")
        await expect(page.locator("#sessions-feed")).to_have_text(
            "Live: rooms update as they change."
        )
        clients = await seat_clients(nodes.b.url, created)
        try:
            await expect(row).to_contain_text("3 of 3", timeout=EXPECT_MS)
            await give_consent(clients, CONSENT)
            ack = await clients["facilitator"].call("recording:start")
            assert ack["ok"], ack
            await expect(row.locator(".state-tag")).to_have_attribute(
                "data-state", "recording", timeout=EXPECT_MS
            )
            # in Spanish too
            await page.locator("#lang-select").select_option("es")
            await expect(page.locator("#sessions-feed")).to_have_text(
                "En directo: las salas se actualizan al cambiar."
            )
            await expect(row).to_contain_text("3 de 3")
        finally:
            with contextlib.suppress(Exception):
                await close_clients(clients)
        await expect(row).to_contain_text("Nadie", timeout=EXPECT_MS)
    watch.assert_clean()
