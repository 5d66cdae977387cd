"""Regressions from the hostile pass against `rlhfkit serve` (issue #18): each test failed before its fix.

One-token prompts, deep JSON, per-request limits (choices, tokens, body size, body time), a 500 that kept
the connection, tokenization on the event loop, a small request stuck behind a large one, and a chat
request without max_tokens that did not end.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import httpx
import pytest

from rlhfkit.serve.limits import Limits
from serve_helpers import build_checkpoints, untrained_checkpoint

CHAT = [{"role": "user", "content": "What does the cat do?"}]
LIMITS = Limits(max_body_bytes=64 << 10, body_timeout_s=1.0, max_choices=16, max_request_tokens=600)


@pytest.fixture(scope="module")
def checkpoints(tokenizer_dir, tmp_path_factory):
    built = build_checkpoints(tokenizer_dir, tmp_path_factory.mktemp("serve_models"))
    noise = untrained_checkpoint(tokenizer_dir, tmp_path_factory.mktemp("serve_noise"))
    return {**built, "noise": noise}


@pytest.fixture(scope="module")
def server(checkpoints):
    from rlhfkit.serve import create_app, load_served_models
    from rlhfkit.serve.server import background

    models = load_served_models([f"{k}={v}" for k, v in checkpoints.items()], max_batch_rows=4)
    try:
        with background(create_app(models, limits=LIMITS)) as url:
            yield url, models
    finally:
        for served in models.values():
            served.close()


def post(url: str, path: str, body, **kwargs) -> httpx.Response:
    return httpx.post(f"{url}{path}", json=body, timeout=60, **kwargs)


def error_of(response: httpx.Response, status: int, param=None, code=None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["param"], error["code"]) == (param, code), error
    return error


# -- one-token prompts ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("prompt", ["x", "The", "", [5], ["x", "y"], [[5], [6]]])
def test_one_token_prompts_are_answered(server, prompt):
    """Every prompt of the batch one token long: the prefill used to take the one-token decode path (500)."""
    url, _ = server
    response = post(url, "/completions", {"model": "base", "prompt": prompt, "max_tokens": 3, "seed": 1})
    assert response.status_code == 200, response.text
    assert all(c["finish_reason"] in ("stop", "length") for c in response.json()["choices"])


def test_generation_engine_prefills_one_token_prompts(tokenizer_dir):
    """The same bug in the engine itself: lean and Hugging Face decoders agree on one-token prompts."""
    from rlhfkit.generation import SamplingParams, generate, pad_id
    from rlhfkit.models import build_model
    from rlhfkit.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_dir)
    model = build_model("micro", len(tokenizer), 64, tokenizer, seed=0).eval()
    params = SamplingParams(max_new_tokens=4, temperature=0.0, seed=0)
    prompts = [[5], [7], [9]]
    lean = generate(model, prompts, params, pad_token_id=pad_id(tokenizer), backend="lean")
    hf = generate(model, prompts, params, pad_token_id=pad_id(tokenizer), backend="hf")
    assert [c.token_ids for c in lean] == [c.token_ids for c in hf]


# -- bodies ---------------------------------------------------------------------------------------------------


def test_deeply_nested_json_is_400(server):
    url, _ = server
    for depth in (40, 5_000, 30_000):
        body = '{"model": "base", "prompt": "x", "user": ' + "[" * depth + "]" * depth + "}"
        response = httpx.post(f"{url}/completions", content=body, timeout=60)
        assert error_of(response, 400, None, "invalid_value")["message"].startswith("The JSON body is nested")
    lone = '{"model": "base", "prompt": "\\ud800"}'
    error_of(httpx.post(f"{url}/completions", content=lone, timeout=60), 400, None, "invalid_value")


def test_body_over_the_limit_is_413_declared_or_streamed(server):
    url, _ = server
    big = json.dumps({"model": "base", "prompt": "x" * (LIMITS.max_body_bytes + 10)}).encode()
    error_of(httpx.post(f"{url}/completions", content=big, timeout=60), 413, None, "request_too_large")
    chunks = iter([big[i : i + 8192] for i in range(0, len(big), 8192)])  # no Content-Length
    error_of(httpx.post(f"{url}/completions", content=chunks, timeout=60), 413, None, "request_too_large")


def _raw_exchange(url: str, requests: list[bytes], timeout: float = 30) -> list[bytes]:
    """Send each request on one TCP connection after the previous answer; the raw answers (b'' if closed)."""
    host, port = url.removeprefix("http://").split("/")[0].split(":")
    answers = []
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        for request in requests:
            sock.sendall(request)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
            head, _, rest = data.partition(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                ),
                0,
            )
            while len(rest) < length:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                rest += chunk
            answers.append(head + b"\r\n\r\n" + rest if head else b"")
    return answers


def _http(method: str, path: str, body: bytes = b"", length: int | None = None) -> bytes:
    length = len(body) if length is None else length
    return (
        f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode() + body


def test_a_body_that_never_arrives_gets_408(server):
    url, _ = server
    started = time.monotonic()
    (answer,) = _raw_exchange(url, [_http("POST", "/v1/completions", b'{"model"', length=5000)])
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"request_timeout" in answer
    assert time.monotonic() - started < LIMITS.body_timeout_s + 5
    (answer,) = _raw_exchange(url, [_http("POST", "/v1/completions", b"{}", length=10**12)])
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


def test_a_500_answers_in_shape_and_keeps_the_connection(server, monkeypatch):
    url, models = server
    batcher = models["base"].batcher

    def broken(pieces):
        raise RuntimeError("injected failure")

    monkeypatch.setattr(batcher, "run", broken)
    body = json.dumps({"model": "base", "prompt": "The cat", "max_tokens": 2}).encode()
    first, second = _raw_exchange(url, [_http("POST", "/v1/completions", body), _http("GET", "/v1/models")])
    assert first.startswith(b"HTTP/1.1 500"), first[:200]
    error = json.loads(first.partition(b"\r\n\r\n")[2])["error"]
    assert error["type"] == "server_error" and "injected failure" in error["message"]
    assert second.startswith(b"HTTP/1.1 200"), second[:200]  # the same connection still serves


# -- per-request limits ---------------------------------------------------------------------------------------


def test_too_many_choices_is_400_before_any_work(server):
    url, models = server
    rows_before = models["base"].batcher.stats.rows
    body = {"model": "base", "prompt": ["a"] * 4, "n": 5, "max_tokens": 1}  # 20 > 16 choices
    assert (
        "at most 16 choices"
        in error_of(post(url, "/completions", body), 400, "n", "request_too_large")["message"]
    )
    chat = {"model": "chat", "messages": CHAT, "n": 17, "max_tokens": 1}
    error_of(post(url, "/chat/completions", chat), 400, "n", "request_too_large")
    assert models["base"].batcher.stats.rows == rows_before


def test_too_many_tokens_is_400(server):
    url, _ = server
    body = {"model": "base", "prompt": ["The cat"] * 8, "n": 2, "max_tokens": 100}  # 16 x ~100 > 600
    error = error_of(post(url, "/completions", body), 400, "max_tokens", "request_too_large")
    assert "at most 600" in error["message"]
    ok = {"model": "base", "prompt": ["The cat"] * 8, "n": 2, "max_tokens": 20}
    assert post(url, "/completions", ok).status_code == 200


def test_chat_without_max_tokens_is_capped(checkpoints):
    limits = Limits(default_chat_max_tokens=5)
    from rlhfkit.serve import create_app, load_served_models
    from rlhfkit.serve.server import background

    models = load_served_models([f"noise={checkpoints['noise']}"])
    try:
        with background(create_app(models, limits=limits)) as url:
            reply = post(url, "/chat/completions", {"model": "noise", "messages": CHAT, "seed": 3}).json()
    finally:
        models["noise"].close()
    assert reply["usage"]["completion_tokens"] <= 5
    assert reply["choices"][0]["finish_reason"] in ("stop", "length")


# -- scheduling and the event loop ----------------------------------------------------------------------------


def test_tokenization_runs_off_the_event_loop(server, monkeypatch):
    from rlhfkit.serve.served import ServedModel

    on_loop = []
    original_text, original_chat = ServedModel.encode_text, ServedModel.encode_chat

    def running_loop() -> bool:
        try:
            asyncio.get_running_loop()
            return True
        except RuntimeError:
            return False

    def encode_text(self, text):
        on_loop.append(running_loop())
        return original_text(self, text)

    def encode_chat(self, messages):
        on_loop.append(running_loop())
        return original_chat(self, messages)

    monkeypatch.setattr(ServedModel, "encode_text", encode_text)
    monkeypatch.setattr(ServedModel, "encode_chat", encode_chat)
    url, _ = server
    assert (
        post(url, "/completions", {"model": "base", "prompt": "The cat", "max_tokens": 1}).status_code == 200
    )
    assert (
        post(url, "/chat/completions", {"model": "chat", "messages": CHAT, "max_tokens": 1}).status_code
        == 200
    )
    assert on_loop == [False, False]


def test_a_small_request_finishes_while_a_large_one_runs(server):
    """The large job (16 choices in pieces of 4, ~100 tokens each) must not hold the model."""
    url, models = server
    stats = models["noise"].batcher.stats
    big_done = threading.Event()
    big_result = {}

    def big() -> None:
        body = {
            "model": "noise",
            "prompt": "The cat",
            "n": 16,
            "max_tokens": 30,
            "temperature": 1.0,
            "seed": 9,
        }
        big_result["response"] = post(url, "/completions", body)
        big_done.set()

    batches_before = stats.batches
    thread = threading.Thread(target=big)
    thread.start()
    deadline = time.monotonic() + 30
    while stats.batches == batches_before and time.monotonic() < deadline:
        time.sleep(0.005)
    small = post(url, "/completions", {"model": "noise", "prompt": "A", "max_tokens": 2, "seed": 1})
    small_finished_first = not big_done.is_set()
    thread.join(60)
    assert small.status_code == 200 and big_result["response"].status_code == 200
    assert small_finished_first
    assert stats.interleaved > 0
    # Cut into pieces and interleaved, every choice is still what n=1 with seed + j gives.
    choices = big_result["response"].json()["choices"]
    for j in (0, 5, 15):
        alone = post(
            url,
            "/completions",
            {"model": "noise", "prompt": "The cat", "max_tokens": 30, "temperature": 1.0, "seed": 9 + j},
        )
        assert alone.json()["choices"][0]["text"] == choices[j]["text"]
