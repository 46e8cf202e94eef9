#!/usr/bin/env bash
# Tests the release for real: unpacks it into a minimal Debian root made with debootstrap
# (no Swift, no -dev packages), and there, chrooted, runs `moe generate` on the default
# model and `moe serve`, which must answer one request from outside the root.
#
#   tools/test-release.sh [dist/moe-VERSION-linux-ARCH.tar.gz]   (default: build it)
#
# Needs root. The Debian root is kept in .build-release/debian-root between runs.
set -euo pipefail
cd "$(dirname "$0")/.."
tarball=${1:-}
[ -n "$tarball" ] || tarball=$(tools/release.sh | tail -1)
root=$PWD/.build-release/debian-root
if [ ! -x "$root/bin/sh" ]; then
    command -v debootstrap >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap </dev/null; }
    echo "== debootstrap: a minimal Debian root in $root" >&2
    rm -rf "$root"
    debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian >"$root.log" 2>&1 ||
        { tail -20 "$root.log" >&2; exit 1; }
fi
# What the root must not have: a Swift toolchain, liburing, libnuma.
for lib in libswiftCore.so liburing.so.2 libnuma.so.1; do
    if find "$root" -name "$lib*" -print -quit | grep -q .; then echo "test-release: the root has $lib" >&2; exit 1; fi
done
rm -rf "$root/opt/moe"
mkdir -p "$root/opt/moe"
tar -C "$root/opt/moe" --strip-components=1 -xzf "$tarball"
mounted=()
cleanup() {
    [ -n "${server:-}" ] && kill "$server" 2>/dev/null || true
    wait 2>/dev/null || true
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[$i]}" 2>/dev/null || true; done
}
trap cleanup EXIT
for fs in proc sys dev; do
    mountpoint -q "$root/$fs" || { mount --bind "/$fs" "$root/$fs"; mounted+=("$root/$fs"); }
done

echo "== in the root: moe generate on the default model" >&2
out=$(chroot "$root" /opt/moe/bin/moe generate -p "In the beginning" -n 16 --temp 0 2>"$root.generate.err")
[ -n "$out" ] || { cat "$root.generate.err" >&2; echo "test-release: generate printed nothing" >&2; exit 1; }
grep -q "generation: 16 tokens" "$root.generate.err" || { cat "$root.generate.err" >&2; exit 1; }
echo "   generated: $out" >&2

echo "== in the root: moe serve answering one request" >&2
chroot "$root" /opt/moe/bin/moe serve --port 0 --parallel 2 >/dev/null 2>"$root.serve.err" &
server=$!
port=""
for _ in $(seq 600); do
    port=$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\).*|\1|p' "$root.serve.err" | head -1)
    [ -n "$port" ] && curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
    sleep 0.1
done
[ -n "$port" ] || { cat "$root.serve.err" >&2; exit 1; }
reply=$(curl -sf "http://127.0.0.1:$port/v1/chat/completions" \
    -d '{"messages": [{"role": "user", "content": "Say something."}], "max_tokens": 12, "temperature": 0}')
echo "   reply: $reply" >&2
echo "$reply" | python3 -c 'import sys, json; r = json.load(sys.stdin); assert r["choices"][0]["message"]["content"] is not None; assert r["usage"]["completion_tokens"] >= 1'
kill -TERM "$server"
wait "$server"; status=$?
server=""
[ "$status" -eq 0 ] || { echo "test-release: moe serve exited $status after SIGTERM" >&2; exit 1; }
echo "test-release: ok ($(basename "$tarball"), $(du -m "$root/opt/moe/bin/moe" | cut -f1) MiB binary)" >&2
