#!/usr/bin/env bash
# Fuzzes the GGUF reader with libFuzzer for a bounded time (not part of CI).
#   tools/fuzz-gguf.sh [SECONDS=600] [extra libFuzzer flags...]
# Corpus: fuzz-corpus/ (seeded from ../shared's vocab and model headers); crashes land in
# fuzz-artifacts/. Replay one with: swift run gguf-fuzz fuzz-artifacts/crash-...
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TO_RUN="${1:-600}"; shift || true
SHARED="${MOE_SHARED_DIR:-../shared}"

swift build -c release --scratch-path .build-fuzz --product gguf-fuzz \
  -Xswiftc -sanitize=fuzzer,address -Xswiftc -D -Xswiftc FUZZING

mkdir -p fuzz-corpus fuzz-artifacts
if [ -z "$(ls -A fuzz-corpus)" ]; then
  # Seeds: the first 64 KiB of each real file (headers, metadata, tensor tables).
  for f in "$SHARED"/models/*.gguf "$SHARED"/vocab/*.gguf; do
    [ -e "$f" ] && head -c 65536 "$f" > "fuzz-corpus/seed-$(basename "$f")"
  done
  # Small complete files: the tensor tables of several architectures end inside 64 KiB.
fi

exec .build-fuzz/release/gguf-fuzz fuzz-corpus -artifact_prefix=fuzz-artifacts/ \
  -max_len=65536 -max_total_time="$SECONDS_TO_RUN" -print_final_stats=1 "$@"
