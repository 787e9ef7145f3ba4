"""Who is really asking: the client address and scheme behind trusted reverse proxies.

Behind a proxy (needed for HTTPS) every request comes from the proxy's address. The
proxy says who its client was in `Forwarded` (RFC 7239) or `X-Forwarded-For` and
`X-Forwarded-Proto`; anyone can send those headers too, so they are believed only when
the connection comes from an address in `STORYROOM_TRUSTED_PROXIES`, and then only as
far as the chain of trusted proxies goes: the client is the right-most address that is
not itself a trusted proxy. Without the setting the headers are ignored.

The middleware hands every handler (and the Socket.IO connect) a request whose
`remote` is the client and whose `scheme` is what the client used, so rate limits,
lockouts, audit entries, logs and Secure cookies follow without knowing about proxies.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Middleware

from storyroom.config import Network
from storyroom.web.middleware import FORWARDED_SECURE, Handler


@dataclass(frozen=True, slots=True)
class Forwarded:
    """What the trusted chain says: the client's address and the scheme it used."""

    client: str
    scheme: str | None


def trusted(address: str | None, proxies: Sequence[Network]) -> bool:
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in proxies)


def _node(value: str) -> str | None:
    """An address from a `for=` node or an X-Forwarded-For item; None when it is not one
    (obfuscated identifiers, `unknown`, garbage)."""
    value = value.strip().strip('"')
    if value.startswith("["):
        value = value[1 : value.find("]")] if "]" in value else ""
    elif value.count(":") == 1:
        value = value.split(":", 1)[0]  # IPv4 with a port
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


def _forwarded_header(header: str) -> tuple[list[str | None], list[str | None]]:
    """The `for` and `proto` of each element of RFC 7239 `Forwarded`, in order."""
    hops: list[str | None] = []
    protos: list[str | None] = []
    for element in header.split(","):
        pairs = {}
        for pair in element.split(";"):
            key, sep, value = pair.partition("=")
            if sep:
                pairs[key.strip().lower()] = value.strip().strip('"')
        hops.append(_node(pairs["for"]) if "for" in pairs else None)
        proto = pairs.get("proto", "").lower()
        protos.append(proto if proto in ("http", "https") else None)
    return hops, protos


def forwarded(
    peer: str | None, headers: Mapping[str, str], proxies: Sequence[Network]
) -> Forwarded | None:
    """The client behind `peer`, or None when `peer` is not a trusted proxy or says nothing.

    `headers` is the request's (case-insensitive) header mapping.
    """
    if not proxies or not trusted(peer, proxies):
        return None
    get = headers.get
    header = get("Forwarded")
    if header:
        hops, protos = _forwarded_header(header)
    else:
        xff = get("X-Forwarded-For")
        if not xff:
            return None
        hops = [_node(item) for item in xff.split(",")]
        # X-Forwarded-Proto is set by the proxy the client reached, and passed on.
        xfp = (get("X-Forwarded-Proto") or "").split(",")[0].strip().lower()
        protos = [xfp if xfp in ("http", "https") else None] * len(hops)
    # Walk from the nearest hop back; stop at the first address that is not trusted.
    for hop, proto in zip(reversed(hops), reversed(protos), strict=True):
        if hop is None:
            return None
        if not trusted(hop, proxies):
            return Forwarded(client=hop, scheme=proto)
    # Every hop is a trusted proxy: the left-most is as far back as anyone can tell.
    return Forwarded(client=hops[0], scheme=protos[0]) if hops and hops[0] else None


def proxy_middleware(proxies: Sequence[Network]) -> Middleware:
    """A middleware that rewrites `remote` and `scheme` from a trusted proxy's headers."""

    @web.middleware
    async def behind_proxies(request: web.Request, handler: Handler) -> web.StreamResponse:
        found = forwarded(request.remote, request.headers, proxies)
        if found is None:
            return await handler(request)
        if found.scheme == "https":
            request[FORWARDED_SECURE] = True
        if found.scheme:
            request = request.clone(remote=found.client, scheme=found.scheme)
        else:
            request = request.clone(remote=found.client)
        return await handler(request)

    return behind_proxies
