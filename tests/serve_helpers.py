"""Shared by the serve tests: two micro checkpoints trained for a few seconds, and a server on loopback.

The "chat" model is trained on short chats so that it ends its turns with `<|end|>` (finish_reason "stop"
happens naturally); the "base" model on plain sentences separated by `<|endoftext|>`. Both are saved as
real checkpoint folders and loaded through `load_served_models`, as `rlhfkit serve` does.
"""

from __future__ import annotations

import json
import random
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import torch

from conftest import OBJECTS, PLACES, SUBJECTS, VERBS

CONTEXT = 128


def sentence(rng: random.Random) -> str:
    return f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(PLACES)}."


def chat_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        subject = rng.choice(SUBJECTS)
        answer = f"{subject} {rng.choice(VERBS)} {rng.choice(OBJECTS)}."
        texts.append(f"<|user|>What does {subject.lower()} do?<|end|><|assistant|>{answer}<|end|>")
    return texts


def base_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [f"{sentence(rng)} {sentence(rng)}<|endoftext|>" for _ in range(n)]


def train_micro(tokenizer, texts: list[str], steps: int, seed: int):
    """A micro model fitted to `texts` with a short plain AdamW loop (a few seconds on a CPU)."""
    from rlhfkit.models import build_model

    torch.manual_seed(seed)
    model = build_model("micro", len(tokenizer), CONTEXT, tokenizer, seed=seed)
    stream = [t for text in texts for t in tokenizer(text, add_special_tokens=False)["input_ids"]]
    data = torch.tensor(stream)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-2)
    window, batch = 40, 8
    gen = torch.Generator().manual_seed(seed)
    model.train()
    with one_torch_thread():
        _fit(model, optimizer, data, window, batch, steps, gen)
    return model.eval()


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """A micro model gains nothing from threads, and loses a lot on a busy CPU (measured: a 4-token request
    took 1.2-1.7 s with torch's 2 threads at load average 10, 0.1 s with one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _fit(model, optimizer, data, window, batch, steps, gen) -> None:
    for _ in range(steps):
        starts = torch.randint(0, len(data) - window - 1, (batch,), generator=gen)
        x = torch.stack([data[s : s + window] for s in starts])
        loss = model(input_ids=x, labels=x).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def save_checkpoint(model, tokenizer, out: Path, stage: str) -> Path:
    from rlhfkit.artifacts import save_hf_checkpoint

    save_hf_checkpoint(model, tokenizer, out)
    (out / "rlhfkit.json").write_text(json.dumps({"stage": stage}))
    return out


_BUILT: dict[Path, dict[str, Path]] = {}


def build_checkpoints(tokenizer_dir: Path, out: Path) -> dict[str, Path]:
    """The two checkpoints, built once per test session (every serve test module shares them)."""
    from rlhfkit.tokenizer import load_tokenizer

    if tokenizer_dir in _BUILT:
        return _BUILT[tokenizer_dir]

    tokenizer = load_tokenizer(tokenizer_dir)
    base = train_micro(tokenizer, base_texts(300), steps=40, seed=1)
    chat = train_micro(tokenizer, chat_texts(300), steps=40, seed=2)
    _BUILT[tokenizer_dir] = {
        "base": save_checkpoint(base, tokenizer, out / "base", "base"),
        "chat": save_checkpoint(chat, tokenizer, out / "chat", "ppo"),
    }
    return _BUILT[tokenizer_dir]


TOOL_QUESTION = [{"role": "user", "content": "How much is the Lomar K3 phone?"}]
TOOL_RESULT = '{"item": "Lomar K3 phone", "price": 749}'  # what the world's `lookup` answers
TOOL_ANSWER = "It costs $749."


def tool_chat() -> list[dict]:
    """The one conversation the "tools" model learns by heart: a call to `lookup`, its result, the answer."""
    from rlhfkit.data.tool_calls import ToolCall, call_message

    call = call_message(ToolCall("lookup", {"item": "Lomar K3 phone"}), content="Let me look.")
    return [
        *TOOL_QUESTION,
        call,
        {"role": "tool", "content": TOOL_RESULT},
        {"role": "assistant", "content": TOOL_ANSWER},
    ]


def tool_checkpoint(tokenizer_dir: Path, out: Path) -> Path:
    """A micro model that makes a tool call, reads the result and answers, greedily: `tool_chat` rendered by the
    chat template (152 tokens with the tests' tokenizer), learned by heart in 150 full-sequence steps (about
    2 s; greedy replays it for every seed tried, where `train_micro`'s random windows did not)."""
    from rlhfkit.models import build_model
    from rlhfkit.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_dir)
    ids = torch.tensor(
        [tokenizer.apply_chat_template(tool_chat(), tokenize=True, return_dict=True)["input_ids"]]
    )
    torch.manual_seed(4)
    model = build_model("micro", len(tokenizer), 256, tokenizer, seed=4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    model.train()
    with one_torch_thread():
        for _ in range(150):
            loss = model(input_ids=ids, labels=ids).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return save_checkpoint(model.eval(), tokenizer, out, "sft")


def untrained_checkpoint(tokenizer_dir: Path, out: Path, context: int = CONTEXT) -> Path:
    """Random weights: its rows rarely stop early, so a request runs to `max_tokens` (`context` allows long ones)."""
    from rlhfkit.models import build_model
    from rlhfkit.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_dir)
    return save_checkpoint(
        build_model("micro", len(tokenizer), context, tokenizer, seed=3), tokenizer, out, "base"
    )


@contextmanager
def running_server(checkpoints: dict[str, Path], api_key: str | None = None, **options) -> Iterator[tuple]:
    """A real uvicorn server on 127.0.0.1 (any free port) serving the checkpoints; yields (base_url, models)."""
    from rlhfkit.serve import create_app, load_served_models
    from rlhfkit.serve.server import background

    specs = [f"{name}={path}" for name, path in checkpoints.items()]
    models = load_served_models(specs, **options)
    try:
        with background(create_app(models, api_key=api_key)) as url:
            yield url, models
    finally:
        for served in models.values():
            served.close()


def wait_until_healthy(process: subprocess.Popen, port: int, timeout_s: float = 120) -> None:
    """Wait for a `rlhfkit serve` process to answer /health, failing with its output if it exits first."""
    deadline = time.monotonic() + timeout_s
    while True:
        assert process.poll() is None, process.stdout.read()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.2)
