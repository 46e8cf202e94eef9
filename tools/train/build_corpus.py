#!/usr/bin/env python3
"""Builds the default model's training text from Debian packages.

Sources (installed by tools/train/train.sh): fortune cookies in English, German, Spanish and
Italian (fortunes, fortunes-de, fortunes-es, fortunes-it), the King James Bible
(bible-kjv-text, read through the `bible` program), Webster's 1913 via GCIDE (dict-gcide)
and the Jargon File (dict-jargon).

Writes, into the output folder:
  train.jsonl    one document per line: {"source": ..., "text": ...} or, for the
                 instruction set, {"source": "chat/...", "messages": [{role, content}, ...]}
  heldout.txt    held-out plain text (never trained on) for `moe perplexity`
  stats.json     documents and characters per source

Everything is seeded, so the same packages give the same corpus.
"""
import argparse
import base64
import gzip
import json
import os
import random
import re
import subprocess
import sys

FORTUNE_ROOT = "/usr/share/games/fortunes"
# Picture-only or banner collections carry no language to learn.
FORTUNE_SKIP = {"art", "ascii-art", "asciiart", "banner", "tfortunes"}
LANG_NAMES = {"en": "English", "de": "German", "es": "Spanish", "it": "Italian"}


def read_text(path):
    raw = open(path, "rb").read()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def fortunes():
    """Yields (language, text) for every cookie."""
    for lang, folder in (("en", FORTUNE_ROOT), ("de", FORTUNE_ROOT + "/de"),
                         ("es", FORTUNE_ROOT + "/es"), ("it", FORTUNE_ROOT + "/it")):
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            base = name.replace(".fortunes", "")
            if (name.endswith((".dat", ".u8")) or os.path.islink(path) or os.path.isdir(path)
                    or base in FORTUNE_SKIP):
                continue
            # Italian collections live at the top level too; tag them by their package.
            file_lang = lang
            if lang == "en" and os.path.exists(f"/usr/share/games/fortunes-it/{name}.dat"):
                file_lang = "it"
            for cookie in re.split(r"\n%\n", read_text(path)):
                cookie = cookie.strip("%\n ")
                if 10 <= len(cookie) <= 1200:
                    yield file_lang, cookie


def bible_verses():
    """Yields (reference, text) for every verse of the KJV."""
    out = subprocess.run(["bible", "-l", "100000", "gen1:1-rev22:21"], stdin=subprocess.DEVNULL,
                         capture_output=True, text=True, check=True).stdout
    chapter = None
    for line in out.splitlines():
        m = re.match(r"^(\S.*\S) (\d+)$", line)
        if m and not line.startswith(" "):
            chapter = (m.group(1), int(m.group(2)))
            continue
        m = re.match(r"^\s+(\d+) (.*)$", line)
        if m and chapter:
            yield f"{chapter[0]} {chapter[1]}:{m.group(1)}", m.group(2).strip()


def b64number(s):
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    n = 0
    for c in s:
        n = n * 64 + alphabet.index(c)
    return n


def dict_entries(name):
    """Yields (headword, body) from a dictd database."""
    data = gzip.open(f"/usr/share/dictd/{name}.dict.dz").read()
    seen = set()
    for line in open(f"/usr/share/dictd/{name}.index", encoding="utf-8", errors="replace"):
        parts = line.rstrip("\n").split("\t")
        if len(parts) < 3 or parts[0].startswith("00-database") or parts[0].startswith("00database"):
            continue
        start, length = b64number(parts[1]), b64number(parts[2])
        if (start, length) in seen:
            continue
        seen.add((start, length))
        body = data[start:start + length].decode("utf-8", errors="replace")
        yield parts[0], body


def clean_gcide(body):
    """Turns a GCIDE entry into readable text: drops pronunciation marks and source tags."""
    body = re.sub(r"\[(1913 Webster|PJC|AS|WordNet 1\.5|Century Dict\.|Webster 1913 Suppl\.)\]", "", body)
    body = re.sub(r"\\([^\\\n]*)\\", "", body, count=1)  # the \Pro*nun"ci*a`tion\ field
    body = body.replace("{", "").replace("}", "")
    body = re.sub(r"[ \t]+", " ", body)
    body = re.sub(r"\n\s*\n+", "\n", body)
    return "\n".join(l.strip() for l in body.strip().splitlines())


def first_sense(text):
    """The first definition line(s) of a cleaned dictionary entry, for instructions."""
    lines = text.splitlines()[1:] or text.splitlines()
    sense = " ".join(lines)
    sense = re.sub(r"--\w[^.;]*\.?", "", sense)
    sense = re.sub(r"^\s*1\.\s*", "", sense)
    sense = re.split(r"\s2\.\s", sense)[0]
    sense = re.split(r"\s(Syn|Note):", sense)[0]
    return re.sub(r"\s+", " ", sense).strip()


