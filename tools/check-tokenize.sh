#!/usr/bin/env bash
# Runs `moe tokenize --no-bos` on every test text of ../shared/vocab/*.inp and compares
# with llama.cpp's ids in the matching .out file (as llama.cpp's test-tokenizer-0 does:
# texts separated by "\n__ggml_vocab_test__\n", one output line per text).
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED="${MOE_SHARED_DIR:-../shared}"
swift build -c release --product moe >&2
python3 - "$SHARED" <<'PY'
import subprocess, sys, glob, os, tempfile
shared = sys.argv[1]
total = bad = 0
for inp in sorted(glob.glob(f"{shared}/vocab/*.gguf.inp")):
    vocab = inp[:-4]
    texts = open(inp, encoding="utf-8").read().split("\n__ggml_vocab_test__\n")
    outs = open(inp[:-4] + ".out", encoding="utf-8").read().split("\n")
    ok = 0
    for i, text in enumerate(texts):
        if i >= len(outs): break
        with tempfile.NamedTemporaryFile("w", delete=False, encoding="utf-8") as f:
            f.write(text)
        r = subprocess.run([".build/release/moe", "tokenize", "-m", vocab, "--no-bos", "--file", f.name],
                           capture_output=True, text=True)
        os.unlink(f.name)
        total += 1
        if r.returncode == 0 and r.stdout.split() == outs[i].split():
            ok += 1
        else:
            bad += 1
            print(f"MISMATCH {os.path.basename(vocab)} #{i}: {text!r}\n  ours   {r.stdout.strip()} {r.stderr.strip()}\n  theirs {outs[i].strip()}")
    print(f"{os.path.basename(vocab)}: {ok}/{len(texts)}")
print(f"total {total - bad}/{total}")
sys.exit(1 if bad else 0)
PY
