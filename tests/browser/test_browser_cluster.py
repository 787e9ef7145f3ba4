"""The room page in a cluster: two nodes on one PostgreSQL behind HAProxy
(deploy/haproxy.cfg). The page adds its session id to its Socket.IO URL; sent by the
proxy to the node that does not run its room, it is refused with `wrong_node` and
reconnects by itself with the pin, through the proxy, to the node that does."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest
import socketio
from playwright.async_api import Browser

from support.browser import seat_page
from support.haproxy import haproxy
from support.polling import wait_for
from support.postgres import Postgres
from support.server import SeatClient, close_refused, create_session, free_port, serving

pytestmark = pytest.mark.slow


async def test_the_room_page_follows_wrong_node_to_the_rooms_node(
    postgres: Postgres, browser: Browser, tmp_path: Path
) -> None:
    url = postgres.new_database()
    proxy_port = free_port()
    public = f"http://127.0.0.1:{proxy_port}"  # the pages' origin is the proxy's
    async with (
        serving(tmp_path / "n1", database_url=url, node_id="node-1", public_url=public) as one,
        serving(tmp_path / "n2", database_url=url, node_id="node-2", public_url=public) as two,
    ):
        nodes = {"node-1": one, "node-2": two}
        addresses = {n: urlsplit(s.url).netloc for n, s in nodes.items()}
        with haproxy(addresses, tmp_path / "haproxy.log", port=proxy_port) as proxy:
            await proxy.routes()
            created = await create_session(one.url)
            session_id = created["id"]
            # the room runs on node-1 (seat b, straight to it) ...
            b = SeatClient(one.url, created["seats"]["b"]["token"])
            await b.connect()
            try:
                # ... and the proxy's table sends the room's connections to node-2: a
                # client pinned there is refused, and the table remembers node-2
                stray = SeatClient(
                    f"{proxy.url}/?session={session_id}&node=node-2",
                    created["seats"]["facilitator"]["token"],
                )
                refused: list[dict[str, object]] = []
                stray.sio.on("connect_error", refused.append)
                with pytest.raises(socketio.exceptions.ConnectionError):
                    await stray.sio.connect(
                        stray.url,
                        auth={"token": stray.token},
                        transports=["websocket"],
                        wait_timeout=5,
                    )
                await close_refused(stray.sio)
                assert refused and refused[0]["data"] == {"code": "wrong_node", "node": "node-1"}

                link = urlsplit(created["seats"]["a"]["url"])
                assert link.netloc == urlsplit(public).netloc
                async with seat_page(browser, created["seats"]["a"]["url"], "a") as seat:
                    await seat.page.wait_for_function(
                        "() => window.storyroom && window.storyroom.client.connectionState"
                        " === 'connected'",
                        timeout=30_000,
                    )
                    pin = await seat.page.evaluate("window.storyroom.client.nodePin")
                    assert pin == "node-1"
                    room = one.services.rooms.live(session_id)
                    assert room is not None and room.presence["a"].sid is not None
                    assert two.services.rooms.live(session_id) is None
                    seat.watch.assert_clean()
                # the page's own websockets, as HAProxy logged them once closed: refused
                # on node-2 (the table), then pinned to node-1
                pinned = await wait_for(
                    lambda: [
                        line
                        for line in proxy.log().splitlines()
                        if "/socket.io/" in line and "node=node-1" in line
                    ],
                    what="the pinned websocket in HAProxy's log",
                )
                assert all("nodes/node-1" in line for line in pinned), pinned
                unpinned = [
                    line
                    for line in proxy.log().splitlines()
                    if "/socket.io/?session=" in line and "node=" not in line
                ]
                assert unpinned and all("nodes/node-2" in line for line in unpinned), unpinned
            finally:
                await b.close()
