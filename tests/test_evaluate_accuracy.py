"""`evaluate` on prompts that carry an answer: accuracy, pass@k and verdicts, overall and by difficulty."""

from __future__ import annotations

import importlib
import json
from collections import Counter
from pathlib import Path

import pytest

from rlhfkit.data.jsonl import write_jsonl
from rlhfkit.evaluate import EvalConfig, run
from rlhfkit.evaluate.accuracy import ks_for, pass_at_k


def test_pass_at_k_matches_a_hand_count():
    # 4 samples, 1 right: a random pair holds it in 3 of the 6 pairs
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)
    assert (
        pass_at_k(4, 0, 4) == 0.0 and pass_at_k(4, 3, 2) == 1.0 and pass_at_k(5, 2, 1) == pytest.approx(0.4)
    )
    assert ks_for(4) == [1, 2, 4] and ks_for(6) == [1, 2, 4, 6] and ks_for(1) == [1]


@pytest.fixture
def answered_prompts(tmp_path) -> Path:
    rows = [
        {
            "id": name,
            "messages": [{"role": "user", "content": f"question {name}?"}],
            "meta": {"answer": answer, "difficulty": difficulty},
        }
        for name, answer, difficulty in (("a", 11, 1), ("b", 12, 1), ("c", 13, 2), ("d", 14, 2))
    ]
    rows.append({"id": "e", "messages": [{"role": "user", "content": "tell me a story"}]})  # no answer
    path = tmp_path / "prompts.jsonl"
    write_jsonl(path, rows)
    return path


# which of the 4 samples of each prompt is right (sample 0 is the one the judge scores)
RIGHT = {"a": {0}, "b": {2}, "c": set(), "d": {0, 1, 2, 3}}
ANSWER = {"a": 11, "b": 12, "c": 13, "d": 14}


def fake_generate(name, folder, prompts, cfg, progress=None) -> dict:
    seen: Counter = Counter()
    texts = []
    for p in prompts:
        key = p["id"]
        k = seen[key]
        seen[key] += 1
        if key == "e":
            texts.append("Once upon a time.")
        else:
            texts.append(f"So the answer is {ANSWER[key] + (0 if k in RIGHT[key] else 1)}.")
    n = len(texts)
    return {"texts": texts, "finish": ["stop"] * n, "tokens": [5] * n, "stats": {"seconds": 0.0}}


def test_accuracy_and_pass_at_k_by_difficulty(monkeypatch, tokenizer_dir, tmp_path, answered_prompts):
    from rlhfkit.artifacts import save_hf_checkpoint
    from rlhfkit.models import build_model
    from rlhfkit.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer_dir)
    save_hf_checkpoint(build_model("micro", len(tok), 128, tok, seed=0), tok, tmp_path / "m")
    # the module, not the `run` function that rlhfkit.evaluate exports under the same name
    monkeypatch.setattr(importlib.import_module("rlhfkit.evaluate.run"), "generate_responses", fake_generate)
    cfg = EvalConfig(
        models={"m": str(tmp_path / "m")},
        prompts=str(answered_prompts),
        out=str(tmp_path / "ev"),
        quiet=True,
        bootstrap=0,
        pass_samples=4,
    )
    results = run(cfg)
    acc = results["verifiable"]["m"]
    assert acc["n"] == 4 and acc["samples_per_prompt"] == 4
    assert acc["accuracy"] == 0.5  # a and d are right on their first sample
    assert acc["pass_at"] == pytest.approx({"1": 6 / 16, "2": 0.5, "4": 0.75})
    assert acc["verdicts"] == {"correct": 0.5, "wrong": 0.5, "no_answer": 0.0, "contradictory": 0.0}
    assert acc["by_difficulty"]["1"] == {"n": 2, "accuracy": 0.5, "pass_at": {"1": 0.25, "2": 0.5, "4": 1.0}}
    assert acc["by_difficulty"]["2"]["pass_at"]["4"] == 0.5
    assert results["headline"]["accuracy_m"] == 0.5
    lines = [json.loads(x) for x in (tmp_path / "ev" / "responses.jsonl").read_text().splitlines()]
    verdicts = {r["id"]: r["responses"]["m"].get("verdict") for r in lines}
    assert verdicts == {"a": "correct", "b": "wrong", "c": "wrong", "d": "correct", "e": None}


def test_real_sampling_draws_distinct_extra_samples(tokenizer_dir, tmp_path, answered_prompts):
    from rlhfkit.artifacts import save_hf_checkpoint
    from rlhfkit.models import build_model
    from rlhfkit.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer_dir)
    save_hf_checkpoint(build_model("micro", len(tok), 128, tok, seed=0), tok, tmp_path / "m")
    cfg = EvalConfig(
        models={"m": str(tmp_path / "m")},
        prompts=str(answered_prompts),
        out=str(tmp_path / "ev"),
        quiet=True,
        bootstrap=0,
        pass_samples=3,
        max_new_tokens=8,
        temperature=1.0,
    )
    results = run(cfg)
    acc = results["verifiable"]["m"]
    assert acc["samples_per_prompt"] == 3 and set(acc["pass_at"]) == {"1", "2", "3"}
    assert sum(acc["verdicts"].values()) == pytest.approx(1.0)
    lines = [json.loads(x) for x in (tmp_path / "ev" / "responses.jsonl").read_text().splitlines()]
    assert len(lines) == 5  # the extra samples feed pass@k only
