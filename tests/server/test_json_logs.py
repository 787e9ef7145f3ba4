"""`STORYROOM_LOG_FORMAT=json`: `storyroom serve`'s standard error is one JSON object a
line, and what was logged while handling a request carries that request's id, the one
its response gave in `X-Request-Id`. The generated staff token is never logged."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path
from typing import Any

import aiohttp

from storyroom.__main__ import demo_session
from support.process import serve


async def test_json_lines_carry_the_request_id(tmp_path: Path) -> None:
    data = tmp_path / "data"
    # an empty staff token setting: the server generates one
    env = {"STORYROOM_LOG_FORMAT": "json", "STORYROOM_STAFF_TOKEN": ""}
    server = serve(data, tmp_path / "serve.log", env=env)
    try:
        await server.ready()
        token = (data / "staff-token").read_text().strip()
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{server.url}/healthz") as resp:
                health_id = resp.headers["X-Request-Id"]
            async with http.post(
                f"{server.url}/api/sessions",
                json=demo_session(),
                headers={"Authorization": f"Bearer {token}"},
            ) as resp:
                assert resp.status == 201
                created_id = resp.headers["X-Request-Id"]
                session_id = (await resp.json())["id"]
            async with http.get(f"{server.url}/no/such/page") as resp:
                assert resp.status == 404
                missing_id = resp.headers["X-Request-Id"]
        server.signal(signal.SIGTERM)
        await server.exited()
    finally:
        server.stop()
    assert len({health_id, created_id, missing_id}) == 3
    assert all(re.fullmatch(r"req_[0-9a-f]{16}", i) for i in (health_id, created_id, missing_id))

    text = server.log()
    lines: list[dict[str, Any]] = [json.loads(line) for line in text.splitlines() if line]
    for line in lines:
        assert {"time", "level", "logger", "message"} <= set(line), line
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", line["time"])
    created = [line for line in lines if session_id in line["message"]]
    assert created and created[0]["logger"] == "storyroom.web.sessions"
    assert created[0]["request_id"] == created_id
    access = {line["request_id"]: line for line in lines if line["logger"] == "aiohttp.access"}
    assert "POST /api/sessions" in access[created_id]["message"]
    assert "GET /no/such/page" in access[missing_id]["message"]
    # lines logged outside any request have none
    assert any("request_id" not in line for line in lines)
    # where the token is, never the token
    assert token not in text
    assert any("generated a staff token, saved in" in line["message"] for line in lines)
