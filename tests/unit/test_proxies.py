"""Forwarded headers: believed only from trusted proxies, and only as far as the chain
of trusted proxies goes."""

from __future__ import annotations

import ipaddress

import pytest
from multidict import CIMultiDict

from storyroom.web.proxies import Forwarded, forwarded

PROXIES = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))
CLIENT = "198.51.100.7"


@pytest.mark.parametrize(
    ("peer", "headers", "expected"),
    [
        # one trusted proxy, both header styles
        ("10.0.0.2", {"X-Forwarded-For": CLIENT}, Forwarded(CLIENT, None)),
        (
            "10.0.0.2",
            {"X-Forwarded-For": CLIENT, "X-Forwarded-Proto": "https"},
            Forwarded(CLIENT, "https"),
        ),
        ("10.0.0.2", {"Forwarded": f"for={CLIENT};proto=https"}, Forwarded(CLIENT, "https")),
        ("10.0.0.2", {"Forwarded": f'for="{CLIENT}:4711"'}, Forwarded(CLIENT, None)),
        ("10.0.0.2", {"Forwarded": 'for="[2001:db8::1]:4711"'}, Forwarded("2001:db8::1", None)),
        ("fd00::5", {"X-Forwarded-For": CLIENT}, Forwarded(CLIENT, None)),
        ("::ffff:10.0.0.2", {"X-Forwarded-For": CLIENT}, Forwarded(CLIENT, None)),
        # a chain: the right-most untrusted address is the client; what the client
        # wrote itself further left is not believed
        (
            "10.0.0.2",
            {"X-Forwarded-For": f"203.0.113.9, {CLIENT}, 10.0.0.3"},
            Forwarded(CLIENT, None),
        ),
        (
            "10.0.0.2",
            {"Forwarded": f"for=203.0.113.9, for={CLIENT};proto=https, for=10.0.0.3;proto=http"},
            Forwarded(CLIENT, "https"),
        ),
        # every hop a trusted proxy: the left-most
        ("10.0.0.2", {"X-Forwarded-For": "10.1.1.1, 10.0.0.3"}, Forwarded("10.1.1.1", None)),
        # Forwarded wins over X-Forwarded-For
        (
            "10.0.0.2",
            {"Forwarded": f"for={CLIENT}", "X-Forwarded-For": "203.0.113.9"},
            Forwarded(CLIENT, None),
        ),
    ],
)
def test_trusted_proxy_names_the_client(
    peer: str, headers: dict[str, str], expected: Forwarded
) -> None:
    assert forwarded(peer, CIMultiDict(headers), PROXIES) == expected


@pytest.mark.parametrize(
    ("peer", "headers", "proxies"),
    [
        # the peer is not a trusted proxy: a client cannot pick its own address
        ("203.0.113.9", {"X-Forwarded-For": CLIENT}, PROXIES),
        ("203.0.113.9", {"Forwarded": f"for={CLIENT}"}, PROXIES),
        # no proxies configured: headers are ignored
        ("10.0.0.2", {"X-Forwarded-For": CLIENT}, ()),
        # a trusted proxy that says nothing
        ("10.0.0.2", {}, PROXIES),
        # unreadable or obfuscated hops
        ("10.0.0.2", {"X-Forwarded-For": "not-an-address"}, PROXIES),
        ("10.0.0.2", {"X-Forwarded-For": f"{CLIENT}, garbage"}, PROXIES),
        ("10.0.0.2", {"Forwarded": "for=_hidden"}, PROXIES),
        ("10.0.0.2", {"Forwarded": "for=unknown"}, PROXIES),
        ("10.0.0.2", {"Forwarded": 'for="[2001:db8::1'}, PROXIES),
        (None, {"X-Forwarded-For": CLIENT}, PROXIES),
        ("not-an-ip", {"X-Forwarded-For": CLIENT}, PROXIES),
    ],
)
def test_untrusted_or_unreadable_headers_are_ignored(
    peer: str | None, headers: dict[str, str], proxies: tuple[ipaddress.IPv4Network, ...]
) -> None:
    assert forwarded(peer, CIMultiDict(headers), proxies) is None


def test_unknown_scheme_is_not_believed() -> None:
    found = forwarded("10.0.0.2", CIMultiDict({"Forwarded": f"for={CLIENT};proto=gopher"}), PROXIES)
    assert found == Forwarded(CLIENT, None)
