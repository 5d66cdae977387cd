"""API fuzz test: generated hostile and edge-case requests against a real `rlhfkit serve` on loopback.

A seeded generator mutates valid completion and chat requests (wrong types, out-of-range and huge
numbers, NaN/Infinity, empty and oversized values, odd Unicode, deep nesting), sends raw bodies that are
not JSON, not UTF-8, truncated or too large, and odd methods, paths and content types — from 8 clients at
once. Every answer must be below 500 (a refusal in OpenAI's error shape, or a success), no stream may
carry a server error, and the server must answer normally afterwards. The count and the status histogram
are printed (`pytest -s`).
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from rlhfkit.serve.limits import Limits
from serve_helpers import build_checkpoints

REQUESTS = 400  # generated requests per run (plus the fixed raw-body cases)
SEED = 18
LIMITS = Limits(max_body_bytes=32 << 10, body_timeout_s=2.0, max_choices=16, max_request_tokens=1500)

HOSTILE = [
    None, True, False, 0, -1, 1, 2, 3, 127, 128, 129, 2**31, 2**63, -(2**63), 10**30, -(10**30),
    0.5, -0.0, 1e-300, 1e308, -1e308, float("nan"), float("inf"), float("-inf"),
    "", " ", "x", "0", "1", "null", "true", "NaN", "\u0000", "\u202e\u200b", "\U0001f600" * 40, "é" * 300,
    "x" * 5000, "<|end|>", "<|user|>", "\n\n\n", [], {}, [[]], [[[[]]]], [0], [-1], [""], [None],
    list(range(300)), {"a": 1}, {"type": "text"}, {"": None},
]  # fmt: skip
FIELDS = [
    "model", "prompt", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k",
    "n", "stop", "seed", "stream", "stream_options", "logprobs", "top_logprobs", "echo", "user", "suffix",
    "best_of", "logit_bias", "presence_penalty", "frequency_penalty", "response_format", "tools", "functions",
]  # fmt: skip
PROMPTS = [
    "The cat",
    "",
    "x",
    "A",
    "The old king walks to the river and",
    "日本語",
    "\ud7ff",
    "<|endoftext|>",
]


def valid_completion(rng: random.Random) -> dict:
    prompt = rng.choice([rng.choice(PROMPTS), [rng.choice(PROMPTS) for _ in range(rng.randint(1, 4))],
                         [rng.randint(0, 50) for _ in range(rng.randint(1, 6))], [[5], [6, 7]]])  # fmt: skip
    body = {"model": "base", "prompt": prompt, "max_tokens": rng.randint(1, 12), "seed": rng.randint(0, 99)}
    if rng.random() < 0.3:
        body["logprobs"] = rng.randint(0, 5)
    if rng.random() < 0.2:
        body["echo"] = True
    if rng.random() < 0.3:
        body["stream"] = True
    if rng.random() < 0.3:
        body["n"] = rng.randint(1, 4)
    return body


def valid_chat(rng: random.Random) -> dict:
    messages = [{"role": rng.choice(["user", "system", "developer", "assistant"]), "content": rng.choice(PROMPTS)}
                for _ in range(rng.randint(1, 3))]  # fmt: skip
    body = {
        "model": "chat",
        "messages": messages,
        "max_tokens": rng.randint(1, 12),
        "seed": rng.randint(0, 99),
    }
    if rng.random() < 0.3:
        body["logprobs"] = True
        body["top_logprobs"] = rng.randint(0, 20)
    if rng.random() < 0.3:
        body["stream"] = True
        body["stream_options"] = {"include_usage": rng.random() < 0.5}
    return body


def mutate(rng: random.Random, body: dict) -> dict:
    body = json.loads(json.dumps(body))
    for _ in range(rng.randint(1, 3)):
        roll = rng.random()
        if roll < 0.6:
            body[rng.choice(FIELDS)] = rng.choice(HOSTILE)
        elif roll < 0.75 and body:
            body.pop(rng.choice(sorted(body)))
        elif roll < 0.9 and "messages" in body and isinstance(body["messages"], list) and body["messages"]:
            message = body["messages"][0]
            if isinstance(message, dict):
                message[rng.choice(["role", "content", "name", "extra"])] = rng.choice(
                    HOSTILE + [[{"type": "text", "text": "hi"}], [{"type": "image_url"}], [{"type": "text"}]]
                )
        else:
            body["user"] = f"@@DEEP{rng.choice([5, 31, 33, 200, 3000])}@@"  # spliced in after encoding
    return body


def raw_cases() -> list[tuple[str, str, bytes, dict]]:
    """(method, path, body, headers) for bodies and requests no JSON encoder would produce."""
    ok = json.dumps({"model": "base", "prompt": "The cat", "max_tokens": 2}).encode()
    deep = b'{"model": "base", "prompt": "x", "user": ' + b"[" * 20000 + b"]" * 20000 + b"}"
    cases = [
        ("POST", "/v1/completions", b"", {}),
        ("POST", "/v1/completions", b"{", {}),
        ("POST", "/v1/completions", ok[:-3], {}),
        ("POST", "/v1/completions", b"\xff\xfe" + ok, {}),
        ("POST", "/v1/completions", b"\xef\xbb\xbf" + ok, {}),
        ("POST", "/v1/completions", ok.replace(b"The cat", b"The \xe9t\xe9"), {}),
        ("POST", "/v1/completions", b'{"model": "base", "prompt": "\\ud800\\udc00x\\udfff"}', {}),
        (
            "POST",
            "/v1/completions",
            b'{"model": "base", "model": "chat", "prompt": "x", "max_tokens": 1}',
            {},
        ),
        ("POST", "/v1/completions", b"[" * 100000, {}),
        ("POST", "/v1/completions", deep, {}),
        ("POST", "/v1/completions", b"null", {}),
        ("POST", "/v1/completions", b'"string"', {}),
        ("POST", "/v1/completions", b"1e999999", {}),
        ("POST", "/v1/completions", b'{"model": "base", "prompt": "' + b"a" * (40 << 10) + b'"}', {}),
        ("POST", "/v1/completions", ok, {"content-type": "text/plain"}),
        ("POST", "/v1/completions", ok, {"content-type": "multipart/form-data; boundary=x"}),
        ("POST", "/v1/completions", ok, {"content-encoding": "gzip"}),
        ("POST", "/v1/chat/completions", b"\x00" * 100, {}),
        ("PUT", "/v1/completions", ok, {}),
        ("DELETE", "/v1/models", b"", {}),
        ("GET", "/v1/models/%00", b"", {}),
        ("GET", "/v1/models/..%2F..%2Fetc%2Fpasswd", b"", {}),
        ("GET", "/v1/models/" + "a" * 5000, b"", {}),
        ("GET", "/v1/" + "%ff" * 10, b"", {}),
        ("POST", "/v1/completions?x=%ff", ok, {}),
        ("OPTIONS", "/v1/completions", b"", {}),
        ("HEAD", "/health", b"", {}),
        (
            "POST",
            "/v1/completions",
            ok,
            {"authorization": b"Bearer \xff\xfe"},
        ),
    ]
    return cases


@pytest.fixture(scope="module")
def server(tokenizer_dir, tmp_path_factory):
    from rlhfkit.serve import create_app, load_served_models
    from rlhfkit.serve.server import background

    checkpoints = build_checkpoints(tokenizer_dir, tmp_path_factory.mktemp("serve_models"))
    models = load_served_models([f"{k}={v}" for k, v in checkpoints.items()], max_batch_rows=8)
    try:
        with background(create_app(models, limits=LIMITS)) as url:
            yield url.removesuffix("/v1"), models
    finally:
        for served in models.values():
            served.close()


def _send(client: httpx.Client, method: str, path: str, content: bytes, headers: dict) -> tuple[int, bytes]:
    response = client.request(method, path, content=content, headers=headers)
    return response.status_code, response.content


def _check(status: int, content: bytes, what: str) -> None:
    assert status < 500, (what, status, content[:300])
    if status >= 400 and content:
        assert "error" in json.loads(content), (what, content[:300])
    if status == 200 and content.startswith(b"data: "):
        assert b'"server_error"' not in content, (what, content[:300])


def test_fuzzed_requests_never_get_a_5xx_and_the_server_stays_up(server):
    base, models = server
    rng = random.Random(SEED)
    generated = []
    for i in range(REQUESTS):
        body = valid_completion(rng) if i % 2 else valid_chat(rng)
        if rng.random() < 0.85:
            body = mutate(rng, body)
        path = "/v1/completions" if "prompt" in body or rng.random() < 0.5 else "/v1/chat/completions"
        text = json.dumps(body, ensure_ascii=rng.random() < 0.5, allow_nan=True)
        text = re.sub(r'"@@DEEP(\d+)@@"', lambda m: "[" * int(m.group(1)) + "]" * int(m.group(1)), text)
        encoded = text.encode("utf-8", "surrogatepass")
        generated.append(("POST", path, encoded, {"content-type": "application/json"}))
    cases = generated + raw_cases()
    statuses: Counter[int] = Counter()

    def run(case) -> tuple[int, bytes, str]:
        method, path, content, headers = case
        with httpx.Client(base_url=base, timeout=120) as client:
            status, body = _send(client, method, path, content, headers)
        return status, body, f"{method} {path} {content[:200]!r}"

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(run, cases))
    for status, content, what in results:
        statuses[status] += 1
        _check(status, content, what)
    print(f"\nserve fuzz: {len(cases)} requests, statuses {dict(sorted(statuses.items()))}")
    assert statuses[200] > 30 and sum(v for k, v in statuses.items() if 400 <= k < 500) > 100

    # Still alive and answering normally, with every batcher thread running.
    with httpx.Client(base_url=base, timeout=60) as client:
        assert client.get("/health").json()["status"] == "ok"
        reply = client.post(
            "/v1/chat/completions",
            json={"model": "chat", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3},
        )
        assert reply.status_code == 200
    assert all(served.batcher._thread.is_alive() for served in models.values())
