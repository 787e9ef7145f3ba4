"""The announced address replaces our answer's host candidates, and only those."""

from __future__ import annotations

from storyroom.media.sdp import announce_host_candidates

ANSWER = (
    "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
    "m=audio 40002 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 10.1.2.3\r\n"
    "a=candidate:abc 1 udp 2130706431 10.1.2.3 40002 typ host\r\n"
    "a=candidate:def 1 udp 1694498815 198.51.100.4 40002 typ srflx raddr 10.1.2.3 rport 40002\r\n"
    "a=candidate:ghi 1 udp 16777215 192.0.2.9 3478 typ relay raddr 0.0.0.0 rport 0\r\n"
    "a=end-of-candidates\r\n"
)


def test_host_candidates_and_their_connection_line_carry_the_address() -> None:
    out = announce_host_candidates(ANSWER, "203.0.113.10")
    assert "a=candidate:abc 1 udp 2130706431 203.0.113.10 40002 typ host\r\n" in out
    assert "c=IN IP4 203.0.113.10\r\n" in out
    # other kinds of candidate, and the origin line, are left as they are
    assert "198.51.100.4 40002 typ srflx raddr 10.1.2.3" in out
    assert "192.0.2.9 3478 typ relay" in out
    assert "o=- 1 1 IN IP4 0.0.0.0\r\n" in out
    assert out.count("\r\n") == ANSWER.count("\r\n")


def test_an_ipv6_announcement_names_the_family() -> None:
    out = announce_host_candidates(ANSWER, "2001:db8::10")
    assert "c=IN IP6 2001:db8::10\r\n" in out
    assert " 2001:db8::10 40002 typ host" in out


def test_an_answer_without_host_candidates_is_unchanged() -> None:
    relay_only = ANSWER.replace("a=candidate:abc 1 udp 2130706431 10.1.2.3 40002 typ host\r\n", "")
    assert announce_host_candidates(relay_only, "203.0.113.10") == relay_only
