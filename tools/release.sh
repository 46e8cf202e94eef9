#!/usr/bin/env bash
# Builds the relocatable release for edge boxes: dist/moe-VERSION-linux-ARCH.tar.gz with
#   moe-VERSION-linux-ARCH/bin/moe                    the Swift runtime, Foundation, libstdc++, liburing
#                                                     and libnuma linked in: it needs glibc and the kernel
#   moe-VERSION-linux-ARCH/share/moe/moe-default.q8_0.gguf   the default model (found by moe itself)
#   moe-VERSION-linux-ARCH/README.md                  what it is and how to run it
#   moe-VERSION-linux-ARCH/moe-serve.service          an example systemd unit with MemoryMax
#
#   tools/release.sh [VERSION]     (default: the version `moe --version` prints)
#
# For aarch64, build on an aarch64 machine, or cross-compile with a Swift SDK for that
# target (`swift sdk install ...`, then SWIFT_SDK=<its id> tools/release.sh): the portable
# SIMD kernels are what it runs, and tools/test.sh tests them on x86 too.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
version=${1:-$(sed -n 's/.*version: "\([^"]*\)".*/\1/p' Sources/moe/MoE.swift | head -1)}
arch=$(uname -m)
sdk_flags=()
if [ -n "${SWIFT_SDK:-}" ]; then
    sdk_flags=(--swift-sdk "$SWIFT_SDK")
    arch=${SWIFT_SDK%%-*}
fi
name=moe-$version-linux-$arch
scratch=.build-release
libs=$scratch/static-libs
mkdir -p "$libs"
# The linker takes the first directory on its path that has a library, .so or .a: a folder
# holding only the archives makes -luring and -lnuma link statically, everything else stays.
# libstdc++ too (the static Swift runtime asks for -lstdc++): a minimal root need not have
# it. libgcc_s stays dynamic: it is part of every glibc system's base (Debian's libgcc-s1 is
# required by libc6 itself).
for lib in liburing libnuma libstdc++; do
    archive=$(ls /usr/lib/*/"$lib".a /usr/lib/"$lib".a /usr/lib/gcc/*/*/"$lib".a 2>/dev/null | head -1 || true)
    [ -n "$archive" ] || { echo "release: no $lib.a (install its -dev package)" >&2; exit 1; }
    cp "$archive" "$libs/"
done
echo "== building moe $version for $arch (release, static Swift runtime)" >&2
swift build -c release --product moe --scratch-path "$scratch" --static-swift-stdlib "${sdk_flags[@]}" \
    -Xlinker -L"$PWD/$libs" >&2 2>&1 | grep -v "^\[" >&2 || true
binary=$(swift build -c release --product moe --scratch-path "$scratch" "${sdk_flags[@]}" --show-bin-path)/moe
[ -x "$binary" ] || { echo "release: the build failed" >&2; exit 1; }

stage=$scratch/stage/$name
rm -rf "$scratch/stage"
mkdir -p "$stage/bin" "$stage/share/moe" dist
cp "$binary" "$stage/bin/moe"
strip "$stage/bin/moe"
cp models/moe-default.q8_0.gguf "$stage/share/moe/"
cp tools/release/moe-serve.service "$stage/"
size=$(du -m "$stage/bin/moe" | cut -f1)
needed=$(readelf -d "$stage/bin/moe" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')
sed -e "s/@VERSION@/$version/g" -e "s/@ARCH@/$arch/g" -e "s/@SIZE@/$size/g" -e "s/@NEEDED@/$needed/g" \
    tools/release/README.md.in >"$stage/README.md"
tar -C "$scratch/stage" -czf "dist/$name.tar.gz" "$name"
echo "release: dist/$name.tar.gz (bin/moe ${size} MiB stripped; it needs: $needed)" >&2
echo "dist/$name.tar.gz"
