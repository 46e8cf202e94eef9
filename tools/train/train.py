#!/usr/bin/env python3
"""Trains moe's default model: a small qwen3moe (8 experts, top-2) on CPU with JAX.

Subcommands:
  tokenizer  train the byte-level BPE vocabulary (qwen2 pre-tokenizer) on the corpus
  train      train the model for a time budget, checkpointing as it goes
  export     write the checkpoint as GGUF (Q8_0 or F16) with tokenizer and chat template
  plot       draw the training-loss plot from the log

The model is computed exactly as llama.cpp's qwen3moe graph computes it (RMSNorm, per-head
Q/K RMSNorm, NeoX RoPE, GQA, softmax router with normalized top-k weights, SwiGLU experts),
so the exported GGUF runs unchanged in moe and in llama.cpp.
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# llama.cpp's `qwen2` pre-tokenizer; the GGUF says tokenizer.ggml.pre = "qwen2".
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

CONFIG = dict(
    vocab=4096, dim=256, layers=6, heads=4, kv_heads=2, head_dim=64,
    experts=8, experts_used=2, expert_ff=384, context=512,
    rope_base=10000.0, rms_eps=1e-6,
)


def render_chat(messages):
    return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)


def corpus_texts(path):
    for line in open(path, encoding="utf-8"):
        d = json.loads(line)
        yield d["text"] if "text" in d else render_chat(d["messages"])


# --------------------------------------------------------------------------- tokenizer

def cmd_tokenizer(args):
    from tokenizers import Tokenizer, Regex, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=CONFIG["vocab"], min_frequency=2, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus_texts(args.corpus), trainer)
    tok.save(args.out)
    print(f"tokenizer: {tok.get_vocab_size()} pieces -> {args.out}")


def encode_corpus(corpus, tokenizer_path, cache):
    """The corpus as one id stream, documents separated by <|endoftext|>."""
    if os.path.exists(cache):
        return np.load(cache)
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(tokenizer_path)
    eot = tok.token_to_id("<|endoftext|>")
    texts = list(corpus_texts(corpus))
    ids = []
    for i in range(0, len(texts), 4096):
        for enc in tok.encode_batch(texts[i:i + 4096]):
            ids.extend(enc.ids)
            ids.append(eot)
    arr = np.asarray(ids, dtype=np.int32)
    np.save(cache, arr)
    return arr


# --------------------------------------------------------------------------- model

def init_params(key, c):
    import jax
    import jax.numpy as jnp
    d, h, kv, hd, e, f, L = c["dim"], c["heads"], c["kv_heads"], c["head_dim"], c["experts"], c["expert_ff"], c["layers"]
    keys = iter(jax.random.split(key, 16 * L + 4))
    nrm = lambda shape, std: (jax.random.normal(next(keys), shape, jnp.float32) * std)
    out_std = 0.02 / math.sqrt(2 * L)
    params = {"token_embd": nrm((c["vocab"], d), 0.02), "output_norm": jnp.ones((d,)),
              "output": nrm((c["vocab"], d), 0.02), "layers": []}
    for _ in range(L):
        params["layers"].append({
            "attn_norm": jnp.ones((d,)), "q": nrm((h * hd, d), 0.02), "k": nrm((kv * hd, d), 0.02),
            "v": nrm((kv * hd, d), 0.02), "o": nrm((d, h * hd), out_std),
            "q_norm": jnp.ones((hd,)), "k_norm": jnp.ones((hd,)), "ffn_norm": jnp.ones((d,)),
            "router": nrm((e, d), 0.02), "gate": nrm((e, f, d), 0.02), "up": nrm((e, f, d), 0.02),
            "down": nrm((e, d, f), out_std),
        })
    return params


def forward(params, tokens, c, capacity_factor):
    """Logits [B, T, V] and the auxiliary (load-balance, router z) losses."""
    import jax
    import jax.numpy as jnp
    B, T = tokens.shape
    d, H, KV, hd, E, K = c["dim"], c["heads"], c["kv_heads"], c["head_dim"], c["experts"], c["experts_used"]
    eps = c["rms_eps"]

    def rms(x, w):
        return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + eps) * w

    # NeoX RoPE: dimension i pairs with i + hd/2.
    inv = c["rope_base"] ** (-jnp.arange(0, hd // 2, dtype=jnp.float32) * 2 / hd)
    ang = jnp.arange(T, dtype=jnp.float32)[:, None] * inv[None, :]
    cos, sin = jnp.cos(ang)[None, :, None, :], jnp.sin(ang)[None, :, None, :]

    def rope(x):
        x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
        return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)

    mask = jnp.tril(jnp.ones((T, T), bool))
    x = params["token_embd"][tokens]
    N = B * T
    C = int(math.ceil(capacity_factor * N * K / E))
    aux = 0.0
    zloss = 0.0
    for p in params["layers"]:
        h = rms(x, p["attn_norm"])
        q = rope(rms((h @ p["q"].T).reshape(B, T, H, hd), p["q_norm"]))
        k = rope(rms((h @ p["k"].T).reshape(B, T, KV, hd), p["k_norm"]))
        v = (h @ p["v"].T).reshape(B, T, KV, hd)
        k = jnp.repeat(k, H // KV, axis=2)
        v = jnp.repeat(v, H // KV, axis=2)
        s = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(hd)
        s = jnp.where(mask[None, None], s, -1e30)
        a = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(s, axis=-1), v).reshape(B, T, H * hd)
        x = x + a @ p["o"].T

        h = rms(x, p["ffn_norm"]).reshape(N, d)
        logits = h @ p["router"].T
        probs = jax.nn.softmax(logits, axis=-1)
        topv, topi = jax.lax.top_k(probs, K)
        w = topv / jnp.sum(topv, axis=-1, keepdims=True)
        flat_e = topi.reshape(-1)
        onehot = jax.nn.one_hot(flat_e, E, dtype=jnp.int32)
        pos = jnp.sum((jnp.cumsum(onehot, axis=0) - 1) * onehot, axis=-1)
        keep = pos < C
        slot = jnp.where(keep, flat_e * C + pos, E * C)
        token_of = jnp.full((E * C + 1,), N, jnp.int32).at[slot].set(jnp.repeat(jnp.arange(N, dtype=jnp.int32), K))
        hp = jnp.concatenate([h, jnp.zeros((1, d), h.dtype)])
        xe = hp[token_of[: E * C]].reshape(E, C, d)
        g = jnp.einsum("ecd,efd->ecf", xe, p["gate"])
        u = jnp.einsum("ecd,efd->ecf", xe, p["up"])
        y = jnp.einsum("ecf,edf->ecd", jax.nn.silu(g) * u, p["down"]).reshape(E * C, d)
        y = jnp.concatenate([y, jnp.zeros((1, d), y.dtype)])
        out = (y[slot] * (w.reshape(-1) * keep)[:, None]).reshape(N, K, d).sum(axis=1)
        x = x + out.reshape(B, T, d)
        frac = jnp.mean(onehot.astype(jnp.float32), axis=0)
        aux = aux + E * jnp.sum(frac * jnp.mean(probs, axis=0))
        zloss = zloss + jnp.mean(jax.nn.logsumexp(logits, axis=-1) ** 2)
    x = rms(x, params["output_norm"])
    return x @ params["output"].T, aux / c["layers"], zloss / c["layers"]


def cmd_train(args):
    import jax
    import jax.numpy as jnp
    import optax
    c = CONFIG
    data = encode_corpus(args.corpus, args.tokenizer, os.path.join(args.workdir, "ids.npy"))
    print(f"corpus: {len(data) / 1e6:.2f} M tokens", flush=True)
    T = c["context"]
    rng = np.random.default_rng(args.seed)

    opt = optax.chain(optax.clip_by_global_norm(1.0),
                      optax.inject_hyperparams(optax.adamw)(learning_rate=args.lr, b1=0.9, b2=0.95,
                                                            weight_decay=0.1))

    def loss_fn(params, batch, cf):
        logits, aux, z = forward(params, batch[:, :-1], c, cf)
        logp = jax.nn.log_softmax(logits, axis=-1)
        nll = -jnp.mean(jnp.take_along_axis(logp, batch[:, 1:, None], axis=-1))
        return nll + 0.01 * aux + 0.001 * z, (nll, aux)

    @jax.jit
    def step(params, state, batch, lr):
        state[1].hyperparams["learning_rate"] = lr
        (loss, (nll, aux)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, 1.25)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, nll, aux

    ckpt = os.path.join(args.workdir, "checkpoint.npz")
    log_path = os.path.join(args.workdir, "loss.csv")
    params = init_params(jax.random.PRNGKey(args.seed), c)
    state = opt.init(params)
    start_step, spent = 0, 0.0
    if os.path.exists(ckpt) and not args.fresh:
        params, start_step, spent = load_checkpoint(ckpt, params)
        state = opt.init(params)  # moments restart; rare (only after an interruption)
        print(f"resumed at step {start_step} ({spent / 60:.1f} min spent)", flush=True)
    else:
        open(log_path, "w").write("step,tokens,cpu_minutes,loss,aux,lr\n")
    # The budget is CPU time of this process (all its threads), not wall time, so that the
    # schedule and the result do not depend on what else the machine was doing.
    budget = args.cpu_minutes * 60
    t0 = time.process_time() - spent
    wall0 = time.time()
    last_save = time.time()
    step_i = start_step
    while True:
        elapsed = time.process_time() - t0
        if elapsed >= budget:
            break
        frac = elapsed / budget
        # Warm up at the start and again after a resume (the optimizer moments start afresh).
        warm = min(1.0, (step_i - start_step + 1) / (args.warmup if start_step == 0 else 20))
        lr = args.lr * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        starts = rng.integers(0, len(data) - T - 1, size=args.batch)
        batch = jnp.asarray(np.stack([data[s:s + T + 1] for s in starts]))
        params, state, nll, aux = step(params, state, batch, jnp.asarray(lr, jnp.float32))
        step_i += 1
        if step_i % 10 == 0 or step_i == start_step + 1:
            nll, aux = float(nll), float(aux)
            minutes = (time.process_time() - t0) / 60
            with open(log_path, "a") as f:
                f.write(f"{step_i},{step_i * args.batch * T},{minutes:.2f},{nll:.4f},{aux:.4f},{lr:.6f}\n")
            print(f"step {step_i:6d}  {minutes:6.1f} cpu-min  {(time.time() - wall0) / 60:6.1f} wall-min  "
                  f"loss {nll:.3f}  balance {aux:.3f}  lr {lr:.5f}", flush=True)
        if time.time() - last_save > 300:
            save_checkpoint(ckpt, params, step_i, time.process_time() - t0)
            last_save = time.time()
    save_checkpoint(ckpt, params, step_i, time.process_time() - t0)
    print(f"done: {step_i} steps, {step_i * args.batch * T / 1e6:.1f} M tokens", flush=True)


def flatten(params):
    flat = {k: np.asarray(v) for k, v in params.items() if k != "layers"}
    for i, layer in enumerate(params["layers"]):
        for k, v in layer.items():
            flat[f"blk.{i}.{k}"] = np.asarray(v)
    return flat


def save_checkpoint(path, params, step, spent):
    tmp = path + ".tmp.npz"
    np.savez(tmp, __step=np.asarray(step), __spent=np.asarray(spent), **flatten(params))
    os.replace(tmp, path)


def load_checkpoint(path, like):
    import jax.numpy as jnp
    z = np.load(path)
    params = {k: jnp.asarray(z[k]) for k in like if k != "layers"}
    params["layers"] = [{k: jnp.asarray(z[f"blk.{i}.{k}"]) for k in layer} for i, layer in enumerate(like["layers"])]
    return params, int(z["__step"]), float(z["__spent"])


# --------------------------------------------------------------------------- export

def cmd_export(args):
    import gguf
    c = CONFIG
    z = np.load(args.checkpoint)
    tok = json.load(open(args.tokenizer, encoding="utf-8"))
    vocab = tok["model"]["vocab"]
    tokens = [None] * len(vocab)
    for piece, i in vocab.items():
        tokens[i] = piece
    for added in tok["added_tokens"]:
        tokens[added["id"]] = added["content"]
    assert None not in tokens and len(tokens) == c["vocab"], "vocabulary has holes"
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    special = {t: tokens.index(t) for t in SPECIALS}

    quant = gguf.GGMLQuantizationType.Q8_0 if args.type == "q8_0" else gguf.GGMLQuantizationType.F16
    w = gguf.GGUFWriter(args.out, "qwen3moe")
    w.add_name("moe-default")
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if args.type == "q8_0" else gguf.LlamaFileType.MOSTLY_F16)
    w.add_context_length(c["context"])
    w.add_embedding_length(c["dim"])
    w.add_block_count(c["layers"])
    w.add_feed_forward_length(c["expert_ff"])
    w.add_head_count(c["heads"])
    w.add_head_count_kv(c["kv_heads"])
    w.add_key_length(c["head_dim"])
    w.add_value_length(c["head_dim"])
    w.add_rope_freq_base(c["rope_base"])
    w.add_layer_norm_rms_eps(c["rms_eps"])
    w.add_expert_count(c["experts"])
    w.add_expert_used_count(c["experts_used"])
    w.add_expert_feed_forward_length(c["expert_ff"])
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL for t in tokens])
    w.add_token_merges(merges)
    w.add_bos_token_id(special["<|endoftext|>"])
    w.add_eos_token_id(special["<|endoftext|>"])
    w.add_eot_token_id(special["<|im_end|>"])
    w.add_pad_token_id(special["<|endoftext|>"])
    w.add_add_bos_token(False)
    w.add_chat_template(CHAT_TEMPLATE)

    def put(name, arr, quantize=True):
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        if arr.ndim == 1 or not quantize:
            w.add_tensor(name, arr)
        elif quant == gguf.GGMLQuantizationType.F16:
            w.add_tensor(name, arr.astype(np.float16))
        else:
            q = gguf.quants.quantize(arr, quant)
            w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=quant)

    put("token_embd.weight", z["token_embd"])
    for i in range(c["layers"]):
        g = lambda k: z[f"blk.{i}.{k}"]
        put(f"blk.{i}.attn_norm.weight", g("attn_norm"))
        put(f"blk.{i}.attn_q.weight", g("q"))
        put(f"blk.{i}.attn_k.weight", g("k"))
        put(f"blk.{i}.attn_v.weight", g("v"))
        put(f"blk.{i}.attn_output.weight", g("o"))
        put(f"blk.{i}.attn_q_norm.weight", g("q_norm"))
        put(f"blk.{i}.attn_k_norm.weight", g("k_norm"))
        put(f"blk.{i}.ffn_norm.weight", g("ffn_norm"))
        put(f"blk.{i}.ffn_gate_inp.weight", g("router"), quantize=False)  # as llama-quantize leaves it
        put(f"blk.{i}.ffn_gate_exps.weight", g("gate"))
        put(f"blk.{i}.ffn_up_exps.weight", g("up"))
        put(f"blk.{i}.ffn_down_exps.weight", g("down"))
    put("output_norm.weight", z["output_norm"])
    put("output.weight", z["output"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"export: step {int(z['__step'])} -> {args.out} ({os.path.getsize(args.out) / 1e6:.1f} MB)")


def cmd_plot(args):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = np.genfromtxt(args.log, delimiter=",", names=True)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(rows["tokens"] / 1e6, rows["loss"], lw=1)
    ax.set_xlabel("training tokens (M)")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title("moe default model: training loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print(f"plot -> {args.out}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("tokenizer")
    t.add_argument("--corpus", required=True)
    t.add_argument("--out", required=True)
    tr = sub.add_parser("train")
    tr.add_argument("--corpus", required=True)
    tr.add_argument("--tokenizer", required=True)
    tr.add_argument("--workdir", required=True)
    tr.add_argument("--cpu-minutes", type=float, default=160,
                    help="training budget in CPU minutes of this process (2 cores: about half in wall time)")
    tr.add_argument("--batch", type=int, default=16)
    tr.add_argument("--lr", type=float, default=3e-3)
    tr.add_argument("--warmup", type=int, default=100)
    tr.add_argument("--seed", type=int, default=7)
    tr.add_argument("--fresh", action="store_true")
    ex = sub.add_parser("export")
    ex.add_argument("--checkpoint", required=True)
    ex.add_argument("--tokenizer", required=True)
    ex.add_argument("--out", required=True)
    ex.add_argument("--type", choices=["q8_0", "f16"], default="q8_0")
    pl = sub.add_parser("plot")
    pl.add_argument("--log", required=True)
    pl.add_argument("--out", required=True)
    args = ap.parse_args()
    {"tokenizer": cmd_tokenizer, "train": cmd_train, "export": cmd_export, "plot": cmd_plot}[args.cmd](args)


if __name__ == "__main__":
    main()
