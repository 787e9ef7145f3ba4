"""deploy/: the Compose file as `docker-compose config` reads it (no daemon needed), the
Caddyfile as Caddy adapts it, coturn starting from turnserver.conf the way Compose
starts it, the systemd unit as systemd-analyze verifies it, and every example settings
file as storyroom itself would load it. Each checks what the parts must agree on: the
TURN secret, the ICE port range, the proxy storyroom trusts, the announced address."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from storyroom.config import Settings, unknown_variables

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
ENV_EXAMPLE = DEPLOY / "env.example"
SYSTEMD_ENV = DEPLOY / "systemd" / "storyroom.env"
DOCKER_COMPOSE = "/usr/bin/docker-compose"
CADDY = os.environ.get("STORYROOM_CADDY", "/usr/bin/caddy")
TURNSERVER = os.environ.get("STORYROOM_TURNSERVER", "/usr/bin/turnserver")
REQUIRED = (
    "STORYROOM_DOMAIN",
    "ACME_EMAIL",
    "STORYROOM_ICE_PUBLIC_ADDRESS",
    "STORYROOM_TURN_SECRET",
)


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=value lines, as Compose's .env and systemd's EnvironmentFile= read these
    (no quotes or expansions are used in ours)."""
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path.name}: not KEY=value: {line!r}"
            values[key.strip()] = value
    return values


