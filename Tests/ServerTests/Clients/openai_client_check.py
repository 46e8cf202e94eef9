"""Drives a running `moe serve` with the official openai package, as applications do.

Usage: openai_client_check.py BASE_URL API_KEY EXPECTED_JSON
EXPECTED_JSON holds {"prompt": ..., "max_tokens": N, "text": what `moe generate --temp 0` printed}.
Exits 0 when every check holds; otherwise prints the first failed check and exits 1.
"""
import json
import sys
import urllib.request

import openai
from prometheus_client.parser import text_string_to_metric_families

base, key, expected_path = sys.argv[1], sys.argv[2], sys.argv[3]
expected = json.load(open(expected_path))
client = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0)


def check(condition, what):
    if not condition:
        print("FAILED: " + what, file=sys.stderr)
        sys.exit(1)


def metrics():
    request = urllib.request.Request(base + "/metrics", headers={"Authorization": "Bearer " + key})
    text = urllib.request.urlopen(request).read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    return families


def requests_total(families):
    family = families.get("moe_requests")  # the parser drops the _total suffix of counters
    return sum(s.value for s in family.samples if s.name == "moe_requests_total") if family else 0


before = metrics()
check("moe_time_to_first_token_seconds" in before, "the TTFT histogram is exposed")
check("moe_kv_blocks_free" in before and "moe_active_sequences" in before, "the KV and sequence gauges are exposed")

models = client.models.list()
check(len(models.data) == 1 and models.data[0].id == "served-model", "models.list names the served model")

# Text completions, whole and streamed, equal `moe generate --temp 0`.
whole = client.completions.create(model="served-model", prompt=expected["prompt"], max_tokens=expected["max_tokens"],
                                  temperature=0)
check(whole.choices[0].text == expected["text"], "completion text %r equals moe generate's %r" % (whole.choices[0].text, expected["text"]))
check(whole.usage.completion_tokens >= 1 and whole.usage.prompt_tokens >= 1, "completion usage")
pieces = []
for chunk in client.completions.create(model="served-model", prompt=expected["prompt"], max_tokens=expected["max_tokens"],
                                       temperature=0, stream=True):
    pieces.append(chunk.choices[0].text if chunk.choices else "")
check("".join(pieces) == expected["text"], "streamed completion equals the whole one")

# Chat, whole and streamed with usage in the last chunk.
messages = [{"role": "system", "content": "You are brief."}, {"role": "user", "content": "Name a colour."}]
chat = client.chat.completions.create(model="served-model", messages=messages, max_tokens=12, temperature=0, seed=7)
content = chat.choices[0].message.content
check(chat.choices[0].message.role == "assistant" and isinstance(content, str), "chat message")
check(chat.choices[0].finish_reason in ("stop", "length"), "chat finish_reason")
streamed, usage, reasons = [], None, []
for chunk in client.chat.completions.create(model="served-model", messages=messages, max_tokens=12, temperature=0, seed=7,
                                            stream=True, stream_options={"include_usage": True}):
    if chunk.usage is not None:
        usage = chunk.usage
    for c in chunk.choices:
        if c.delta.content:
            streamed.append(c.delta.content)
        if c.finish_reason:
            reasons.append(c.finish_reason)
check("".join(streamed) == content, "streamed chat %r equals the whole %r" % ("".join(streamed), content))
check(usage is not None and usage.completion_tokens == chat.usage.completion_tokens, "usage in the last chunk")
check(usage.prompt_tokens_details.cached_tokens > 0, "the repeated chat prompt came from the prefix cache")
check(reasons == [chat.choices[0].finish_reason], "one finish_reason in the stream")

# n > 1 and the runtime's own samplers as extensions.
several = client.chat.completions.create(model="served-model", messages=messages, max_tokens=8, temperature=1.0, n=3,
                                         seed=11, extra_body={"top_k": 0, "min_p": 0.0, "ignore_eos": True})
check(len(several.choices) == 3 and [c.index for c in several.choices] == [0, 1, 2], "three choices")
check(several.usage.completion_tokens == 24, "ignore_eos choices each ran to max_tokens")

# Stop strings.
stopped = client.completions.create(model="served-model", prompt=expected["prompt"], max_tokens=expected["max_tokens"],
                                    temperature=0, stop=[expected["text"][3:6]])
check(stopped.choices[0].text == expected["text"][:expected["text"].index(expected["text"][3:6])], "stop string")
check(stopped.choices[0].finish_reason == "stop", "stop finish_reason")

# Errors arrive as the client's typed exceptions, with OpenAI's body.
try:
    client.chat.completions.create(model="served-model", messages=[{"role": "user", "content": "x"}], max_tokens=0)
    check(False, "max_tokens 0 is refused")
except openai.BadRequestError as e:
    check(e.status_code == 400 and e.param == "max_tokens" and "max_tokens" in e.message, "the 400 names max_tokens: %s" % e)
try:
    openai.OpenAI(base_url=base + "/v1", api_key="wrong", max_retries=0).models.list()
    check(False, "a wrong key is refused")
except openai.AuthenticationError as e:
    check(e.status_code == 401 and e.code == "invalid_api_key", "401 for a wrong key")

after = metrics()
check(requests_total(after) >= requests_total(before) + 8, "requests_total moved (%s -> %s)" % (requests_total(before), requests_total(after)))
generated = [s.value for s in after["moe_generated_tokens"].samples if s.name == "moe_generated_tokens_total"][0]
check(generated >= 40, "generated tokens counted")
print("ok")
