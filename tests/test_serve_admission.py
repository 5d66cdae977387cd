"""Admission under a flood (issue #25, item 4): oversized prompts refused before tokenization, a bounded and
per-client fair queue in front of the tokenizer, and a small request answered meanwhile.

Before the fix, 50 concurrent ~1 MiB prompts were each tokenized in full (on the default thread pool, no
bound) only to be refused for their length: RSS grew by gigabytes and a 4-token request waited ~25 s.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
import pytest

from rlhfkit.serve.limits import Limits
from serve_helpers import build_checkpoints, one_torch_thread, running_server

CHAT = [{"role": "user", "content": "What does the cat do?"}]
FLOOD = 50


@pytest.fixture(scope="module")
def checkpoints(tokenizer_dir, tmp_path_factory):
    return build_checkpoints(tokenizer_dir, tmp_path_factory.mktemp("serve_models"))


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


class PeakRSS:
    """Samples this process's resident memory every few ms (the server runs in it, on a thread)."""

    def __init__(self) -> None:
        self.peak = self.start = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss_bytes())

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak - self.start


def flood_bodies() -> list[bytes]:
    """Bodies just under the default 1 MiB limit: valid JSON whose prompt is far beyond the context."""
    text = ("The cat sits on the mat by the door. " * 30_000)[:1_000_000]
    completion = json.dumps({"model": "base", "prompt": text, "max_tokens": 4}).encode()
    chat = json.dumps({"model": "chat", "messages": [{"role": "user", "content": text}]}).encode()
    return [completion if i % 2 else chat for i in range(FLOOD)]


async def send_flood(url: str, bodies: list[bytes], started: threading.Event) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=FLOOD + 5)
    headers = {"authorization": "Bearer flood", "content-type": "application/json"}
    async with httpx.AsyncClient(timeout=120, limits=limits, headers=headers) as client:
        tasks = []
        for body in bodies:
            path = "/chat/completions" if b'"messages"' in body[:40] else "/completions"
            tasks.append(asyncio.ensure_future(client.post(f"{url}{path}", content=body)))
        started.set()
        return await asyncio.gather(*tasks)


def test_a_flood_of_oversized_prompts_neither_grows_memory_nor_stalls_a_small_request(
    checkpoints, monkeypatch
):
    from rlhfkit.serve.served import ServedModel

    seen = []  # length of every text the tokenizer was given
    original_text, original_chat = ServedModel.encode_text, ServedModel.encode_chat
    monkeypatch.setattr(
        ServedModel, "encode_text", lambda self, t: seen.append(len(t)) or original_text(self, t)
    )
    monkeypatch.setattr(
        ServedModel,
        "encode_chat",
        lambda self, m: seen.append(sum(len(x["content"]) for x in m)) or original_chat(self, m),
    )
    bodies = flood_bodies()
    assert all(len(b) < Limits().max_body_bytes for b in bodies)  # the body limit lets them all in
    with one_torch_thread(), running_server(checkpoints) as (url, _):
        small = {"model": "chat", "messages": CHAT, "max_tokens": 4, "seed": 0}
        assert httpx.post(f"{url}/chat/completions", json=small, timeout=60).status_code == 200  # warm
        asyncio.run(send_flood(url, bodies[:4], threading.Event()))  # and the flood's code paths (not timed)
        memory = PeakRSS()
        results: list = []
        started = threading.Event()
        flood = threading.Thread(target=lambda: results.extend(asyncio.run(send_flood(url, bodies, started))))
        flood.start()
        started.wait(30)
        time.sleep(0.3)  # the flood's bodies are arriving and being parsed
        begun = time.monotonic()
        answer = httpx.post(
            f"{url}/chat/completions", json=small, headers={"authorization": "Bearer small"}, timeout=120
        )
        small_seconds = time.monotonic() - begun
        flood.join(180)
        growth = memory.stop()
    print(f"\n4-token chat during the flood: {small_seconds:.2f} s; peak RSS growth {growth / 2**20:.0f} MiB")
    assert answer.status_code == 200, answer.text
    assert len(results) == FLOOD
    for response in results:
        if response.status_code in (429, 503):  # the bounded queue was full: try again later
            assert float(response.headers["retry-after"]) > 0
            continue
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "context_length_exceeded"
    assert max(seen) < 50_000  # never the full megabyte: refused on its length in characters first
    # The goal is <= 2 s (docs/serve.md): 0.2-0.7 s on a quiet 2-core machine, up to 2.6 s seen with other
    # jobs on the CPU, so 4 s here. Before the fix: 66 s, and 1,586 MiB more memory.
    assert small_seconds <= 4.0
    assert growth < 400 * 2**20


