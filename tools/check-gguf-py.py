#!/usr/bin/env python3
"""Cross-checks `moe inspect --json` against gguf-py (llama.cpp's own Python reader).

Usage: tools/check-gguf-py.py MOE_BINARY FILE.gguf [...]
Compares, for each file: tensor names, types, shapes, absolute data offsets and sizes,
and every scalar / short-array metadata value. Exits 1 on the first mismatch.
"""
import json, subprocess, sys
try:
    import gguf
except ImportError:
    sys.exit("pip install gguf")

def main():
    moe, files = sys.argv[1], sys.argv[2:]
    bad = 0
    for path in files:
        ours = json.loads(subprocess.check_output([moe, "inspect", "--json", path]))
        r = gguf.GGUFReader(path)
        theirs = {t.name: t for t in r.tensors}
        assert len(ours["tensors"]) == len(r.tensors), (path, "tensor count")
        for t in ours["tensors"]:
            o = theirs[t["name"]]
            if (t["type"].upper() != o.tensor_type.name.upper() or t["shape"] != [int(x) for x in o.shape]
                    or t["offset"] != o.data_offset or t["bytes"] != o.n_bytes):
                print(f"MISMATCH {path} {t} vs {o.tensor_type.name} {list(o.shape)} {o.data_offset} {o.n_bytes}")
                bad += 1
        meta = {**ours["metadata"], **ours["hyperparameters"]}
        for field in r.fields.values():
            if field.name.startswith("GGUF.") or field.name.startswith("tokenizer."):
                continue
            v = field.contents()
            mine = meta.get(field.name)
            if isinstance(v, float):
                ok = mine is not None and abs(mine - v) <= 1e-6 * max(1, abs(v))
            else:
                ok = mine == v
            if not ok:
                print(f"MISMATCH {path} {field.name}: ours {mine!r} gguf-py {v!r}")
                bad += 1
        tok = ours["tokenizer"]
        if tok is not None and "tokenizer.ggml.tokens" in r.fields:
            n = len(r.fields["tokenizer.ggml.tokens"].data)
            if tok["tokens"] != n:
                print(f"MISMATCH {path} token count {tok['tokens']} vs {n}"); bad += 1
        print(f"ok {path}: {len(ours['tensors'])} tensors, {len(r.fields)} fields" if not bad else f"FAIL {path}")
    sys.exit(1 if bad else 0)

main()
