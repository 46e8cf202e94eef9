#!/usr/bin/env bash
# Writes the engine's benchmark model with our GGUF writer: qwen3moe, hidden 1024,
# 16 layers, 64 experts of width 512, top 8, the 32000-piece llama tokenizer
# (~1.6 B parameters), as F16, then Q8_0, Q4_K_M and Q2_K with llama.cpp's llama-quantize
# (set LLAMA_QUANTIZE, or the peer build is used). Files go to .build-bench/.
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/lib.sh
SHARED="${MOE_SHARED_DIR:-../shared}"
quantize="${LLAMA_QUANTIZE:-$(peer_tool llama-quantize)}"
mkdir -p .build-bench
swift build -c release --product make-bench-model >&2
f16=.build-bench/bench-qwen3moe.f16.gguf
[ -e "$f16" ] || .build/release/make-bench-model "$f16" --vocab-from "$SHARED/vocab/ggml-vocab-llama-spm.gguf"
[ -x "$quantize" ] || { echo "make-bench-models: llama-quantize not found (set LLAMA_QUANTIZE)" >&2; exit 1; }
for t in Q8_0 Q4_K_M Q2_K; do
    out=.build-bench/bench-qwen3moe.$(echo "$t" | tr 'A-Z' 'a-z').gguf
    [ -e "$out" ] || "$quantize" "$f16" "$out" "$t" 2
done
ls -la .build-bench/bench-qwen3moe.*
