#!/usr/bin/env bash
# Installs what a fresh machine lacks to build and test moe, skipping what is present:
# the system packages moe builds against (liburing, libnuma), curl (the server tests' HTTP
# client), and a Python virtual environment (.venv) with the real clients the server tests
# drive it with (the official `openai` package, and `prometheus_client`'s text-format
# parser for /metrics), and Debian's chromium with a font, which the report tests render
# `moe trace report`'s page in. Safe to run repeatedly; needs root (or sudo) for the packages.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
for pkg in liburing-dev libnuma-dev curl python3-venv chromium fonts-dejavu-core; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
# A python3 of its own (pyenv, as on the dev machines) already has venv.
if python3 -c "import venv, ensurepip" 2>/dev/null; then
  missing=("${missing[@]/python3-venv}")
fi
wanted=()
for pkg in "${missing[@]}"; do [ -n "$pkg" ] && wanted+=("$pkg"); done
if [ ${#wanted[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  echo "installing ${wanted[*]}" >&2
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${wanted[@]}" </dev/null
fi
if [ ! -x .venv/bin/python ]; then
  echo "making the Python environment .venv" >&2
  python3 -m venv .venv
fi
if ! .venv/bin/python -c "import openai, prometheus_client" 2>/dev/null; then
  echo "installing openai and prometheus_client into .venv" >&2
  .venv/bin/python -m pip install -q --disable-pip-version-check openai prometheus_client
fi