def test_the_character_cap_refuses_only_what_cannot_fit(checkpoints, monkeypatch):
    """Over `context x longest token` characters: refused without tokenizing. At the cap: tokenized."""
    from rlhfkit.serve.served import ServedModel

    seen = []
    original_text, original_chat = ServedModel.encode_text, ServedModel.encode_chat
    monkeypatch.setattr(
        ServedModel, "encode_text", lambda self, t: seen.append(len(t)) or original_text(self, t)
    )
    monkeypatch.setattr(ServedModel, "encode_chat", lambda self, m: seen.append(-1) or original_chat(self, m))
    with running_server(checkpoints) as (url, models):
        served = models["base"]
        cap = served.context_length * max(len(token) for token in served.tokenizer.get_vocab())

        def complete(prompt: str) -> dict:
            body = {"model": "base", "prompt": prompt, "max_tokens": 1}
            response = httpx.post(f"{url}/completions", json=body, timeout=60)
            assert response.status_code == 400, response.text
            return response.json()["error"]

        error = complete("a" * (cap + 1))
        assert (error["param"], error["code"]) == ("prompt", "context_length_exceeded")
        assert f"no text longer than {cap} characters" in error["message"]
        assert seen == []  # refused on its length alone
        error = complete("a" * cap)  # might fit: tokenized, then refused on its tokens
        assert (error["param"], error["code"]) == ("prompt", "context_length_exceeded")
        assert seen == [cap]
        chat = {"model": "chat", "messages": [{"role": "user", "content": "a" * (cap + 1)}]}
        over = httpx.post(f"{url}/chat/completions", json=chat, timeout=60)
        assert over.status_code == 400
        assert (over.json()["error"]["param"], over.json()["error"]["code"]) == (
            "messages",
            "context_length_exceeded",
        )
        assert seen == [cap]
        fits = {"model": "base", "prompt": "The cat. " * 5, "max_tokens": 2}
        assert httpx.post(f"{url}/completions", json=fits, timeout=60).status_code == 200


def test_the_queue_takes_clients_in_turn_and_refuses_beyond_its_bounds():
    """One worker busy; client a queues 4, b and c one each: b and c go before a's second, and a full queue
    (or a client over its share) is refused at once with Retry-After, not queued."""
    from rlhfkit.serve.admission import Admission
    from rlhfkit.serve.errors import APIError

    async def scenario() -> tuple[list[str], list[int]]:
        gate = Admission(workers=1, max_waiting=6, max_waiting_per_client=4)
        order: list[str] = []
        release = threading.Event()
        busy = asyncio.ensure_future(gate.run("a", release.wait))
        await asyncio.sleep(0.05)
        queued = [asyncio.ensure_future(gate.run("a", order.append, f"a{i}")) for i in range(4)]
        queued += [asyncio.ensure_future(gate.run(c, order.append, f"{c}0")) for c in ("b", "c")]
        await asyncio.sleep(0.05)
        refused = []
        for client in ("a", "d"):  # a is over its share; the queue is full for d
            with pytest.raises(APIError) as caught:
                await gate.run(client, order.append, f"{client}-refused")
            assert caught.value.headers["Retry-After"] == "1"
            refused.append(caught.value.status)
        queued[-1].cancel()  # c leaves (its client disconnected): its place is free for d
        await asyncio.sleep(0.05)
        queued.append(asyncio.ensure_future(gate.run("d", order.append, "d0")))
        await asyncio.sleep(0.05)
        release.set()
        await asyncio.gather(busy, *queued, return_exceptions=True)
        assert (gate.busy, gate.queued, dict(gate.waiting)) == (0, 0, {})
        return order, refused

    order, refused = asyncio.run(scenario())
    assert refused == [429, 503]
    assert order == ["a0", "b0", "d0", "a1", "a2", "a3"]
