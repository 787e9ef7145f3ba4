"""Checks on a seat's SDP offer and the archival-Opus rewrite of our answer.

Pure functions over SDP text (RFC 8866); no aiortc state.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final, Literal

__all__ = [
    "ARCHIVAL_OPUS_PARAMETERS",
    "SdpError",
    "SdpErrorCode",
    "announce_host_candidates",
    "archival_opus_answer",
    "check_offer",
]

SdpErrorCode = Literal["sdp_invalid", "sdp_no_audio", "sdp_video_not_supported", "sdp_too_large"]

_LINE: Final = re.compile(r"[a-z]=[^\x00-\x08\x0a-\x1f\x7f]*")
_MEDIA: Final = re.compile(r"m=(\S+) (\d+)(?:/\d+)? (\S+)((?: \S+)+)")
_RTPMAP: Final = re.compile(r"a=rtpmap:(\d+) ([^/\s]+)/(\d+)")
_FMTP: Final = re.compile(r"a=fmtp:(\d+)(?: (.*))?")

_FINGERPRINT_ALGORITHMS: Final = ("sha-256", "sha-384", "sha-512")
_FINGERPRINT: Final = re.compile(r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){31,63}")

MIN_OPUS_BITRATE: Final = 6_000
MAX_OPUS_BITRATE: Final = 510_000


class SdpError(ValueError):
    """An offer we cannot or will not answer.

    ``code`` is one of ``sdp_invalid``, ``sdp_no_audio``,
    ``sdp_video_not_supported``, ``sdp_too_large``; the message is plain words
    fit to show a participant.
    """

    def __init__(self, code: SdpErrorCode, message: str) -> None:
        super().__init__(message)
        self.code: SdpErrorCode = code
        self.message = message


@dataclass
class _Section:
    """One m= section (or, with ``media`` empty, the session part)."""

    media: str = ""
    formats: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    def attribute(self, name: str) -> bool:
        prefix = f"a={name}:"
        return any(line.startswith(prefix) for line in self.lines)


def _split_lines(sdp: str) -> list[str]:
    lines = sdp.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def _sections(lines: list[str]) -> list[_Section]:
    sections = [_Section()]
    for line in lines:
        if line.startswith("m="):
            match = _MEDIA.fullmatch(line)
            if match is None:
                raise SdpError("sdp_invalid", "The connection offer has a malformed media line.")
            sections.append(_Section(match.group(1), match.group(4).split()))
        sections[-1].lines.append(line)
    return sections


def _opus_payload_types(section: _Section) -> list[str]:
    types = []
    for line in section.lines:
        match = _RTPMAP.match(line)
        if (
            match
            and match.group(2).lower() == "opus"
            and match.group(3) == "48000"
            and match.group(1) in section.formats
        ):
            types.append(match.group(1))
    return types


def check_offer(sdp: str, max_bytes: int = 64_000) -> None:
    """Raise :class:`SdpError` unless ``sdp`` is an offer we can answer.

    We answer complete offers with audio only, in Opus, over ICE with DTLS: no
    video and no data channel. A truncated offer is caught by its missing final
    line ending or missing parts.
    """
    if len(sdp.encode("utf-8", "surrogatepass")) > max_bytes:
        raise SdpError("sdp_too_large", "The connection offer is too large.")
    invalid = SdpError("sdp_invalid", "The connection offer could not be read.")
    if not sdp.startswith("v=0\r\n") and not sdp.startswith("v=0\n"):
        raise invalid
    if not sdp.endswith("\n"):
        raise SdpError("sdp_invalid", "The connection offer is incomplete.")
    lines = _split_lines(sdp)
    if any(_LINE.fullmatch(line) is None for line in lines):
        raise invalid
    session, *media = _sections(lines)
    for kind in "ost":
        if not any(line.startswith(f"{kind}=") for line in session.lines):
            raise invalid
    if not media:
        raise SdpError("sdp_no_audio", "The connection offer has no audio.")
    for section in media:
        if section.media == "video":
            raise SdpError("sdp_video_not_supported", "Video is not supported; audio only.")
        if section.media != "audio":
            raise SdpError(
                "sdp_invalid", f"The connection offer asks for {section.media}; only audio works."
            )
    for section in media:
        for name in ("ice-ufrag", "ice-pwd", "fingerprint"):
            if not (section.attribute(name) or session.attribute(name)):
                raise SdpError(
                    "sdp_invalid", "The connection offer is missing its security details."
                )
        if not _opus_payload_types(section):
            raise SdpError("sdp_no_audio", "The connection offer has no Opus audio.")
    fingerprints = [
        line
        for part in (session, *media)
        for line in part.lines
        if line.startswith("a=fingerprint:")
    ]
    for line in fingerprints:
        # WebRTC requires a SHA-2 certificate fingerprint (RFC 8827 §6.5).
        algorithm, _, value = line[len("a=fingerprint:") :].partition(" ")
        if algorithm.lower() not in _FINGERPRINT_ALGORITHMS or not _FINGERPRINT.fullmatch(value):
            raise SdpError("sdp_invalid", "The connection offer's security details are not valid.")


ARCHIVAL_OPUS_PARAMETERS: Final = ("useinbandfec", "maxaveragebitrate", "stereo", "minptime")
"""The Opus fmtp parameters :func:`archival_opus_answer` sets (RFC 7587 §6.1)."""


def _merge_fmtp(parameter_texts: list[str], wanted: dict[str, str]) -> str:
    merged: dict[str, str] = {}
    for text in parameter_texts:
        for item in text.split(";"):
            name, _, value = item.strip().partition("=")
            if name:
                merged.setdefault(name.strip(), value.strip())
    merged.update(wanted)
    return ";".join(f"{name}={value}" if value else name for name, value in merged.items())


def archival_opus_answer(sdp: str, max_average_bitrate: int = 96_000) -> str:
    """Return ``sdp`` (our answer) asking the browser for archival-grade Opus.

    For every Opus payload type of every audio section, the a=fmtp line gets
    ``useinbandfec=1;maxaveragebitrate=<n>;stereo=0;minptime=10``; its other
    parameters are kept, several fmtp lines for one payload type become one, and
    a missing line is added after the a=rtpmap. Lines end with CRLF.
    """
    if not MIN_OPUS_BITRATE <= max_average_bitrate <= MAX_OPUS_BITRATE:
        raise ValueError(
            f"max_average_bitrate must be {MIN_OPUS_BITRATE}..{MAX_OPUS_BITRATE} bit/s"
        )
    wanted = {
        "useinbandfec": "1",
        "maxaveragebitrate": str(max_average_bitrate),
        "stereo": "0",
        "minptime": "10",
    }
    output: list[str] = []
    for section in _sections(_split_lines(sdp)):
        opus_types = set(_opus_payload_types(section)) if section.media == "audio" else set()
        if not opus_types:
            output += section.lines
            continue
        existing: dict[str, list[str]] = {}
        for line in section.lines:
            match = _FMTP.fullmatch(line)
            if match and match.group(1) in opus_types:
                existing.setdefault(match.group(1), []).append(match.group(2) or "")
        written: set[str] = set()
        for line in section.lines:
            fmtp = _FMTP.fullmatch(line)
            if fmtp and fmtp.group(1) in opus_types:
                payload_type = fmtp.group(1)
                if payload_type not in written:
                    merged = _merge_fmtp(existing[payload_type], wanted)
                    output.append(f"a=fmtp:{payload_type} {merged}")
                    written.add(payload_type)
                continue
            output.append(line)
            rtpmap = _RTPMAP.match(line)
            if (
                rtpmap
                and rtpmap.group(1) in opus_types
                and rtpmap.group(1) not in existing
                and rtpmap.group(1) not in written
            ):
                output.append(f"a=fmtp:{rtpmap.group(1)} {_merge_fmtp([], wanted)}")
                written.add(rtpmap.group(1))
    return "".join(f"{line}\r\n" for line in output)


_HOST_CANDIDATE: Final = re.compile(r"(a=candidate:\S+ \d+ (?i:udp) \d+ )(\S+)( \d+ typ host\b.*)")
_CONNECTION: Final = re.compile(r"c=IN (IP4|IP6) (\S+)")


def announce_host_candidates(sdp: str, address: str) -> str:
    """Return ``sdp`` (our answer) with every UDP host candidate's address, and the
    connection lines that name one, replaced by ``address``.

    For 1:1 NAT (a cloud VM, a container with its ports published): the server binds
    to its private address and the browser must reach it at the public one, on the
    same port. Lines end with CRLF.
    """
    family = "IP6" if ":" in address else "IP4"
    replaced: set[str] = set()
    output: list[str] = []
    for line in _split_lines(sdp):
        match = _HOST_CANDIDATE.fullmatch(line)
        if match:
            replaced.add(match.group(2))
            line = f"{match.group(1)}{address}{match.group(3)}"
        output.append(line)
    for i, line in enumerate(output):
        conn = _CONNECTION.fullmatch(line)
        if conn and conn.group(2) in replaced:
            output[i] = f"c=IN {family} {address}"
    return "\r\n".join(output) + "\r\n"
