#!/usr/bin/env bash
# Offloaded decoding under a memory cap, against llama.cpp under the same cap, in one run.
#
#   tools/bench-offload.sh [options] [MODEL.gguf]
#     --caps "800M 1200M"  memory caps (page cache included; ../shared/tools/memlimit)
#     --headroom BYTES     cap minus this is our --expert-memory (default 320M: non-expert
#                          weights, KV cache, runtime and the page cache of the code itself)
#     --budget BYTES       a fixed --expert-memory instead (a small one puts the run where the
#                          disk, not the compute, is the limit)
#     -n N                 tokens decoded per run (default 32)
#     --rounds N           alternating rounds of llama-bench and moe bench (default 3)
#     --policy P           --expert-policy (default auto, as moe)
#     --llama-bench P      path to llama-bench (default: $LLAMA_BENCH or the peer build)
#
# Default MODEL: .build-bench/bench-qwen3moe.q8_0.gguf (tools/make-bench-models.sh); a pack of it
# (moe pack) works too, though llama.cpp cannot read one (its column is then nan). Every run
# starts cold (memlimit drops the page cache). For moe it reports decode tokens/s (median of
# 3 runs after a warm-up), expert hit rate, bytes read per token, I/O stall, the disk bound
# that --stats prints, peak RSS (/usr/bin/time -v) next to what the budget promises
# (non-expert weights + --expert-memory + KV + 64 MiB), and the cgroup's peak. Each round also
# times moe with the whole file in RAM and no cap ("resident"): no offloaded run can beat it,
# so the speed to expect is min(disk bound, resident), and "limit/moe" is how far we are from it.
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/lib.sh

caps="800M 1200M"; headroom=320M; fixed_budget=""; gen=32; rounds=3; policy=auto
llama_bench="${LLAMA_BENCH:-}"
model=.build-bench/bench-qwen3moe.q8_0.gguf
while [ $# -gt 0 ]; do
    case "$1" in
        --caps) caps=$2; shift 2 ;;
        --headroom) headroom=$2; shift 2 ;;
        --budget) fixed_budget=$2; shift 2 ;;
        -n) gen=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --policy) policy=$2; shift 2 ;;
        --llama-bench) llama_bench=$2; shift 2 ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) model=$1; shift ;;
    esac
done
if [ -z "$llama_bench" ]; then
    llama_bench=$(peer_tool llama-bench)
fi
[ -x "$llama_bench" ] || { echo "bench-offload: llama-bench not found (set LLAMA_BENCH)" >&2; exit 1; }
[ -e "$model" ] || { echo "bench-offload: no $model (run tools/make-bench-models.sh)" >&2; exit 1; }
memlimit=../shared/tools/memlimit
[ -x "$memlimit" ] || { echo "bench-offload: $memlimit not found" >&2; exit 1; }

echo "== building moe (release)" >&2
swift build -c release --product moe >&2
moe=$PWD/.build/release/moe
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

