#!/usr/bin/env bash
# Perplexity of one model on one text by moe and by llama.cpp's llama-perplexity, same
# context, and their relative difference:
#   tools/check-perplexity.sh [MODEL] [TEXT] [CTX]
# (defaults: the embedded model, models/heldout.txt, 512). LLAMA_PERPLEXITY names the
# peer binary, or the peer build in /work/peer is used.
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/lib.sh
model="${1:-models/moe-default.q8_0.gguf}"
text="${2:-models/heldout.txt}"
ctx="${3:-512}"
peer="${LLAMA_PERPLEXITY:-$(peer_tool llama-perplexity)}"
[ -x "$peer" ] || { echo "check-perplexity: llama-perplexity not found (set LLAMA_PERPLEXITY)" >&2; exit 1; }
swift build -c release --product moe >&2
ours=$(.build/release/moe perplexity -m "$model" -f "$text" --ctx "$ctx" --json)
theirs_log=$(mktemp)
# Under a pseudo-terminal: with plain redirection llama.cpp's asynchronous logger can exit
# before it writes the final estimate.
script -qfec "'$peer' -m '$model' -f '$text' -c $ctx -b $ctx -t $(nproc)" /dev/null >"$theirs_log" 2>&1 \
    || { tail -20 "$theirs_log" >&2; exit 1; }
python3 - "$ours" "$theirs_log" <<'PY'
import json, re, sys
ours = json.loads(sys.argv[1])
log = re.sub(r"\x1b\[[0-9;]*m", "", open(sys.argv[2], encoding="utf-8", errors="replace").read())
m = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", log)
if not m:
    sys.exit("check-perplexity: no final estimate in llama-perplexity's output")
theirs = float(m.group(1))
chunks = re.search(r"calculating perplexity over (\d+) chunks", log)
print(f"moe:       PPL {ours['perplexity']:.4f} ± {ours['perplexity_error']:.4f} ({ours['chunks']} chunks, {ours['scored_tokens']} tokens scored)")
print(f"llama.cpp: PPL {theirs:.4f} ± {float(m.group(2)):.4f} ({chunks.group(1) if chunks else '?'} chunks)")
print(f"relative difference: {abs(ours['perplexity'] - theirs) / theirs * 100:.3f}%")
PY
rm -f "$theirs_log"
