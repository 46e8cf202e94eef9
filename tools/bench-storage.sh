#!/usr/bin/env bash
# Storage throughput: our backend (storage-bench, release build) against fio on the same
# file, block sizes and queue depth, O_DIRECT, page cache dropped before every run.
#
#   tools/bench-storage.sh [options]
#     --size BYTES     test file size (default 4G; K/M/G suffixes)
#     --file PATH      test file (default: .build-bench/bench.dat, or $TMPDIR/moe-bench.dat
#                      when TMPDIR is set); created with random data if missing or short
#     --qd N           requests in flight, for fio and ours alike (default 8)
#     --runs N         runs of each tool per case; the table shows medians (default 3)
#     --backend B      io_uring | pread | auto (default io_uring)
#     --scratch PATH   SwiftPM build folder (default .build)
#     --ours-args "A"  extra storage-bench options, e.g. "--no-hugepages" to give our
#                      buffers the same 4 KiB pages fio's malloc'd buffers get
#     --keep           keep the test file afterwards (default: keep; --remove deletes it)
#
# Runs alternate fio/ours so slow phases of a shared disk hit both alike. Needs root to
# drop the page cache (it warns and goes on without). Prints a table of medians:
#   pattern  bs  fio GB/s  ours GB/s  ratio      (GB = 10^9 bytes)
set -euo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)

size=4G
file=""
qd=8
runs=3
backend=io_uring
scratch=.build
remove=0
ours_args=""
while [ $# -gt 0 ]; do
    case "$1" in
        --size) size=$2; shift 2 ;;
        --file) file=$2; shift 2 ;;
        --qd) qd=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        --backend) backend=$2; shift 2 ;;
        --scratch) scratch=$2; shift 2 ;;
        --ours-args) ours_args=$2; shift 2 ;;
        --keep) remove=0; shift ;;
        --remove) remove=1; shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "bench-storage: unknown argument $1" >&2; exit 2 ;;
    esac
done

to_bytes() {
    local v=$1 n
    case "$v" in
        *[Gg]) n=${v%?}; echo $((n << 30)) ;;
        *[Mm]) n=${v%?}; echo $((n << 20)) ;;
        *[Kk]) n=${v%?}; echo $((n << 10)) ;;
        *) echo "$v" ;;
    esac
}
bytes=$(to_bytes "$size")

if [ -z "$file" ]; then
    if [ -n "${TMPDIR:-}" ]; then file="$TMPDIR/moe-bench.dat"; else mkdir -p "$root/.build-bench"; file="$root/.build-bench/bench.dat"; fi
fi

command -v fio >/dev/null || { echo "bench-storage: fio is not installed (apt-get install fio)" >&2; exit 1; }

echo "== building storage-bench (release)" >&2
swift build -c release --product storage-bench --scratch-path "$scratch" >&2
bench="$scratch/release/storage-bench"
[ -x "$bench" ] || { echo "bench-storage: $bench not built" >&2; exit 1; }

current=$(stat -c %s "$file" 2>/dev/null || echo 0)
if [ "$current" -lt "$bytes" ]; then
    echo "== writing $bytes random bytes to $file" >&2
    rm -f "$file"
    # fio fills buffers with random data (refill: every block different), O_DIRECT.
    fio --name=create --filename="$file" --size="$bytes" --rw=write --bs=4M --direct=1 \
        --ioengine=psync --refill_buffers --end_fsync=1 >/dev/null \
      || dd if=/dev/urandom of="$file" bs=4M count=$((bytes >> 22)) oflag=direct status=none
fi

can_drop=1
if [ "$(id -u)" != 0 ] || ! [ -w /proc/sys/vm/drop_caches ]; then
    can_drop=0
    echo "bench-storage: not root: cannot drop the page cache (O_DIRECT reads bypass it anyway)" >&2
fi
drop_caches() {
    sync
    if [ "$can_drop" = 1 ]; then echo 3 > /proc/sys/vm/drop_caches; fi
}

# fio: terse field 7 is read bandwidth in KiB/s.
run_fio() {  # pattern bs
    local rw=read
    [ "$1" = rand ] && rw=randread
    drop_caches
    fio --name=bench --filename="$file" --size="$bytes" --ioengine=io_uring --direct=1 \
        --iodepth="$qd" --bs="$2" --rw="$rw" --minimal \
      | awk -F';' '{ printf "%.3f\n", $7 * 1024 / 1e9 }'
}

run_ours() {  # pattern bs
    drop_caches
    # shellcheck disable=SC2086
    "$bench" "$file" "$2" "$1" "$qd" "$backend" --limit "$bytes" $ours_args \
      | sed -n 's/.*GBps=\([0-9.]*\).*/\1/p'
}

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%.3f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

echo "== file $file ($bytes bytes), qd $qd, $runs runs each, backend $backend $ours_args" >&2
results=()
for pattern in seq rand; do
    for bs in 1M 4M; do
        fio_runs=""
        our_runs=""
        for ((i = 1; i <= runs; i++)); do
            f=$(run_fio "$pattern" "$bs")
            o=$(run_ours "$pattern" "$bs")
            echo "   $pattern $bs run $i: fio $f GB/s, ours $o GB/s" >&2
            fio_runs="$fio_runs $f"
            our_runs="$our_runs $o"
        done
        fm=$(echo "$fio_runs" | median)
        om=$(echo "$our_runs" | median)
        ratio=$(awk -v a="$om" -v b="$fm" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')
        results+=("$pattern $bs $fm $om $ratio")
    done
done

printf '\n%-8s %-4s %10s %10s %7s\n' pattern bs "fio GB/s" "ours GB/s" ratio
for r in "${results[@]}"; do
    # shellcheck disable=SC2086
    printf '%-8s %-4s %10s %10s %7s\n' $r
done

if [ "$remove" = 1 ]; then rm -f "$file"; fi