bytes() { numfmt --from=iec "$1"; }
other=$("$moe" inspect "$model" --json | python3 -c 'import sys,json
d = json.load(sys.stdin)
print(d["pack"]["non_bundle_bytes"] if d.get("pack") else d["experts"]["non_expert_bytes"])')

llama_run() {  # cap -> tg
    "$memlimit" "$1" "$llama_bench" -m "$model" -t 2 -p 0 -n "$gen" -r 1 -o jsonl >"$tmp/llama.out" 2>"$tmp/llama.err" || true
    python3 -c 'import sys,json
for l in open(sys.argv[1]):
    l = l.strip()
    if l.startswith("{"):
        o = json.loads(l)
        if o["n_gen"] > 0: print(o["avg_ts"])' "$tmp/llama.out" | tail -1
}
moe_run() {  # cap budget -> "tg bound hit bytes_per_token stall rss_bytes group_peak"
    "$memlimit" "$1" /usr/bin/time -v "$moe" bench -m "$model" -p 0 -n "$gen" -r 3 --threads 2 \
        --expert-memory "$2" --expert-policy "$policy" --stats --json >"$tmp/moe.out" 2>"$tmp/moe.err" || { cat "$tmp/moe.err" >&2; echo "nan nan nan nan nan 0 0"; return; }
    local rss group
    rss=$(awk -F: '/Maximum resident set size/ { print $2 * 1024 }' "$tmp/moe.err")
    group=$(sed -n 's/^memlimit: peak .* group usage \([0-9]*\) bytes/\1/p' "$tmp/moe.err")
    python3 -c 'import sys,json; o=json.load(open(sys.argv[1]))
print(o["decode_tokens_per_second"], o.get("disk_bound_tokens_per_second","nan"), o.get("expert_hit_rate","nan"),
      o.get("expert_bytes_read_per_token","nan"), o.get("io_stall_ms_per_token","nan"), sys.argv[2], sys.argv[3])' "$tmp/moe.out" "${rss:-0}" "${group:-0}"
}

resident_run() {  # -> tg with every weight in RAM, no cap
    "$moe" bench -m "$model" -p 0 -n "$gen" -r 3 --threads 2 --json 2>/dev/null |
        python3 -c 'import sys,json; print(json.load(sys.stdin)["decode_tokens_per_second"])' || echo nan
}

rows=()
for cap in $caps; do
    budget=$(( $(bytes "$cap") - $(bytes "$headroom") ))
    [ -n "$fixed_budget" ] && budget=$(bytes "$fixed_budget")
    lt=(); mt=(); mb=(); mh=(); mr=(); ms=(); rt=(); rss=0; group=0
    for ((r = 1; r <= rounds; r++)); do
        a=$(llama_run "$cap")
        read -r tg bound hit bpt stall rss group < <(moe_run "$cap" "$budget")
        res=$(resident_run)
        echo "   cap $cap round $r: llama.cpp tg ${a:-nan} | moe tg $tg (disk bound $bound, hit $hit, stall $stall ms/token) | resident $res" >&2
        lt+=("${a:-nan}"); mt+=("$tg"); mb+=("$bound"); mh+=("$hit"); mr+=("$bpt"); ms+=("$stall"); rt+=("$res")
    done
    l=$(printf '%s\n' "${lt[@]}" | median); m=$(printf '%s\n' "${mt[@]}" | median); b=$(printf '%s\n' "${mb[@]}" | median)
    h=$(printf '%s\n' "${mh[@]}" | median); bp=$(printf '%s\n' "${mr[@]}" | median); st=$(printf '%s\n' "${ms[@]}" | median)
    rs=$(printf '%s\n' "${rt[@]}" | median)
    promise=$(( other + budget + 64 * 1048576 ))
    rows+=("$cap $((budget >> 20)) $l $m $(awk -v a="$m" -v b="$l" 'BEGIN{printf "%.1f", a/b}') $b $(awk -v a="$b" -v b="$m" 'BEGIN{printf "%.2f", a/b}') $rs $(awk -v b="$b" -v r="$rs" -v m="$m" 'BEGIN{l = b < r ? b : r; printf "%.2f", l/m}') $(awk -v h="$h" 'BEGIN{printf "%.1f", 100*h}') $((${bp%.*} >> 20)) $st $((rss >> 20)) $((promise >> 20)) $((group >> 20))")
done
printf '\n%s, decode %s tokens, policy %s, %s rounds (tokens/s, medians)\n' "$(basename "$model")" "$gen" "$policy" "$rounds"
printf '%-6s %7s %9s %8s %7s %10s %10s %9s %10s %6s %8s %9s %8s %9s %9s\n' cap "budget" "llama tg" "moe tg" ratio "disk bound" "bound/moe" "resident" "limit/moe" "hit %" "MiB/tok" "stall ms" "RSS MiB" "promise*" "group MiB"
for r in "${rows[@]}"; do
    # shellcheck disable=SC2086
    printf '%-6s %7s %9.2f %8.2f %7s %10.2f %10s %9.2f %10s %6s %8s %9.1f %8s %9s %9s\n' $r
done
echo "* non-expert weights + --expert-memory + 64 MiB; the KV cache the run touched comes on top (a few MiB at this length)"
