#!/usr/bin/env bash
# moe serve against llama-server, in one run: C concurrent clients, each sending distinct
# 64-token prompts (token ids) and streaming 64 generated tokens (ignore_eos, greedy), on
# the benchmark MoE file, 2 threads each, both servers allowing 8 sequences at once.
#
#   tools/bench-server.sh [options] [MODEL.gguf]
#     --clients "1 4 8"   concurrent clients
#     --rounds N          rounds per client count, resident (default 3; medians are quoted)
#     --cap-rounds N      rounds under the cap (default 1: llama-server is slow there)
#     --requests N        requests each client sends, one after another (default 2)
#     --cap BYTES         the memory cap of the second part (default 800M; "none" skips it)
#     --llama-server P    path to llama-server (default: $LLAMA_SERVER or the peer build)
#
# Resident: both servers hold the file in memory (llama-server maps it, the page cache keeps
# it). Capped: each server runs in its own cgroup of BYTES (../shared/tools/memlimit, page
# cache included, caches dropped first); moe serve gets no expert flag and derives its
# expert budget from the cgroup limit, as it would under systemd's MemoryMax, llama-server
# maps the file. Figures: aggregate generated tokens/s over the run's wall time, time to
# first token and inter-token latency p50/p99 (ms), from tools/bench-server-client.py.
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/lib.sh

clients="1 4 8"; rounds=3; cap_rounds=1; requests=2; cap=800M
llama_server="${LLAMA_SERVER:-}"
model=.build-bench/bench-qwen3moe.q8_0.gguf
while [ $# -gt 0 ]; do
    case "$1" in
        --clients) clients=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --cap-rounds) cap_rounds=$2; shift 2 ;;
        --requests) requests=$2; shift 2 ;;
        --cap) cap=$2; shift 2 ;;
        --llama-server) llama_server=$2; shift 2 ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) model=$1; shift ;;
    esac
done
[ -n "$llama_server" ] || llama_server=$(peer_tool llama-server)
[ -x "$llama_server" ] || { echo "bench-server: llama-server not found (set LLAMA_SERVER)" >&2; exit 1; }
[ -e "$model" ] || { echo "bench-server: no $model (run tools/make-bench-models.sh)" >&2; exit 1; }
memlimit=../shared/tools/memlimit

echo "== building moe (release)" >&2
swift build -c release --product moe >&2
moe=$PWD/.build/release/moe
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
maxclients=$(printf '%s\n' $clients | sort -n | tail -1)
parallel=$(( maxclients > 8 ? maxclients : 8 ))

wait_healthy() {  # port log
    for _ in $(seq 1200); do
        curl -sf "http://127.0.0.1:$1/health" >/dev/null && return 0
        sleep 0.5
    done
    echo "bench-server: the server on port $1 did not become healthy:" >&2; tail -5 "$2" >&2; return 1
}

# start NAME PORT CAP: starts one server (under the cap unless CAP is "resident").
start() {
    local name=$1 port=$2 limit=$3 prefix=()
    [ "$limit" != resident ] && prefix=("$memlimit" "$limit")
    if [ "$name" = llama ]; then
        "${prefix[@]}" "$llama_server" -m "$model" -t 2 -c $((256 * parallel)) --parallel "$parallel" --port "$port" \
            >"$tmp/$name.log" 2>&1 &
    else
        "${prefix[@]}" "$moe" serve -m "$model" --threads 2 --ctx 256 --parallel "$parallel" --port "$port" \
            >"$tmp/$name.log" 2>&1 &
    fi
    pids+=($!)
    wait_healthy "$port" "$tmp/$name.log"
}

stop_all() {
    for p in "${pids[@]}"; do
        # Under memlimit the server is its child: signal it, so that memlimit prints the peak.
        if pgrep -P "$p" >/dev/null; then pkill -TERM -P "$p" || true; else kill -TERM "$p" 2>/dev/null || true; fi
    done
    wait 2>/dev/null || true
    pids=()
}

seed=0
client() {  # port clients seed -> json; every run gets prompts no run before it had
    python3 tools/bench-server-client.py "http://127.0.0.1:$1" "$2" --requests "$requests" --seed "$3"
}

field() { python3 -c 'import sys,json; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }

rows=()
modes="resident"
[ "$cap" != none ] && modes="resident $cap"
for mode in $modes; do
    n=$rounds
    [ "$mode" != resident ] && n=$cap_rounds
    echo "== $mode: starting llama-server and moe serve" >&2
    start llama 18201 "$mode"
    start moe 18202 "$mode"
    client 18201 1 999 >/dev/null; client 18202 1 999 >/dev/null   # warm-up
    for c in $clients; do
        declare -A got=()
        for ((r = 1; r <= n; r++)); do
            seed=$((seed + 1))
            # Both servers get the same prompts, new to both (no prefix-cache hits).
            l=$(client 18201 "$c" "$seed"); m=$(client 18202 "$c" "$seed")
            echo "   $mode, $c clients, round $r: llama $(field "$l" tokens_per_s) tok/s, moe $(field "$m" tokens_per_s) tok/s" >&2
            for k in tokens_per_s ttft_p50_ms ttft_p99_ms itl_p50_ms itl_p99_ms; do
                got[l_$k]+="$(field "$l" $k) "; got[m_$k]+="$(field "$m" $k) "
            done
        done
        med() { printf '%s\n' ${got[$1]} | median; }
        rows+=("$mode $c $(med l_tokens_per_s) $(med m_tokens_per_s) $(awk -v a="$(med m_tokens_per_s)" -v b="$(med l_tokens_per_s)" 'BEGIN{printf "%.2f", a/b}') $(med l_ttft_p50_ms) $(med m_ttft_p50_ms) $(med l_ttft_p99_ms) $(med m_ttft_p99_ms) $(med l_itl_p50_ms) $(med m_itl_p50_ms) $(med l_itl_p99_ms) $(med m_itl_p99_ms) $n")
        unset got
    done
    stop_all
    for name in llama moe; do
        peak=$(sed -n 's/^memlimit: peak .* group usage \([0-9]*\) bytes/\1/p' "$tmp/$name.log" | tail -1)
        [ -n "$peak" ] && echo "   $mode: $name's cgroup peak $((peak >> 20)) MiB" >&2
    done
    grep -h "experts:" "$tmp/moe.log" | head -1 >&2 || true
done

printf '\n%s, %s requests per client, 64-token prompts, 64 tokens each (medians of the rounds)\n' "$(basename "$model")" "$requests"
printf '%-9s %7s %9s %8s %6s %16s %16s %16s %16s %6s\n' memory clients "llama t/s" "moe t/s" ratio "TTFT p50 l/moe" "TTFT p99 l/moe" "ITL p50 l/moe" "ITL p99 l/moe" rounds
for r in "${rows[@]}"; do
    set -- $r
    printf '%-9s %7s %9.1f %8.1f %6s %7.0f /%7.0f %7.0f /%7.0f %7.1f /%7.1f %7.1f /%7.1f %6s\n' "$@"
done
