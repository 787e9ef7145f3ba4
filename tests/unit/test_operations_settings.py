"""The operator's settings: HTTPS, trusted proxies, the ICE port range and announced
address, room capacity, logs and readiness: read, checked, and named when wrong."""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path

import pytest

from storyroom.config import PORTS_PER_ROOM, Settings, SettingsError, unknown_variables


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"STORYROOM_TRUSTED_PROXIES": "10.0.0.300"}, "STORYROOM_TRUSTED_PROXIES"),
        ({"STORYROOM_TRUSTED_PROXIES": "proxy.example.org"}, "STORYROOM_TRUSTED_PROXIES"),
        ({"STORYROOM_METRICS_NETWORKS": "10.0.0.0/33"}, "STORYROOM_METRICS_NETWORKS"),
        ({"STORYROOM_ICE_PORT_RANGE": "40000"}, "first-last"),
        ({"STORYROOM_ICE_PORT_RANGE": "40000-forty"}, "STORYROOM_ICE_PORT_RANGE"),
        ({"STORYROOM_ICE_PORT_RANGE": "40199-40000"}, "need 1024 <= first <= last"),
        ({"STORYROOM_ICE_PORT_RANGE": "80-200"}, "need 1024 <= first <= last"),
        ({"STORYROOM_ICE_PORT_RANGE": "40000-70000"}, "need 1024 <= first <= last"),
        ({"STORYROOM_ICE_PORT_RANGE": "40000-40003"}, "holds 4 ports"),
        (
            {"STORYROOM_ICE_PORT_RANGE": "40000-40099", "STORYROOM_MAX_ROOMS": "20"},
            "20 room\\(s\\) on 1 address\\(es\\) need 120",
        ),
        (
            {
                "STORYROOM_ICE_PORT_RANGE": "40000-40011",
                "STORYROOM_ICE_HOST_ADDRESSES": "127.0.0.1,::1",
                "STORYROOM_MAX_ROOMS": "2",
            },
            "need 24",
        ),
        ({"STORYROOM_MAX_ROOMS": "-1"}, "max_rooms"),
        ({"STORYROOM_ICE_PUBLIC_ADDRESS": "vm.example.org"}, "STORYROOM_ICE_PUBLIC_ADDRESS"),
        ({"STORYROOM_LOG_LEVEL": "verbose"}, "log_level 'VERBOSE' is not one of"),
        ({"STORYROOM_LOG_FORMAT": "xml"}, "log_format 'xml' is not text or json"),
        ({"STORYROOM_TLS_CERT": "/nonexistent/cert.pem"}, "tls_cert and tls_key go together"),
        (
            {"STORYROOM_TLS_CERT": "/nonexistent/c.pem", "STORYROOM_TLS_KEY": "/nonexistent/k.pem"},
            "tls_cert: /nonexistent/c.pem is not a readable file",
        ),
        ({"STORYROOM_MIN_FREE_MB": "lots"}, "STORYROOM_MIN_FREE_MB"),
        ({"STORYROOM_MIN_FREE_MB": "-5"}, "min_free_mb"),
        ({"STORYROOM_SHUTDOWN_GRACE_S": "0"}, "shutdown_grace_s"),
        ({"STORYROOM_SHUTDOWN_GRACE_S": "9999"}, "shutdown_grace_s"),
        ({"STORYROOM_CAPTURE_WAIT_S": "-1"}, "capture_wait_s must be between 0 and 3600"),
        ({"STORYROOM_CAPTURE_WAIT_S": "a while"}, "STORYROOM_CAPTURE_WAIT_S"),
    ],
)
def test_bad_operations_settings_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.load(environ=env)


def test_operations_settings_are_read(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("x")
    key.write_text("x")
    s = Settings.load(
        environ={
            "STORYROOM_TRUSTED_PROXIES": "127.0.0.1, 10.0.0.0/8,fd00::/8",
            "STORYROOM_ICE_PORT_RANGE": "40000-40199",
            "STORYROOM_ICE_PUBLIC_ADDRESS": " 203.0.113.10 ",
            "STORYROOM_MAX_ROOMS": "30",
            "STORYROOM_LOG_LEVEL": "warning",
            "STORYROOM_LOG_FORMAT": "JSON",
            "STORYROOM_TLS_CERT": str(cert),
            "STORYROOM_TLS_KEY": str(key),
        },
        port=8443,
    )
    assert s.trusted_proxies == (
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("fd00::/8"),
    )
    assert s.ice_port_range == (40000, 40199)
    assert s.ice_public_address == "203.0.113.10"
    assert (s.max_rooms, s.log_level, s.log_format) == (30, "WARNING", "json")
    assert s.base_url == "https://127.0.0.1:8443"
    # the smallest range that carries one room
    one = Settings.load(environ={"STORYROOM_ICE_PORT_RANGE": f"40000-{40000 + PORTS_PER_ROOM - 1}"})
    assert one.ice_port_range == (40000, 40000 + PORTS_PER_ROOM - 1)


def test_unknown_variables_are_named_with_a_likely_meaning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = {
        "STORYROOM_TRUSTED_PROXY": "10.0.0.1",
        "STORYROOM_PROT": "9000",
        "STORYROOM_NOTHING_LIKE_IT": "x",
        "STORYROOM_CHROMIUM": "/usr/bin/chromium",  # the test runner's, not a setting
        "STORYROOM_PORT": "9000",
        "OTHER": "x",
    }
    assert unknown_variables(env) == [
        "STORYROOM_NOTHING_LIKE_IT is not a setting",
        "STORYROOM_PROT is not a setting (did you mean STORYROOM_PORT?)",
        "STORYROOM_TRUSTED_PROXY is not a setting (did you mean STORYROOM_TRUSTED_PROXIES?)",
    ]
    with caplog.at_level(logging.WARNING, logger="storyroom.config"):
        assert Settings.load(environ=env).port == 9000
    assert sum("is not a setting" in r.getMessage() for r in caplog.records) == 3