def run_compose_config(env_file: Path) -> subprocess.CompletedProcess[str]:
    """`docker-compose config` with `env_file` as deploy/.env (and none of its
    variables from this process's environment, which would win over the file)."""
    if not os.access(DOCKER_COMPOSE, os.X_OK):
        pytest.fail(f"{DOCKER_COMPOSE} not found: install Debian's docker-compose (tests/run.sh)")
    return subprocess.run(
        [DOCKER_COMPOSE, "-f", str(COMPOSE), "--env-file", str(env_file), "config"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={k: v for k, v in os.environ.items() if k not in read_env_file(ENV_EXAMPLE)},
    )


def compose_config(env_file: Path) -> dict[str, Any]:
    result = run_compose_config(env_file)
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return compose_config(ENV_EXAMPLE)


def settings_from(env: Mapping[str, str]) -> Settings:
    """What `storyroom serve` makes of this environment; no unknown STORYROOM_ names."""
    assert unknown_variables(env) == []
    return Settings.load(environ=env)


def port_range(text: str) -> range:
    first, _, last = text.partition("-")
    return range(int(first), int(last) + 1)


def option(args: list[str], name: str) -> str:
    """The value of `--name=value` in a command line."""
    values = [a.split("=", 1)[1] for a in args if a.startswith(f"--{name}=")]
    assert len(values) == 1, (name, args)
    return values[0]


def conf_values(path: Path) -> dict[str, list[str]]:
    """turnserver.conf's active `key[=value]` lines."""
    values: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.strip().partition("=")
            values.setdefault(key, []).append(value)
    return values


def test_compose_runs_storyroom_behind_caddy_with_coturn(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"storyroom", "caddy", "coturn"}
    storyroom, caddy, coturn = services["storyroom"], services["caddy"], services["coturn"]
    example = read_env_file(ENV_EXAMPLE)
    env = storyroom["environment"]
    settings = settings_from(env)

    # The image's build is the repository's Dockerfile; data on a volume.
    assert Path(storyroom["build"]["context"]).resolve() == ROOT
    assert any(v.endswith(":/data:rw") or v.endswith(":/data") for v in storyroom["volumes"])

    # Caddy and storyroom share one network; storyroom trusts Caddy's address on it and
    # not its own (nor anything else Compose could give out there).
    network = next(iter(storyroom["networks"]))
    assert set(caddy["networks"]) == {network}
    subnet = ipaddress.ip_network(compose["networks"][network]["ipam"]["config"][0]["subnet"])
    caddy_ip = ipaddress.ip_address(caddy["networks"][network]["ipv4_address"])
    storyroom_ip = ipaddress.ip_address(storyroom["networks"][network]["ipv4_address"])
    assert caddy_ip in subnet and storyroom_ip in subnet
    assert settings.trusted_proxies
    assert all(net.subnet_of(subnet) for net in settings.trusted_proxies)
    assert any(caddy_ip in net for net in settings.trusted_proxies)
    assert not any(storyroom_ip in net for net in settings.trusted_proxies)
    assert caddy["environment"]["STORYROOM_UPSTREAM"] == f"storyroom:{settings.port}"
    assert {(p["published"], p["target"]) for p in caddy["ports"]} >= {(80, 80), (443, 443)}
    assert settings.public_url == f"https://{example['STORYROOM_DOMAIN']}"

    # Audio: candidates bind the range on storyroom's one address and are announced at
    # the public address; every port of the range is published as itself over UDP.
    assert settings.ice_port_range is not None
    ice = range(settings.ice_port_range[0], settings.ice_port_range[1] + 1)
    published = {(int(p["published"]), int(p["target"])) for p in storyroom["ports"]}
    assert all(p.get("protocol") == "udp" for p in storyroom["ports"])
    assert published == {(port, port) for port in ice}
    assert settings.ice_host_addresses == (str(storyroom_ip),)
    assert settings.ice_public_address == example["STORYROOM_ICE_PUBLIC_ADDRESS"]
    assert settings.max_rooms > 0  # a full server says so (the range is checked by Settings)

    # One TURN secret: storyroom mints credentials from what coturn checks them with.
    command = coturn["command"]
    conf = conf_values(DEPLOY / "turnserver.conf")
    assert "use-auth-secret" in conf
    assert option(command, "static-auth-secret") == settings.turn_secret
    assert settings.turn_secret == example["STORYROOM_TURN_SECRET"]
    assert option(command, "realm") == example["STORYROOM_DOMAIN"]
    assert option(command, "external-ip") == settings.ice_public_address
    turn_ports = {int(m) for m in re.findall(r":(\d+)\?", ",".join(settings.turn_urls))}
    assert turn_ports == {int(conf["listening-port"][0]), int(conf["tls-listening-port"][0])}
    assert all(example["STORYROOM_DOMAIN"] in url for url in settings.turn_urls)
    # coturn reads Caddy's certificate for the domain from Caddy's data volume.
    caddy_data = next(v.split(":")[0] for v in caddy["volumes"] if ":/data" in v)
    mount = next(v for v in coturn["volumes"] if v.startswith(f"{caddy_data}:"))
    inside = mount.split(":")[1]
    for name, suffix in (("cert", "crt"), ("pkey", "key")):
        path = option(command, name)
        domain = example["STORYROOM_DOMAIN"]
        assert path.startswith(f"{inside}/caddy/certificates/"), path
        assert path.endswith(f"/{domain}/{domain}.{suffix}"), path
    assert coturn["network_mode"] == "host"


def test_the_image_publishes_the_range_compose_maps(compose: dict[str, Any]) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    exposed = re.findall(r"^EXPOSE (\d+)-(\d+)/udp$", dockerfile, re.MULTILINE)
    assert len(exposed) == 1, exposed
    image_range = range(int(exposed[0][0]), int(exposed[0][1]) + 1)
    assert f"STORYROOM_ICE_PORT_RANGE={image_range[0]}-{image_range[-1]}" in dockerfile
    env = compose["services"]["storyroom"]["environment"]
    assert port_range(env["STORYROOM_ICE_PORT_RANGE"]) == image_range
    assert re.search(r"pip install .*--constraint=constraints.txt '?\.", dockerfile)


@pytest.mark.parametrize("missing", REQUIRED)
def test_compose_names_a_missing_setting(missing: str, tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "".join(
            line + "\n"
            for line in ENV_EXAMPLE.read_text().splitlines()
            if not line.startswith(f"{missing}=")
        )
    )
    result = run_compose_config(env_file)
    assert result.returncode != 0
    assert f"set {missing}" in result.stderr, result.stderr


def caddy_adapt(home: Path, env: Mapping[str, str]) -> dict[str, Any]:
    if not os.access(CADDY, os.X_OK):
        pytest.fail(f"{CADDY} not found: install Debian's caddy package (tests/run.sh does)")
    result = subprocess.run(
        [CADDY, "adapt", "--config", str(DEPLOY / "Caddyfile"), "--validate"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=home,
        env={
            "PATH": os.environ["PATH"],
            "HOME": str(home),
            "XDG_DATA_HOME": str(home / "data"),
            "XDG_CONFIG_HOME": str(home / "config"),
            **env,
        },
    )
    assert result.returncode == 0, result.stderr
    adapted: dict[str, Any] = json.loads(result.stdout)
    return adapted


@pytest.mark.parametrize(
    ("upstream", "dial"),
    [({"STORYROOM_UPSTREAM": "storyroom:8080"}, "storyroom:8080"), ({}, "127.0.0.1:8080")],
)
def test_the_caddyfile_proxies_the_domain_to_storyroom(
    upstream: dict[str, str], dial: str, tmp_path: Path
) -> None:
    env = {"STORYROOM_DOMAIN": "storyroom.example.org", "ACME_EMAIL": "ops@example.org"}
    adapted = caddy_adapt(tmp_path, env | upstream)
    (server,) = adapted["apps"]["http"]["servers"].values()
    assert server["listen"] == [":443"]
    (route,) = server["routes"]
    assert route["match"] == [{"host": ["storyroom.example.org"]}]
    text = json.dumps(route["handle"])
    assert '"handler": "reverse_proxy"' in text and f'"dial": "{dial}"' in text
    (policy,) = adapted["apps"]["tls"]["automation"]["policies"]
    (issuer,) = policy["issuers"]
    # the one CA whose folder compose.yaml's coturn reads the certificate from
    assert issuer["ca"] == "https://acme-v02.api.letsencrypt.org/directory"
    assert issuer["email"] == "ops@example.org"


def self_signed(folder: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / f"{name}.crt", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def free_tcp_udp_ports(count: int) -> list[int]:
    """Ports free for both TCP and UDP on 127.0.0.1, different from each other."""
    chosen: list[int] = []
    held: list[socket.socket] = []
    try:
        while len(chosen) < count:
            tcp = socket.socket()
            tcp.bind(("127.0.0.1", 0))
            held.append(tcp)
            port = tcp.getsockname()[1]
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                udp.close()
                continue
            held.append(udp)
            chosen.append(port)
        return chosen
    finally:
        for sock in held:
            sock.close()


@pytest.fixture
def turnserver(compose: dict[str, Any], tmp_path: Path) -> Iterator[tuple[int, Path, str]]:
    """coturn from deploy/turnserver.conf and Compose's own command-line options (with
    a certificate of our own and loopback ports); yields (TLS port, log, certificate)."""
    if not os.access(TURNSERVER, os.X_OK):
        pytest.fail(f"{TURNSERVER} not found: install Debian's coturn package (tests/run.sh)")
    domain = read_env_file(ENV_EXAMPLE)["STORYROOM_DOMAIN"]
    cert, key = self_signed(tmp_path, domain)
    port, tls_port = free_tcp_udp_ports(2)
    command = compose["services"]["coturn"]["command"]
    assert command[:2] == ["-c", "/etc/coturn/turnserver.conf"]
    options = [a for a in command[2:] if not a.startswith(("--cert=", "--pkey="))]
    log = tmp_path / "turnserver.log"  # the configuration logs to stdout, as containers do
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                TURNSERVER,
                "-c",
                str(DEPLOY / "turnserver.conf"),
                *options,
                f"--cert={cert}",
                f"--pkey={key}",
                "--listening-ip=127.0.0.1",
                "--relay-ip=127.0.0.1",
                f"--listening-port={port}",
                f"--tls-listening-port={tls_port}",
                f"--pidfile={tmp_path / 'turnserver.pid'}",
                f"--userdb={tmp_path / 'turndb'}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield tls_port, log, cert.read_text()
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def test_coturn_starts_from_the_deploy_configuration(
    turnserver: tuple[int, Path, str],
) -> None:
    tls_port, log, cert = turnserver
    context = ssl.create_default_context(cadata=cert)
    context.check_hostname = False  # the name is the example domain; the key is ours
    deadline = time.monotonic() + 30
    while True:
        try:
            with (
                socket.create_connection(("127.0.0.1", tls_port), timeout=5) as raw,
                context.wrap_socket(raw) as tls,
            ):
                presented = tls.getpeercert(binary_form=True)
                break
        except OSError:  # not listening yet (ssl.SSLError is an OSError too)
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert presented == ssl.PEM_cert_to_DER_cert(cert)  # turns: serves the given certificate
    text = log.read_text(errors="replace")
    assert "Bad configuration" not in text, text


def test_the_systemd_unit_verifies(tmp_path: Path) -> None:
    """systemd-analyze finds no unknown keys or bad values (run with this checkout's
    program and example settings file in place of /opt and /etc)."""
    unit = (DEPLOY / "systemd" / "storyroom.service").read_text()
    assert "ExecStart=/opt/storyroom/.venv/bin/storyroom serve" in unit
    assert "EnvironmentFile=/etc/storyroom/storyroom.env" in unit
    program = Path(sys.executable).parent / "storyroom"
    unit = unit.replace("/opt/storyroom/.venv/bin/storyroom", str(program))
    unit = unit.replace("/etc/storyroom/storyroom.env", str(SYSTEMD_ENV))
    copy = tmp_path / "storyroom.service"
    copy.write_text(unit)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_the_systemd_settings_file_is_a_valid_configuration() -> None:
    env = read_env_file(SYSTEMD_ENV)
    settings = settings_from(env)
    assert settings.host == "127.0.0.1"  # only Caddy reaches it
    assert settings.public_url.startswith("https://")
    assert any(ipaddress.ip_address("127.0.0.1") in net for net in settings.trusted_proxies)
    assert settings.ice_port_range is not None and settings.max_rooms > 0
    assert settings.turn_secret and settings.turn_urls
    assert str(settings.data_dir) == "/var/lib/storyroom"  # the unit's StateDirectory
    unit = (DEPLOY / "systemd" / "storyroom.service").read_text()
    assert "StateDirectory=storyroom" in unit
