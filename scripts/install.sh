#!/usr/bin/env bash
# First README command: install escnc on a fresh Debian/Ubuntu machine and run it.
#
#   system packages (libvirt's development files, python3-venv, a compiler) -> .venv ->
#   pip install -e . -> a first NETCONF user if there is none -> escnc serve
#
# The server runs with its embedded defaults: libvirt test driver (no daemon needed),
# state in ./escnc-state (or $ESCNC_STATE_DIR), a generated SSH host key, 127.0.0.1.
# Environment:
#   ESCNC_USER      first user's name (default admin)
#   ESCNC_PASSWORD  its password; when unset a random one is generated, printed once
#                   and kept in <state dir>/initial-password (mode 0600). No default
#                   password exists.
#   ESCNC_LISTEN    HOST:PORT (default 127.0.0.1:830 as root, 127.0.0.1:8830 otherwise)
#   ESCNC_NO_SERVE  set to 1 to stop after installing
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive

PACKAGES=(libvirt-dev pkg-config python3-venv python3-dev gcc)
missing=()
for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "install: apt-get install ${missing[*]}"
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e .
echo "install: escnc installed in $(pwd)/.venv (commands: .venv/bin/escnc, .venv/bin/escnc-cli)"

state="${ESCNC_STATE_DIR:-escnc-state}"
user="${ESCNC_USER:-admin}"
if [ -z "$(.venv/bin/escnc user list --state-dir "$state")" ]; then
    if [ -n "${ESCNC_PASSWORD:-}" ]; then
        printf '%s\n' "$ESCNC_PASSWORD" | .venv/bin/escnc user add "$user" --password-stdin --state-dir "$state"
    else
        password=$(.venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(18))')
        printf '%s\n' "$password" | .venv/bin/escnc user add "$user" --password-stdin --state-dir "$state"
        (umask 077 && printf '%s\n' "$password" >"$state/initial-password")
        echo "install: created NETCONF user '$user' with the generated password: $password"
        echo "install: (also kept in $state/initial-password; change it with: .venv/bin/escnc user add $user)"
    fi
fi

if [ "${ESCNC_NO_SERVE:-0}" = "1" ]; then
    exit 0
fi
if [ -n "${ESCNC_LISTEN:-}" ]; then
    listen="$ESCNC_LISTEN"
elif [ "$(id -u)" -eq 0 ]; then
    listen="127.0.0.1:830"
else
    listen="127.0.0.1:8830"  # ports below 1024 need root
fi
echo "install: starting escnc on $listen (Ctrl-C stops it)"
exec .venv/bin/escnc serve --state-dir "$state" --listen "$listen"
