"""Continuous batching: a request joins the decode batch already running, answers exactly as when alone
(same seed, same text; greedy equals the generation engine), and a client that leaves frees its slot."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from rlhfkit.generation import SamplingParams, generate, pad_id
from rlhfkit.generation.int8_linear import Int8Linear
from serve_helpers import build_checkpoints, one_torch_thread, running_server, untrained_checkpoint

LONG = {"model": "noise", "prompt": "The cat", "max_tokens": 120, "temperature": 1.0, "seed": 5}


@pytest.fixture(scope="module")
def server(tokenizer_dir, tmp_path_factory):
    checkpoints = build_checkpoints(tokenizer_dir, tmp_path_factory.mktemp("serve_models"))
    noise = untrained_checkpoint(tokenizer_dir, tmp_path_factory.mktemp("serve_noise"))
    with one_torch_thread(), running_server({**checkpoints, "noise": noise}, max_batch_rows=3) as running:
        yield running


def post(url: str, body: dict) -> dict:
    response = httpx.post(f"{url}/completions", json=body, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def health(url: str) -> dict:
    return httpx.get(url.removesuffix("/v1") + "/health", timeout=30).json()["batching"]


def at_real_model_speed(monkeypatch, batcher) -> None:
    """A micro model decodes a step in about a millisecond, so a long request could end before a few HTTP round
    trips on a busy machine; a step as slow as a real model's (10 ms) keeps it decoding for over a second.
    What the tests compare (texts, steps shared, slots freed) does not depend on the speed."""
    step = batcher.rows.step

    def real_model_step():
        time.sleep(0.01)
        return step()

    monkeypatch.setattr(batcher.rows, "step", real_model_step)


def test_requests_join_the_running_batch_and_answer_as_alone(server, monkeypatch):
    url, models = server
    stats = models["noise"].batcher.stats
    at_real_model_speed(monkeypatch, models["noise"].batcher)
    assert health(url)["noise"]["mode"] == "continuous"
    batches_before, largest_before = stats.batches, stats.largest
    result = {}
    long = threading.Thread(target=lambda: result.setdefault("long", post(url, LONG)))
    long.start()
    while stats.batches == batches_before:
        time.sleep(0.002)
    # One at a time, so each newcomer can only share a step with the long request already decoding.
    shorts = [
        {"model": "noise", "prompt": prompt, "max_tokens": 4, "temperature": 1.0, "seed": seed}
        for seed, prompt in enumerate(["A", "The old king", "My sister"])
    ]
    under_load = [post(url, body)["choices"][0]["text"] for body in shorts]
    long_was_running = long.is_alive()
    long.join(120)
    assert long_was_running  # every short request finished while the long one decoded
    assert stats.largest >= 2 > largest_before  # ... in the same decode steps as the long one
    alone = [post(url, body)["choices"][0]["text"] for body in shorts]
    assert under_load == alone
    assert result["long"]["choices"][0]["text"] == post(url, LONG)["choices"][0]["text"]


def test_greedy_answers_under_load_equal_the_generation_engine(server):
    url, models = server
    served = models["base"]
    prompts = ["The cat", "A farmer sells", "My sister", "The old king walks"]
    answers: dict[int, str] = {}

    def ask(i: int) -> None:
        body = {"model": "base", "prompt": prompts[i], "max_tokens": 10 + 5 * i, "temperature": 0}
        answers[i] = post(url, body)["choices"][0]["text"]

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(prompts))]
    for thread in threads:
        thread.start()
        time.sleep(0.01)  # staggered: later ones join a batch that is decoding
    for thread in threads:
        thread.join(120)
    for i, prompt in enumerate(prompts):
        params = SamplingParams(
            max_new_tokens=10 + 5 * i, temperature=0, stop_token_ids=served.stop_token_ids
        )
        (expected,) = generate(
            served.model,
            [served.encode_text(prompt)],
            params,
            pad_token_id=pad_id(served.tokenizer),
            tokenizer=served.tokenizer,
        )
        assert answers[i] == expected.text


def test_a_client_that_leaves_frees_its_slot(server, monkeypatch):
    url, models = server
    batcher = models["noise"].batcher
    at_real_model_speed(monkeypatch, batcher)  # the client leaves long before its 100 tokens are decoded
    abandoned_before = batcher.stats.abandoned
    body = {**LONG, "max_tokens": 100, "stream": True}
    for _ in range(3):  # every slot taken, then left
        with httpx.stream("POST", f"{url}/completions", json=body, timeout=60) as response:
            assert next(response.iter_lines()).startswith("data: ")
    deadline = time.monotonic() + 30
    while batcher.stats.abandoned < abandoned_before + 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert batcher.stats.abandoned == abandoned_before + 3
    while batcher.rows.live and time.monotonic() < deadline:
        time.sleep(0.01)
    assert batcher.rows.free == batcher.rows.decoder.slots == 3 * 4  # every slot is free again
    assert batcher.rows.decoder.cache.capacity == 0  # and the idle pool holds no cache


def test_static_batching_stays_reachable(tokenizer_dir, tmp_path_factory):
    checkpoints = build_checkpoints(tokenizer_dir, tmp_path_factory.mktemp("serve_models"))
    body = {"model": "base", "prompt": "The cat", "max_tokens": 8, "temperature": 0.7, "seed": 3}
    texts = {}
    for mode in ("static", "continuous"):
        with running_server({"base": checkpoints["base"]}, batching=mode) as (url, _):
            assert health(url)["base"]["mode"] == mode
            texts[mode] = post(url, body)["choices"][0]["text"]
    assert texts["static"] == texts["continuous"]


def test_one_request_holds_at_most_max_batch_rows_slots(server):
    url, models = server
    stats = models["noise"].batcher.stats
    largest_before = stats.largest
    body = {"model": "noise", "prompt": "The cat", "n": 7, "max_tokens": 6, "temperature": 1.0, "seed": 2}
    choices = post(url, body)["choices"]
    assert len(choices) == 7 and stats.largest == max(largest_before, 3)  # 3 + 3 + 1 rows, never 7
    assert choices[6]["text"] == post(url, {**body, "n": 1, "seed": 8})["choices"][0]["text"]


def test_int8_serving_answers_as_int8_generate(tokenizer_dir, tmp_path_factory):
    checkpoints = build_checkpoints(tokenizer_dir, tmp_path_factory.mktemp("serve_models"))
    body = {"model": "base", "prompt": "The old king", "max_tokens": 12, "temperature": 0}
    with running_server({"base": checkpoints["base"]}, quantize="int8") as (url, models):
        text = post(url, body)["choices"][0]["text"]
        served = models["base"]
        assert isinstance(served.batcher.rows.decoder.lean.lm_head, Int8Linear)
        params = SamplingParams(max_new_tokens=12, temperature=0, stop_token_ids=served.stop_token_ids)
        (expected,) = generate(
            served.model,
            [served.encode_text("The old king")],
            params,
            pad_token_id=pad_id(served.tokenizer),
            tokenizer=served.tokenizer,
            quantize="int8",
        )
    assert text == expected.text