FORTUNE_ASKS = {
    "en": ["Tell me a fortune.", "Give me a fortune cookie.", "Say something wise.", "Tell me a fortune in English."],
    "de": ["Erzähl mir einen Spruch.", "Tell me a fortune in German.", "Gib mir einen Glückskeks."],
    "es": ["Dime un refrán.", "Tell me a fortune in Spanish.", "Cuéntame algo sabio."],
    "it": ["Dimmi una massima.", "Tell me a fortune in Italian.", "Raccontami qualcosa di saggio."],
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--gcide-share", type=float, default=0.25,
                    help="fraction of GCIDE entries kept (it is larger than all else together)")
    ap.add_argument("--heldout-chars", type=int, default=40000)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    os.makedirs(args.out, exist_ok=True)

    docs, chats = [], []
    for lang, text in fortunes():
        docs.append({"source": f"fortunes/{lang}", "text": text})
        if rng.random() < 0.25:
            chats.append({"source": f"chat/fortune/{lang}", "messages": [
                {"role": "user", "content": rng.choice(FORTUNE_ASKS[lang])},
                {"role": "assistant", "content": text}]})

    verses = list(bible_verses())
    if len(verses) < 30000:
        sys.exit(f"build_corpus: only {len(verses)} verses from `bible`; is bible-kjv installed?")
    # Chapters as documents; single verses as quotation instructions.
    chapter_text, current = [], None
    for ref, text in verses:
        book_chapter = ref.rsplit(":", 1)[0]
        if book_chapter != current:
            if chapter_text:
                docs.append({"source": "bible", "text": "\n".join(chapter_text)})
            chapter_text, current = [book_chapter], book_chapter
        chapter_text.append(f"{ref.rsplit(':', 1)[1]} {text}")
        if rng.random() < 0.12:
            chats.append({"source": "chat/bible", "messages": [
                {"role": "user", "content": rng.choice(["Quote ", "Recite ", "What does the Bible say in "]) + ref + rng.choice(["", "?", "."])},
                {"role": "assistant", "content": f"{ref} {text}"}]})
    docs.append({"source": "bible", "text": "\n".join(chapter_text)})

    for word, body in dict_entries("gcide"):
        if rng.random() >= args.gcide_share:
            continue
        text = clean_gcide(body)
        if len(text) < 20:
            continue
        docs.append({"source": "gcide", "text": text[:3000]})
        sense = first_sense(text)
        if 15 <= len(sense) <= 400 and rng.random() < 0.35:
            ask = rng.choice(['Define the word "{w}".', "What does {w} mean?", "Define {w}.", "What is the meaning of {w}?"])
            chats.append({"source": "chat/define", "messages": [
                {"role": "user", "content": ask.format(w=word)},
                {"role": "assistant", "content": f"{word}: {sense}"}]})

    for word, body in dict_entries("jargon"):
        text = re.sub(r"[ \t]+", " ", body.replace("{", "").replace("}", "")).strip()
        text = "\n".join(l.strip() for l in text.splitlines() if l.strip())
        if len(text) < 20:
            continue
        docs.append({"source": "jargon", "text": text[:4000]})
        sense = " ".join(text.splitlines()[1:5])[:500]
        # End on a sentence so answers are whole.
        cut = sense.rfind(". ", 0, 400)
        sense = sense[:cut + 1] if cut > 40 else ""
        if sense:
            chats.append({"source": "chat/jargon", "messages": [
                {"role": "user", "content": rng.choice(["What is {w} in hacker jargon?", "Explain the jargon term {w}.", "What does {w} mean to a hacker?"]).format(w=word)},
                {"role": "assistant", "content": f"{word}: {sense}"}]})

    # A few two-turn conversations so the model sees a history.
    rng.shuffle(chats)
    multi = []
    for i in range(0, min(len(chats), 6000) - 1, 2):
        multi.append({"source": "chat/multi", "messages": chats[i]["messages"] + chats[i + 1]["messages"]})
    chats.extend(multi)

    rng.shuffle(docs)
    # Held-out text: whole documents from every source, removed from training.
    heldout, kept, held_chars = [], [], 0
    per_source_budget = {}
    for d in docs:
        src = d["source"].split("/")[0]
        per_source_budget.setdefault(src, 0)
        if held_chars < args.heldout_chars and per_source_budget[src] < args.heldout_chars // 4:
            heldout.append(d["text"])
            per_source_budget[src] += len(d["text"])
            held_chars += len(d["text"])
        else:
            kept.append(d)

    everything = kept + chats
    rng.shuffle(everything)
    with open(os.path.join(args.out, "train.jsonl"), "w", encoding="utf-8") as f:
        for d in everything:
            f.write(json.dumps(d, ensure_ascii=False) + "\n")
    with open(os.path.join(args.out, "heldout.txt"), "w", encoding="utf-8") as f:
        f.write("\n\n".join(heldout) + "\n")
    stats = {}
    for d in everything:
        key = d["source"].split("/")[0] if not d["source"].startswith("chat") else d["source"].rsplit("/", 1)[0] if d["source"].count("/") > 1 else d["source"]
        n = len(d.get("text", "")) + sum(len(m["content"]) for m in d.get("messages", []))
        s = stats.setdefault(key, {"documents": 0, "characters": 0})
        s["documents"] += 1
        s["characters"] += n
    stats["heldout"] = {"documents": len(heldout), "characters": held_chars}
    json.dump(stats, open(os.path.join(args.out, "stats.json"), "w"), indent=1)
    for k, v in sorted(stats.items()):
        print(f"{k:16} {v['documents']:8} docs {v['characters'] / 1e6:8.2f} M chars")


if __name__ == "__main__":
    main()
