#!/usr/bin/env bash
# Installs the system packages moe builds against (liburing, libnuma), only when missing.
# Safe to run repeatedly; needs root (or sudo) on a fresh Debian/Ubuntu machine.
set -euo pipefail
missing=()
for pkg in liburing-dev libnuma-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
echo "installing ${missing[*]}" >&2
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
