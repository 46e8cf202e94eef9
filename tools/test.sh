#!/usr/bin/env bash
# The test command (README.md and .ci/run): the whole suite, then the kernel, model and KV
# tests again with the portable SIMD path forced (-DMOE_PORTABLE_SIMD), so the code that
# ARM edge devices run is tested on x86 too.
set -euo pipefail
cd "$(dirname "$0")/.."
swift test "$@"
echo "== again with the portable SIMD kernels" >&2
swift test --scratch-path .build-portable -Xswiftc -DMOE_PORTABLE_SIMD --filter "KernelsTests|ModelsTests|KVTests" "$@"
# The relocatable release (tools/release.sh), unpacked and run in a minimal Debian root made
# with debootstrap: it needs root (chroot, mounts), which CI has.
if [ "$(id -u)" -eq 0 ] && [ "${MOE_SKIP_RELEASE_TEST:-0}" != 1 ]; then
    echo "== the release, in a minimal Debian root" >&2
    tools/test-release.sh
fi
