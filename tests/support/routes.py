"""The app's route table as the guard tests read it: every route anyone may call
(`PUBLIC`), and every other route of the running app (`guarded_routes`), collected from
its router so that a new route cannot be missed."""

from __future__ import annotations

import re

from support.server import RunningServer

# (method, canonical path) of every route anyone may call; HEAD goes with GET.
PUBLIC = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    # sign-in, with its own double-submit CSRF token
    ("GET", "/api/staff/csrf"),
    ("POST", "/api/staff/signin"),
    # the application form
    ("GET", "/api/regions"),
    ("POST", "/api/applications"),
    ("POST", "/api/apply/{organisation}"),
    # the published invitation page (off unless turned on; rate-limited, email-checked)
    ("GET", "/invite"),
    ("GET", "/invitar"),
    ("GET", "/api/invites"),
    ("POST", "/api/invites"),
    ("POST", "/api/invites/confirm"),
    # an organisation's public face (name, logo, contact) for the pages that show it
    ("GET", "/api/public/organisations/{organisation}"),
    # what participants agreed to make public
    ("GET", "/api/public/recordings"),
    ("GET", "/api/public/recordings/{recording_id}/audio"),
    ("GET", "/api/public/recordings/{recording_id}/waveform"),
    ("GET", "/api/public/recordings/{recording_id}/captions"),
    # a participant's copy link (its token is checked by the copy routes)
    ("GET", "/api/copy"),
    ("PUT", "/api/copy/consent"),
    ("GET", "/api/copy/file"),
    ("GET", "/api/copy/waveform"),
    ("GET", "/api/copy/captions"),
    ("POST", "/api/copy/clip"),
    # a seat's own browser capture (its seat token is checked by the capture routes)
    ("POST", "/api/capture/{recording_id}/runs"),
    ("GET", "/api/capture/{recording_id}/runs/{run}"),
    ("PUT", "/api/capture/{recording_id}/runs/{run}/chunks/{seq}"),
    ("POST", "/api/capture/{recording_id}/runs/{run}/close"),
    # Socket.IO (seat tokens are checked at connect)
    ("GET", "/socket.io/"),
    ("POST", "/socket.io/"),
    ("OPTIONS", "/socket.io/"),
    # pages for participants and the sign-in page, and their files
    ("GET", "/"),
    ("GET", "/room/{session_id}"),
    ("GET", "/together/{session_id}"),  # a self-guided seat's link: the same room page
    ("GET", "/console/{session_id}"),
    ("GET", "/copy"),
    ("GET", "/listen"),
    ("GET", "/escuchar"),
    ("GET", "/apply"),
    ("GET", "/solicitar"),
    ("GET", "/apply/{organisation}"),
    ("GET", "/solicitar/{organisation}"),
    ("GET", "/staff/signin"),
    ("GET", "/vendor/socket.io.esm.min.js"),
    ("GET", "/static"),
}
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
PARAMETER = re.compile(r"\{[^}]+\}")
Route = tuple[str, str]


def guarded_routes(server: RunningServer) -> list[Route]:
    """(method, canonical path) of every route of the running app not in `PUBLIC`."""
    found = {
        (route.method, route.resource.canonical)
        for route in server.runner.app.router.routes()
        if route.resource is not None
    }
    public = {(m, p) for m, p in found if (m if m != "HEAD" else "GET", p) in PUBLIC}
    missing = {p for p in PUBLIC if p not in found}
    assert not missing, f"PUBLIC names routes the app does not have: {sorted(missing)}"
    return sorted(found - public)
