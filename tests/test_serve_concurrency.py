"""Concurrent clients: batched together, answered exactly as when alone; a client leaving mid-stream is harmless."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from serve_helpers import build_checkpoints, running_server, untrained_checkpoint

CLIENTS = 16


@pytest.fixture(scope="module")
def server(tokenizer_dir, tmp_path_factory):
    checkpoints = build_checkpoints(tokenizer_dir, tmp_path_factory.mktemp("serve_models"))
    # An untrained model almost never emits an end token: its streams run long enough to be abandoned.
    noise = untrained_checkpoint(tokenizer_dir, tmp_path_factory.mktemp("serve_noise"))
    with running_server({**checkpoints, "noise": noise}, gather_s=0.02) as (url, models):
        yield url, models


def request_for(i: int) -> dict:
    """A mix of models, endpoints, prompts, temperatures, seeds and stops; a few greedy."""
    subjects = ["The cat", "A farmer", "The old king", "My sister"]
    if i % 2:
        return {
            "kind": "chat",
            "model": "chat",
            "messages": [{"role": "user", "content": f"What does {subjects[i % 4].lower()} do?"}],
            "temperature": 0.0 if i % 5 == 0 else 1.0,
            "seed": 100 + i,
            "max_tokens": 12 + i,
        }
    return {
        "kind": "completion",
        "model": "base",
        "prompt": subjects[i % 4],
        "temperature": 0.8,
        "seed": 200 + i,
        "max_tokens": 6 + i,
        "stop": ["river"] if i % 4 == 0 else None,
    }


def run(client: openai.OpenAI, spec: dict, stream: bool) -> tuple[str, str]:
    """(text, finish_reason) of one request, streamed or not."""
    args = {k: v for k, v in spec.items() if k != "kind" and v is not None}
    if spec["kind"] == "chat":
        if not stream:
            choice = client.chat.completions.create(**args).choices[0]
            return choice.message.content, choice.finish_reason
        chunks = list(client.chat.completions.create(**args, stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        return text, chunks[-1].choices[0].finish_reason
    if not stream:
        choice = client.completions.create(**args).choices[0]
        return choice.text, choice.finish_reason
    chunks = list(client.completions.create(**args, stream=True))
    return "".join(c.choices[0].text for c in chunks), chunks[-1].choices[0].finish_reason


def test_concurrent_requests_are_batched_and_match_sequential_answers(server):
    url, models = server
    client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=120)
    specs = [request_for(i) for i in range(CLIENTS)]
    sequential = [run(client, spec, stream=False) for spec in specs]
    batches_before = sum(
        m.batcher.stats.batches for m in {id(m.batcher): m for m in models.values()}.values()
    )

    with ThreadPoolExecutor(CLIENTS) as pool:
        concurrent = list(pool.map(lambda spec: run(client, spec, stream=False), specs))
        streamed = list(pool.map(lambda spec: run(client, spec, stream=True), specs))

    assert concurrent == sequential
    assert streamed == sequential
    health = httpx.get(url.removesuffix("/v1") + "/health", timeout=30).json()
    assert health["status"] == "ok"
    batches = sum(h["batches"] for h in health["batching"].values()) - batches_before
    assert batches < 2 * CLIENTS  # requests shared forward passes
    assert max(h["largest_batch"] for h in health["batching"].values()) > 1


def test_sixteen_streaming_clients_all_finish_with_done(server):
    url, _ = server
    body = {
        "model": "chat",
        "messages": [{"role": "user", "content": "What does the baker do?"}],
        "max_tokens": 20,
        "temperature": 1.0,
        "stream": True,
    }

    def stream(i: int) -> list[str]:
        with httpx.stream(
            "POST", f"{url}/chat/completions", json={**body, "seed": i}, timeout=120
        ) as response:
            assert response.status_code == 200
            return [line for line in response.iter_lines() if line]

    with ThreadPoolExecutor(CLIENTS) as pool:
        results = list(pool.map(stream, range(CLIENTS)))
    client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=120)
    for seed, lines in enumerate(results):
        assert lines[-1] == "data: [DONE]"
        chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
        alone = client.chat.completions.create(**{**body, "stream": False, "seed": seed}).choices[0]
        assert text == alone.message.content
        assert chunks[-1]["choices"][0]["finish_reason"] == alone.finish_reason


def test_a_client_leaving_mid_stream_does_not_break_the_server(server):
    url, models = server
    body = {
        "model": "noise",
        "prompt": "The cat",
        "max_tokens": 120,
        "temperature": 1.0,
        "seed": 1,
        "stream": True,
    }
    stats = models["noise"].batcher.stats
    for _ in range(3):
        with httpx.stream("POST", f"{url}/completions", json=body, timeout=60) as response:
            assert next(response.iter_lines()).startswith("data: ")
        # leaving the `with` closes the connection after the first chunk
    deadline = time.monotonic() + 30
    while stats.abandoned < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stats.abandoned == 3  # the worker stopped decoding for the clients that left

    client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=60)
    whole = client.completions.create(**{k: v for k, v in body.items() if k != "stream"})
    chunks = list(client.completions.create(**body))
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
    assert whole.usage.completion_tokens == 120  # the untrained model ran to the limit
