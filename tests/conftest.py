"""Shared fixtures: a small generated corpus and a tokenizer trained on it (session-scoped: built once)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

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
