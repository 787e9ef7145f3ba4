"""`storyroom check`: every check passes on a good set-up (with a real coturn on loopback
for the TURN allocation) and exits 0; each kind of bad set-up names the check that
fails and exits non-zero."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.coturn import Coturn, start_coturn
from support.process import storyroom

GOOD = {
    "aiortc_internals",
    "data_folder",
    "database",
    "flac_encoder",
    "free_space",
    "ice_binding",
    "mp3_encoder",
    "opus_decoder",
    "settings",
}


@pytest.fixture(scope="module")
def coturn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coturn]:
    with start_coturn(tmp_path_factory.mktemp("coturn"), secret="check-secret") as server:
        yield server


def turn_env(coturn: Coturn, secret: str = "check-secret") -> dict[str, str]:
    return {"STORYROOM_TURN_URLS": coturn.url, "STORYROOM_TURN_SECRET": secret}


def lines(output: str) -> dict[str, tuple[bool, str]]:
    """Check name -> (passed, what it found), from the printed table."""
    found = {}
    for line in output.splitlines():
        verdict, _, rest = line.partition(" ")
        if verdict in ("ok", "FAIL"):
            name, _, detail = rest.strip().partition("  ")
            found[name.strip()] = (verdict == "ok", detail.strip())
    return found


def test_a_good_setup_passes_every_check(tmp_path: Path, coturn: Coturn) -> None:
    result = storyroom("check", "--data-dir", str(tmp_path / "data"), env=turn_env(coturn))
    assert result.returncode == 0, result.stdout + result.stderr
    checks = lines(result.stdout)
    assert set(checks) == GOOD | {f"turn {coturn.url}"}
    assert all(passed for passed, _ in checks.values()), checks
    assert "allocated relay 127.0.0.1:" in checks[f"turn {coturn.url}"][1]
    assert "all 10 checks passed" in result.stdout
    assert coturn.allocations() == 0  # the allocation was released


@pytest.mark.parametrize(
    ("case", "failing", "said"),
    [
        ("free-space", "free_space", "at least 10,000,000 MiB wanted"),
        ("unknown-variable", "settings", "STORYROOM_MIN_FREE_MEGABYTES is not a setting"),
        ("wrong-turn-secret", "turn", "allocation refused"),
        ("no-turn-server", "turn", "no TURN answer"),
    ],
)
def test_a_bad_setup_names_the_failing_check(
    tmp_path: Path, coturn: Coturn, case: str, failing: str, said: str
) -> None:
    env = {"STORYROOM_MIN_FREE_MB": "1"}
    if case == "free-space":
        env["STORYROOM_MIN_FREE_MB"] = "10000000"
    elif case == "unknown-variable":
        env["STORYROOM_MIN_FREE_MEGABYTES"] = "5"
    elif case == "wrong-turn-secret":
        env |= turn_env(coturn, secret="not-the-secret")
    else:
        env |= {
            "STORYROOM_TURN_URLS": "turn:127.0.0.1:9?transport=udp",
            "STORYROOM_TURN_SECRET": "x",
        }
    result = storyroom("check", "--data-dir", str(tmp_path / "data"), env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    checks = lines(result.stdout)
    failed = {name: detail for name, (passed, detail) in checks.items() if not passed}
    assert [name.split(" ")[0] for name in failed] == [failing], checks
    assert said in next(iter(failed.values()))
    assert f"1 check(s) failed: {next(iter(failed))}" in result.stderr
