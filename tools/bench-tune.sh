#!/usr/bin/env bash
# How well `moe trace tune` predicts: records the benchmark model's routing (moe bench's
# random tokens), asks the tuner for a memory cap, then runs the candidates it ranks under
# that cap (../shared/tools/memlimit) with the same workload, and prints predicted against
# measured decode tokens/s. Release build; needs root for memlimit.
#
#   tools/bench-tune.sh [--model FILE] [--memory 800M] [--candidates 6] [--rounds 3] [-n 64]
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/lib.sh
model=.build-bench/bench-qwen3moe.q8_0.gguf memory=800M candidates=6 rounds=3 tokens=64
while [ $# -gt 0 ]; do
  case "$1" in
    --model) model=$2; shift 2 ;;
    --memory) memory=$2; shift 2 ;;
    --candidates) candidates=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    -n) tokens=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -f "$model" ] || { echo "no $model: tools/make-bench-models.sh writes it" >&2; exit 1; }
swift build -c release --product moe >/dev/null
moe=.build/release/moe
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The workload: moe bench's decode (a warm-up run, then 3 timed runs of $tokens tokens).
$moe bench -m "$model" -p 0 -n "$tokens" -r 3 --record-routing "$work/rec.jsonl" >/dev/null
$moe trace tune "$work/rec.jsonl" --memory "$memory" -m "$model" --warmup "$tokens" --json > "$work/tune.json"
python3 - "$work/tune.json" "$candidates" > "$work/picked" <<'PY'
import json, sys
o = json.load(open(sys.argv[1]))
n = int(sys.argv[2])
c = o["candidates"]
# The best ones, then the best of every other policy and read-ahead mode, so the check
# spans the ranking rather than its top alone.
picked, seen = [], set()
for x in c[: max(n // 2, 1)] + c:
    key = (x["policy"], x["prefetch"], x.get("fallback_threshold"))
    if key in seen or len(picked) >= n:
        continue
    seen.add(key)
    picked.append(x)
for x in picked:
    print("%.2f\t%.4f\t%s" % (x["predicted_tokens_per_second"], x["hit_rate"], " ".join(x["flags"])))
PY
echo "model $model, memory $memory, $(date -u +%F), $(git rev-parse --short HEAD)"
python3 -c "import json,sys; o=json.load(open(sys.argv[1])); s=o['split']; print('split:', ', '.join('%s %.1f MiB' % (k, v / 1048576) for k, v in s.items()), '| compute %.2f ms, disk %.2f GB/s' % (o['compute_ms_per_token'], o['disk_bytes_per_second'] / 1e9))" "$work/tune.json"
printf "%-72s %10s %10s %10s %10s %8s\n" flags predicted measured "hit pred" "hit meas" ratio
# Rounds interleave the candidates, so the machine's drift spreads over all of them.
mapfile -t lines < "$work/picked"
for round in $(seq "$rounds"); do
  for i in "${!lines[@]}"; do
    IFS=$'\t' read -r _ _ flags <<< "${lines[$i]}"
    ../shared/tools/memlimit "$memory" $moe bench -m "$model" -p 0 -n "$tokens" -r 3 $flags --json 2>/dev/null \
      | python3 -c 'import json,sys; o=json.load(sys.stdin); print(o["decode_tokens_per_second"], o.get("expert_hit_rate", 0))' >> "$work/measured.$i"
  done
done
for i in "${!lines[@]}"; do
  IFS=$'\t' read -r predicted hit flags <<< "${lines[$i]}"
  measured=$(cut -d' ' -f1 "$work/measured.$i" | median)
  mhit=$(cut -d' ' -f2 "$work/measured.$i" | median)
  printf "%-72s %10s %10s %9.1f%% %9.1f%% %8.2f\n" "$flags" "$predicted" "$measured" "$(python3 -c "print(100*$hit)")" \
    "$(python3 -c "print(100*$mhit)")" "$(python3 -c "print($measured/$predicted)")"
done
