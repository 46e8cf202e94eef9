#!/usr/bin/env bash
# Trains the embedded default model from scratch on CPU (about 1.5 hours on 2 idle cores):
#   tools/train/train.sh [WORKDIR] [CPU_MINUTES]
# installs the Debian text packages and the Python packages it needs, builds the corpus,
# the tokenizer and the model, then writes models/moe-default.q8_0.gguf, the F16 twin in
# WORKDIR, the held-out text and the loss plot. Re-running resumes from WORKDIR's files.
set -euo pipefail
cd "$(dirname "$0")/../.."
work="${1:-.build-train}"
cpu_minutes="${2:-160}"
mkdir -p "$work" models

pkgs=(fortunes fortunes-de fortunes-es fortunes-it bible-kjv bible-kjv-text dict-gcide dict-jargon)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
fi
python3 -c "import jax, optax, tokenizers, gguf, matplotlib" 2>/dev/null \
    || python3 -m pip install -q "jax[cpu]" optax tokenizers gguf matplotlib

[ -s "$work/train.jsonl" ] || python3 tools/train/build_corpus.py --out "$work"
[ -s "$work/tokenizer.json" ] || python3 tools/train/train.py tokenizer --corpus "$work/train.jsonl" --out "$work/tokenizer.json"
python3 tools/train/train.py train --corpus "$work/train.jsonl" --tokenizer "$work/tokenizer.json" \
    --workdir "$work" --cpu-minutes "$cpu_minutes"
python3 tools/train/train.py export --checkpoint "$work/checkpoint.npz" --tokenizer "$work/tokenizer.json" \
    --out models/moe-default.q8_0.gguf --type q8_0
python3 tools/train/train.py export --checkpoint "$work/checkpoint.npz" --tokenizer "$work/tokenizer.json" \
    --out "$work/moe-default.f16.gguf" --type f16
python3 tools/train/train.py plot --log "$work/loss.csv" --out models/moe-default-loss.png
cp "$work/heldout.txt" models/heldout.txt
cp "$work/stats.json" models/moe-default-corpus.json
