"""Load generator for tools/bench-server.sh: C concurrent clients against an OpenAI-style
/v1/completions endpoint (moe serve or llama-server), each sending R requests one after
another (stdlib only: http.client, one thread per client). Every request has its own 64-token prompt (token ids, so both servers see the same
tokens) and streams 64 generated tokens (ignore_eos). Prints one JSON object: aggregate
generated tokens/s over the wall time of the whole run, time to first token and
inter-token latency (gaps between streamed pieces) percentiles in milliseconds.

Usage: bench-server-client.py BASE_URL CLIENTS [--requests R] [--prompt-tokens 64]
       [--tokens 64] [--vocab 32000] [--seed S]
"""
import argparse
import http.client
import json
import random
import threading
import time
import urllib.parse

parser = argparse.ArgumentParser()
parser.add_argument("base")
parser.add_argument("clients", type=int)
parser.add_argument("--requests", type=int, default=2)
parser.add_argument("--prompt-tokens", type=int, default=64)
parser.add_argument("--tokens", type=int, default=64)
parser.add_argument("--vocab", type=int, default=32000)
parser.add_argument("--seed", type=int, default=1)
args = parser.parse_args()
url = urllib.parse.urlparse(args.base)


def percentile(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    k = (len(values) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def one_request(connection, prompt, results):
    body = json.dumps({"prompt": prompt, "max_tokens": args.tokens, "temperature": 0, "ignore_eos": True, "stream": True,
                       "stream_options": {"include_usage": True}})
    sent = time.perf_counter()
    connection.request("POST", "/v1/completions", body=body, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    if response.status != 200:
        raise SystemExit("HTTP %d: %s" % (response.status, response.read()[:300]))
    first, last, gaps, pieces, usage = None, None, [], 0, None
    while True:
        line = response.readline()
        if not line:
            break
        line = line.decode().strip()
        if not line.startswith("data: "):
            continue
        if line == "data: [DONE]":
            break
        event = json.loads(line[6:])
        if event.get("usage"):
            usage = event["usage"]
        for choice in event.get("choices", []):
            if choice.get("text"):
                now = time.perf_counter()
                if first is None:
                    first = now
                else:
                    gaps.append(now - last)
                last = now
                pieces += 1
    response.read()
    tokens = usage["completion_tokens"] if usage else pieces
    results.append({"ttft": first - sent, "gaps": gaps, "tokens": tokens})


def client_loop(index, results):
    rng = random.Random(args.seed * 1000 + index)
    for _ in range(args.requests):
        prompt = [rng.randrange(100, args.vocab) for _ in range(args.prompt_tokens)]
        # A connection per request: llama-server closes a stream's connection at its end.
        connection = http.client.HTTPConnection(url.hostname, url.port, timeout=600)
        try:
            one_request(connection, prompt, results)
        except Exception as e:  # reported as the run's failure below, once
            failures.append(repr(e))
        connection.close()


results = []
failures = []
threads = [threading.Thread(target=client_loop, args=(i, results)) for i in range(args.clients)]
start = time.perf_counter()
for t in threads:
    t.start()
for t in threads:
    t.join()
wall = time.perf_counter() - start
if len(results) != args.clients * args.requests:
    raise SystemExit("only %d of %d requests finished: %s" % (len(results), args.clients * args.requests, failures[:1]))
tokens = sum(r["tokens"] for r in results)
ttft = [r["ttft"] * 1000 for r in results]
gaps = [g * 1000 for r in results for g in r["gaps"]]
print(json.dumps({"clients": args.clients, "requests": len(results), "tokens": tokens, "wall_s": wall,
                  "tokens_per_s": tokens / wall, "ttft_p50_ms": percentile(ttft, 50), "ttft_p99_ms": percentile(ttft, 99),
                  "itl_p50_ms": percentile(gaps, 50), "itl_p99_ms": percentile(gaps, 99)}))
