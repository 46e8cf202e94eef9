#!/usr/bin/env bash
# Byte-identity of `moe logits` between two builds (a refactor's "before" and "after"):
# every shared model (models/ and next/models/ where the build loads them), resident and
# offloaded at two expert budgets, the reference's 32 tokens then 8 greedy ones; prints one
# md5 line per run and fails on any difference.
#   tools/check-logits-identity.sh OLD_MOE NEW_MOE [BUDGETS]   (BUDGETS default "1M 4M")
set -euo pipefail
old=${1:?old moe binary}
new=${2:?new moe binary}
budgets=${3:-"1M 4M"}
shared=${MOE_SHARED_DIR:-"$(cd "$(dirname "$0")/.." && pwd)/../shared"}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
same=0 differ=0 skipped=0
for file in "$shared"/models/*.gguf "$shared"/next/models/*.gguf; do
  stem=$(basename "$file" .gguf)
  ref="$shared/reference/$stem.json"
  [ -f "$ref" ] || ref="$shared/next/reference/$stem.json"
  [ -f "$ref" ] || continue
  tokens=$(python3 -c "import json,sys; print(' '.join(map(str, json.load(open(sys.argv[1]))['tokens'])))" "$ref")
  runs=("resident")
  if "$old" inspect "$file" --json 2>/dev/null | python3 -c "import json,sys; sys.exit(0 if json.load(sys.stdin).get('experts') else 1)"; then
    for b in $budgets; do runs+=("$b"); done
  fi
  for run in "${runs[@]}"; do
    flags=(--threads 2)
    [ "$run" = resident ] || flags+=(--expert-memory "$run")
    o=$("$old" logits -m "$file" --tokens "$tokens" --greedy 8 "${flags[@]}" 2>"$tmp/old.err" | md5sum | cut -d' ' -f1) || true
    n=$("$new" logits -m "$file" --tokens "$tokens" --greedy 8 "${flags[@]}" 2>"$tmp/new.err" | md5sum | cut -d' ' -f1) || true
    if grep -q "^error" "$tmp/old.err"; then
      if grep -q "^error" "$tmp/new.err" && [ "$(grep '^error' "$tmp/old.err")" = "$(grep '^error' "$tmp/new.err")" ]; then
        echo "skip    $stem $run (both: $(grep -m1 '^error' "$tmp/old.err"))"; skipped=$((skipped + 1)); continue
      fi
    fi
    if [ "$o" = "$n" ]; then
      echo "same    $o  $stem $run"; same=$((same + 1))
    else
      echo "DIFFER  $o $n  $stem $run"; differ=$((differ + 1))
    fi
  done
done
echo "$same same, $differ differ, $skipped skipped (both builds refuse the file)"
[ "$differ" -eq 0 ]
