#!/usr/bin/env bash
# Engine speed against llama.cpp on the same files, thread count and machine, in one run.
#
#   tools/bench-engine.sh [options] [MODEL.gguf ...]
#     --threads N      compute threads for both (default 2)
#     -p N / -n N      prompt tokens (prefill) and generated tokens (decode) (default 128 / 32)
#     --rounds N       alternating rounds of llama-bench and moe bench (default 3)
#     --llama-bench P  path to llama-bench (default: $LLAMA_BENCH, or the peer build in
#                      /work/peer/llama_cpp_python-*/vendor/llama.cpp/build/bin)
#
# Without MODEL arguments it benchmarks the qwen3moe benchmark files in .build-bench/
# (make them with tools/make-bench-models.sh). Each round runs llama-bench (-r 3) and
# `moe bench` (-r 3) once each, alternating so that noise hits both; the table shows the
# median over rounds of each tool's median, and our ratio to llama.cpp.
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/lib.sh

threads=2; prompt=128; gen=32; rounds=3
llama_bench="${LLAMA_BENCH:-}"
models=()
while [ $# -gt 0 ]; do
    case "$1" in
        --threads) threads=$2; shift 2 ;;
        -p) prompt=$2; shift 2 ;;
        -n) gen=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --llama-bench) llama_bench=$2; shift 2 ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) models+=("$1"); shift ;;
    esac
done
if [ -z "$llama_bench" ]; then
    llama_bench=$(peer_tool llama-bench)
fi
[ -x "$llama_bench" ] || { echo "bench-engine: llama-bench not found (set LLAMA_BENCH)" >&2; exit 1; }
if [ ${#models[@]} -eq 0 ]; then
    for f in .build-bench/bench-qwen3moe.q8_0.gguf .build-bench/bench-qwen3moe.q4_k_m.gguf .build-bench/bench-qwen3moe.q2_k.gguf; do
        [ -e "$f" ] && models+=("$f")
    done
fi
[ ${#models[@]} -gt 0 ] || { echo "bench-engine: no model files (run tools/make-bench-models.sh)" >&2; exit 1; }

echo "== building moe (release)" >&2
swift build -c release --product moe >&2
moe=.build/release/moe


# llama-bench -o jsonl prints one object per test; avg_ts is the mean tokens/s over -r runs.
llama_run() {  # model -> "pp tg"
    local out pp tg
    out=$("$llama_bench" -m "$1" -t "$threads" -p "$prompt" -n "$gen" -r 3 -o jsonl 2>/dev/null)
    pp=$(echo "$out" | python3 -c 'import sys,json
for l in sys.stdin:
    o=json.loads(l)
    if o["n_prompt"]>0 and o["n_gen"]==0: print(o["avg_ts"])')
    tg=$(echo "$out" | python3 -c 'import sys,json
for l in sys.stdin:
    o=json.loads(l)
    if o["n_gen"]>0 and o["n_prompt"]==0: print(o["avg_ts"])')
    echo "${pp:-nan} ${tg:-nan}"
}
moe_run() {  # model -> "pp tg rss"
    "$moe" bench -m "$1" --threads "$threads" -p "$prompt" -n "$gen" -r 3 --json \
      | python3 -c 'import sys,json; o=json.load(sys.stdin); print(o.get("prefill_tokens_per_second","nan"), o.get("decode_tokens_per_second","nan"), o["peak_rss_bytes"])'
}

rows=()
for m in "${models[@]}"; do
    lpp=(); ltg=(); opp=(); otg=(); rss=0
    for ((r = 1; r <= rounds; r++)); do
        read -r a b < <(llama_run "$m")
        read -r c d e < <(moe_run "$m")
        echo "   $(basename "$m") round $r: llama.cpp pp $a tg $b | moe pp $c tg $d" >&2
        lpp+=("$a"); ltg+=("$b"); opp+=("$c"); otg+=("$d"); rss=$e
    done
    mlpp=$(printf '%s\n' "${lpp[@]}" | median); mltg=$(printf '%s\n' "${ltg[@]}" | median)
    mopp=$(printf '%s\n' "${opp[@]}" | median); motg=$(printf '%s\n' "${otg[@]}" | median)
    rows+=("$(basename "$m") $mlpp $mopp $(awk -v a="$mopp" -v b="$mlpp" 'BEGIN{printf "%.2f", a/b}') $mltg $motg $(awk -v a="$motg" -v b="$mltg" 'BEGIN{printf "%.2f", a/b}') $((rss >> 20))")
done
printf '\nthreads %s, prefill %s tokens, decode %s tokens, %s rounds (tokens/s, medians)\n' "$threads" "$prompt" "$gen" "$rounds"
printf '%-28s %10s %10s %6s %10s %10s %6s %9s\n' model "llama pp" "moe pp" ratio "llama tg" "moe tg" ratio "moe MiB"
for r in "${rows[@]}"; do
    # shellcheck disable=SC2086
    printf '%-28s %10.2f %10.2f %6s %10.2f %10.2f %6s %9s\n' $r
done
