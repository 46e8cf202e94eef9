#!/usr/bin/env bash
# Time to first token for a long prompt restored from a session file against recomputed,
# and the KV figures of each block type.
#
#   tools/bench-session.sh [options] [MODEL.gguf]
#     --tokens N        prompt length in tokens (default 2000; text from models/heldout.txt)
#     --rounds N        rounds; each runs every strategy once, in turn (default 3)
#     --kv-memory SIZE  the pool size for the "largest context" column (default 256M)
#     --kv-type T       block type of the session (default f16)
#     --strategies "..." which --session-restore strategies (default: compute load auto)
#
# Default MODEL: .build-bench/bench-qwen3moe.q8_0.gguf (tools/make-bench-models.sh), all
# resident. The session is made once (`moe generate --session`, which computes the prompt),
# then each round runs `moe generate -n 1 --session FILE` with --session-restore compute
# (the prompt recomputed: the baseline), load (every block read, O_DIRECT) and auto (Cake:
# loading from the end while computing from the start, by measured estimates). Reports the
# median time to first token (restore + evaluation of the prompt's last token + sampling;
# model loading excluded) and its ratio to recomputation.
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/lib.sh

tokens=2000; rounds=3; kvmem=256M; kvtype=f16; strategies="compute load auto"
model=.build-bench/bench-qwen3moe.q8_0.gguf
while [ $# -gt 0 ]; do
    case "$1" in
        --tokens) tokens=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --kv-memory) kvmem=$2; shift 2 ;;
        --kv-type) kvtype=$2; shift 2 ;;
        --strategies) strategies=$2; shift 2 ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        *) model=$1; shift ;;
    esac
done
[ -e "$model" ] || { echo "bench-session: no $model (run tools/make-bench-models.sh)" >&2; exit 1; }

echo "== building moe (release)" >&2
swift build -c release --product moe >&2
moe=$PWD/.build/release/moe
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The longest prefix of the held-out text with at most $tokens tokens (binary search on
# characters), so the prompt is $tokens tokens give or take one.
text=$(cat models/heldout.txt models/heldout.txt)
count() { "$moe" tokenize -m "$model" --text "${text:0:$1}" 2>/dev/null | wc -w; }
lo=1; hi=${#text}
[ "$(count "$hi")" -ge "$tokens" ] || { echo "bench-session: models/heldout.txt is shorter than $tokens tokens" >&2; exit 1; }
while [ $((hi - lo)) -gt 1 ]; do
    mid=$(((lo + hi) / 2))
    if [ "$(count "$mid")" -le "$tokens" ]; then lo=$mid; else hi=$mid; fi
done
prompt=${text:0:$lo}
session=$tmp/prompt.session
common=(-m "$model" -p "$prompt" -n 1 --temp 0 --kv-type "$kvtype" --session "$session")

echo "== making the session ($(count "$lo") prompt tokens)" >&2
"$moe" generate "${common[@]}" >/dev/null 2>"$tmp/make.err" || { cat "$tmp/make.err" >&2; exit 1; }
grep -E "^prompt:|^time to first" "$tmp/make.err" >&2
size=$(stat -c %s "$session")

ttft() {  # strategy -> "ttft_ms restore_ms loaded computed"
    "$moe" generate "${common[@]}" --session-restore "$1" >/dev/null 2>"$tmp/run.err" || { cat "$tmp/run.err" >&2; exit 1; }
    local t r l c
    t=$(sed -n 's/^time to first token: \([0-9.]*\) ms (restore \([0-9.]*\) ms.*/\1/p' "$tmp/run.err")
    r=$(sed -n 's/^time to first token: \([0-9.]*\) ms (restore \([0-9.]*\) ms.*/\2/p' "$tmp/run.err")
    l=$(sed -n 's/^session: .*restored (\([0-9]*\) loaded.*/\1/p' "$tmp/run.err")
    c=$(sed -n 's/^session: .*; \([0-9]*\) recomputed.*/\1/p' "$tmp/run.err")
    echo "$t $r $l $c"
}

for ((round = 1; round <= rounds; round++)); do
    for s in $strategies; do
        ttft "$s" >>"$tmp/$s"
        echo "round $round $s: $(tail -1 "$tmp/$s")" >&2
    done
done

base=$( [ -e "$tmp/compute" ] && cut -d' ' -f1 "$tmp/compute" | median || echo nan)
echo
echo "model $(basename "$model"), prompt $(count "$lo") tokens, session file $((size >> 20)) MiB ($kvtype), medians of $rounds"
printf "%-9s %10s %11s %8s %10s %9s\n" strategy "TTFT ms" "restore ms" loaded recomputed "speed-up"
for s in $strategies; do
    t=$(cut -d' ' -f1 "$tmp/$s" | median)
    r=$(cut -d' ' -f2 "$tmp/$s" | median)
    l=$(cut -d' ' -f3 "$tmp/$s" | median)
    c=$(cut -d' ' -f4 "$tmp/$s" | median)
    ratio=$( [ "$base" = nan ] && echo "-" || printf "%.1fx" "$(echo "$base / $t" | bc -l)")
    printf "%-9s %10.1f %11.1f %8s %10s %9s\n" "$s" "$t" "$r" "$l" "$c" "$ratio"
done

echo
echo "KV per block type (--kv-memory $kvmem):"
for t in f16 q8_0 q4_0; do
    "$moe" generate -m "$model" -p "Hi" -n 1 --kv-type "$t" --kv-memory "$kvmem" --ctx 16 2>&1 >/dev/null | grep '^kv:' || true
done
