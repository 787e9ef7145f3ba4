#!/usr/bin/env bash
# THE test command: bash tests/run.sh [pytest arguments]
# Works on a fresh Debian machine with Python 3.11, Node/npm and apt: installs Chromium
# and coturn from apt (Playwright never downloads browsers), the npm packages from the
# lockfile and the project into .venv, then runs ruff, mypy, hadolint and pytest.
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

# The TURN tests start their own coturn on a loopback port. Debian's package would also
# start the system daemon (on 3478): stop and disable it, the tests never use it.
if ! command -v turnserver >/dev/null 2>&1; then
    echo "== installing coturn (apt)"
    apt_install coturn
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet coturn 2>/dev/null; then
        as_root systemctl disable --now coturn
    elif [[ -x /etc/init.d/coturn ]]; then
        as_root /etc/init.d/coturn stop >/dev/null 2>&1 || true
    fi
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
echo "== pip install -c constraints.txt -e '.[test]'"
.venv/bin/pip install -q -c constraints.txt -e '.[test]'

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
