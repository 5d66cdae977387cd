"""Shared fixtures: a small generated corpus and a tokenizer trained on it (session-scoped: built once)."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("RLHFKIT_CHROMIUM", "/usr/bin/chromium")
IN_CI = os.environ.get("CI", "").lower() in ("true", "1")


@pytest.fixture
def browser_ready() -> None:
    """Skip a browser test when Playwright or Chromium is missing; under CI (`CI=true`) fail it instead, since
    there they must run (`.ci/run` installs both)."""
    missing = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("playwright is not installed (the dev extra)")
    if not Path(CHROMIUM).exists():
        missing.append(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set RLHFKIT_CHROMIUM)")
    if not missing:
        return
    message = "browser test cannot run: " + "; ".join(missing)
    if IN_CI:
        pytest.fail(message + " (CI=true: browser tests must run)", pytrace=False)
    pytest.skip(message)


SUBJECTS = ["The cat", "A farmer", "The old king", "My sister", "The baker", "A small robot", "The teacher"]
VERBS = ["sees", "bakes", "finds", "paints", "carries", "likes", "sells"]
OBJECTS = [
    "a red apple",
    "the blue boat",
    "bread",
    "a long letter",
    "three stones",
    "the garden",
    "warm soup",
]
PLACES = ["in the morning", "near the river", "at the market", "after dinner", "in the city", "by the sea"]


def make_corpus_text(n_sentences: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    lines = []
    for _ in range(n_sentences):
        lines.append(
            f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(PLACES)}."
        )
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def one_torch_thread():
    """Micro models gain nothing from threads, and on a shared 2-core CPU extra threads only wait.

    Use with `pytestmark = pytest.mark.usefixtures("one_torch_thread")` in a test module.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text(make_corpus_text(3000))
    return path


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory, corpus_file) -> Path:
    from rlhfkit.tokenizer import train_tokenizer

    out = tmp_path_factory.mktemp("tok")
    train_tokenizer(corpus_file, 400, out)
    return out


# A price-total task's solution steps, as `world build --verifiable` writes them in `meta.steps`: look up two
# products, multiply each by its count, add (3 Kahal M7 bicycles and 2 Mone V5 laptops: $6255).
PRICE_TOTAL_STEPS = [
    {"op": "lookup", "of": "Kahal M7 bicycle", "field": "price", "value": 1119},
    {"op": "mul", "args": [3, 1119], "value": 3357},
    {"op": "lookup", "of": "Mone V5 laptop", "field": "price", "value": 1449},
    {"op": "mul", "args": [2, 1449], "value": 2898},
    {"op": "add", "args": [3357, 2898], "value": 6255},
]

# Micro RL fixtures shared by the policy-optimization tests (PPO, RLOO, GRPO, rejection sampling).
WORDS = [
    "the",
    "a",
    "cat",
    "dog",
    "sun",
    "moon",
    "tree",
    "river",
    "stone",
    "bird",
    "red",
    "blue",
    "small",
    "big",
]


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory) -> Path:
    """A randomly initialized micro Llama with an rlhfkit tokenizer (chat template, <|end|>)."""
    from rlhfkit.artifacts import save_hf_checkpoint
    from rlhfkit.models import build_model
    from rlhfkit.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("policy")
    corpus = root / "corpus.txt"
    corpus.write_text((" ".join(WORDS) + ".\n") * 40)
    tok = train_tokenizer(corpus, 300, root / "model")
    model = build_model("micro", len(tok), 128, tok, seed=0)
    save_hf_checkpoint(model, tok, root / "model")
    return root / "model"


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory) -> Path:
    from rlhfkit.data.jsonl import write_jsonl

    path = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    rows = [
        {
            "id": f"p{i}",
            "messages": [{"role": "user", "content": f"tell me about the {w} {i}"}],
            "category": "chat",
            # a demo-world task (a bare topic), so PPO's gold judge scores these prompts
            "meta": {"kind": "bare_topic", "task": "ambiguous", "entity": w, "topic": w, "topic_words": [w]},
        }
        for i, w in ((i, WORDS[i % len(WORDS)]) for i in range(24))
    ]
    write_jsonl(path, rows)
    return path


@pytest.fixture(scope="module")
def rm_dir(policy_dir, tmp_path_factory) -> Path:
    """A micro sequence-classification reward model on the policy's backbone, with a recorded score std."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from rlhfkit.tokenizer import load_tokenizer

    out = tmp_path_factory.mktemp("rm") / "rm"
    torch.manual_seed(1)
    rm = AutoModelForSequenceClassification.from_pretrained(str(policy_dir), num_labels=1)
    rm.config.pad_token_id = load_tokenizer(policy_dir).pad_token_id
    rm.save_pretrained(out)
    load_tokenizer(policy_dir).save_pretrained(out)
    (out / "rlhfkit.json").write_text(json.dumps({"stage": "reward", "calibration": {"std": 0.5}}))
    return out


def saved_reward_model(folder: Path, out: Path) -> Path:
    """`folder` loaded as a reward model (a fresh, seeded scalar head) and saved, so every load scores alike."""
    import torch

    from rlhfkit.reward.model import load_reward_model

    torch.manual_seed(0)
    model, tokenizer = load_reward_model(folder)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
