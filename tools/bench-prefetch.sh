#!/usr/bin/env bash
# Read-ahead and precision fallback against on-demand loading, under a memory cap, in one run.
#
#   tools/bench-prefetch.sh [options] [PACK.gguf]
#     --caps "800M 1200M"  memory caps (page cache included; ../shared/tools/memlimit)
#     --headroom BYTES     cap minus this is --expert-memory (default 320M, as bench-offload.sh)
#     --budget BYTES       --expert-memory at every cap instead (e.g. 128M: where the disk is the limit)
#     -n N                 tokens decoded per run (default 32)
#     --rounds N           rounds; each runs every mode once, in turn (default 3)
#     --modes "..."        modes to run (default: ondemand gate adaptive near fallback-q4_0
#                          fallback-q2_K adaptive+q2_K); fallback-TYPE@W and MODE+TYPE@W set
#                          --fallback-threshold W (default 1/k), a further :S --fallback-share S
#                          (fallback-q2_K:0.4, fallback-q2_K@0.2:0.4); a read-ahead mode's /R sets
#                          --gate-learning R (gate/0: the plain cross-layer gate)
#
# Default PACK: .build-bench/bench-qwen3moe.q8_0.lp.pack.gguf, a pack of the benchmark file
# with Q4_0 and Q2_K copies of every expert (made with `moe pack --low-precision q4_0,q2_K`
# when missing). Every mode runs the same pack, so only the mode differs. Reports decode
# tokens/s (median over rounds of the median of 3 runs), the speed-up over on-demand
# loading, expert hit rate, the cross-layer prediction's recall and precision, I/O stall per
# token, bytes read per token and the share of expert uses computed from low-precision copies.
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/lib.sh

caps="800M 1200M"; headroom=320M; budget_given=; gen=32; rounds=3
modes="ondemand gate adaptive near fallback-q4_0 fallback-q2_K adaptive+q2_K"
pack=.build-bench/bench-qwen3moe.q8_0.lp.pack.gguf
while [ $# -gt 0 ]; do
    case "$1" in
        --caps) caps=$2; shift 2 ;;
        --headroom) headroom=$2; shift 2 ;;
        --budget) budget_given=$2; shift 2 ;;
        -n) gen=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --modes) modes=$2; shift 2 ;;
        -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
        *) pack=$1; shift ;;
    esac
done
memlimit=../shared/tools/memlimit
[ -x "$memlimit" ] || { echo "bench-prefetch: $memlimit not found" >&2; exit 1; }

echo "== building moe (release)" >&2
swift build -c release --product moe >&2
moe=$PWD/.build/release/moe
if [ ! -e "$pack" ]; then
    source=.build-bench/bench-qwen3moe.q8_0.gguf
    [ -e "$source" ] || { echo "bench-prefetch: no $source (run tools/make-bench-models.sh)" >&2; exit 1; }
    echo "== packing $source with q4_0 and q2_K copies" >&2
    "$moe" pack "$source" "$pack" --low-precision q4_0,q2_K >&2
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

flags() {  # mode -> moe flags
    local learning=
    if [[ "$1" == */* ]]; then learning="--gate-learning ${1##*/}"; set -- "${1%/*}"; fi
    local spec=${1%:*} share=
    [ "$spec" != "$1" ] && share="--fallback-share ${1##*:}"
    local mode=${spec%@*} threshold=
    [ "$mode" != "$spec" ] && threshold="--fallback-threshold ${spec#*@} $share" || threshold=$share
    case "$mode" in
        ondemand) echo "--prefetch none" ;;
        gate|adaptive|near|path) echo "--prefetch $mode $learning" ;;
        fallback-*) echo "--prefetch none --fallback-type ${mode#fallback-} $threshold" ;;
        *+*) echo "--prefetch ${mode%+*} --fallback-type ${mode#*+} $threshold $learning" ;;
        *) echo "bench-prefetch: unknown mode $1" >&2; exit 1 ;;
    esac
}
run() {  # cap budget mode -> "tg hit recall precision stall bytes_per_token low_share"
    # shellcheck disable=SC2046
    "$memlimit" "$1" "$moe" bench -m "$pack" -p 0 -n "$gen" -r 3 --threads 2 --expert-memory "$2" \
        $(flags "$3") --stats --json >"$tmp/out" 2>"$tmp/err" || { cat "$tmp/err" >&2; echo "nan nan nan nan nan nan nan"; return; }
    python3 -c 'import json,sys; o = json.load(open(sys.argv[1])); g = lambda k: o.get(k, "nan")
print(g("decode_tokens_per_second"), g("expert_hit_rate"), g("prediction_recall"), g("prediction_precision"),
      g("io_stall_ms_per_token"), g("expert_bytes_read_per_token"), g("low_precision_share"))' "$tmp/out"
}

printf '\n%s, decode %s tokens, %s rounds (medians)%s\n' "$(basename "$pack")" "$gen" "$rounds" "${budget_given:+, --expert-memory $budget_given}"
printf '%-6s %-14s %8s %8s %6s %8s %9s %9s %8s %7s\n' cap mode "tg" "vs od" "hit %" "recall %" "precis. %" "stall ms" "MiB/tok" "low %"
for cap in $caps; do
    budget=${budget_given:-$(( $(numfmt --from=iec "$cap") - $(numfmt --from=iec "$headroom") ))}
    declare -A tg=() hit=() rec=() pre=() st=() bpt=() low=()
    for ((r = 1; r <= rounds; r++)); do
        for m in $modes; do
            read -r a b c d e f g < <(run "$cap" "$budget" "$m")
            echo "   cap $cap round $r $m: tg $a hit $b recall $c stall $e low $g" >&2
            tg[$m]+="$a "; hit[$m]+="$b "; rec[$m]+="$c "; pre[$m]+="$d "; st[$m]+="$e "; bpt[$m]+="$f "; low[$m]+="$g "
        done
    done
    med() { tr ' ' '\n' <<<"$1" | grep -v '^$' | grep -v nan | median; }
    base=$(med "${tg[ondemand]:-}")
    for m in $modes; do
        t=$(med "${tg[$m]}")
        printf '%-6s %-14s %8.2f %8s %6.1f %8s %9s %9.1f %8.1f %7s\n' "$cap" "$m" "$t" \
            "$(awk -v a="$t" -v b="$base" 'BEGIN{ if (b > 0) printf "%.2fx", a/b; else print "-" }')" \
            "$(awk -v x="$(med "${hit[$m]}")" 'BEGIN{printf "%.1f", 100*x}')" \
            "$(awk -v x="$(med "${rec[$m]}")" 'BEGIN{ if (x == "nan") print "-"; else printf "%.1f", 100*x}')" \
            "$(awk -v x="$(med "${pre[$m]}")" 'BEGIN{ if (x == "nan") print "-"; else printf "%.1f", 100*x}')" \
            "$(med "${st[$m]}")" "$(awk -v x="$(med "${bpt[$m]}")" 'BEGIN{printf "%.1f", x/1048576}')" \
            "$(awk -v x="$(med "${low[$m]}")" 'BEGIN{ if (x == "nan") print "-"; else printf "%.1f", 100*x}')"
    done
    unset tg hit rec pre st bpt low
done
