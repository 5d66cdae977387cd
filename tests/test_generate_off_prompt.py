"""Off-prompt candidates: responses sampled for other prompts, added so annotators rank replies that do not fit."""

from __future__ import annotations

import json

from transformers import AutoTokenizer

from rlhfkit.artifacts import save_hf_checkpoint
from rlhfkit.cli import main
from rlhfkit.generation.candidates import borrow_off_prompt
from rlhfkit.models import build_model


def test_borrowed_responses_come_from_prompts_of_another_category():
    categories = ["howto", "howto", "unknowable", "harmful", "unknowable"]
    n, k = 3, 2
    borrowed = borrow_off_prompt(categories, n, k, seed=0)
    assert [len(b) for b in borrowed] == [k] * len(categories)
    for index, picks in enumerate(borrowed):
        for j in picks:
            source = j // n
            assert source != index and categories[source] != categories[index]
            assert 0 <= j < len(categories) * n
    assert borrowed == borrow_off_prompt(categories, n, k, seed=0)  # seeded
    assert borrow_off_prompt(categories, n, 0, seed=0) == [[]] * len(categories)


def test_one_category_borrows_from_any_other_prompt():
    borrowed = borrow_off_prompt(["", "", ""], 2, 3, seed=1)
    assert all(j // 2 != index for index, picks in enumerate(borrowed) for j in picks)
    assert borrow_off_prompt(["only"], 2, 1, seed=0) == [[]]  # nothing else to borrow from


def test_generate_appends_off_prompt_responses_and_names_their_source(tmp_path, tokenizer_dir):
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    save_hf_checkpoint(build_model("micro", len(tok), 128, tok), tok, tmp_path / "policy")
    prompts = tmp_path / "p.jsonl"
    rows = [("a", "Who sells bread?", "factual"), ("b", "How do I bake?", "howto")]
    prompts.write_text(
        "".join(
            json.dumps({"messages": [{"role": "user", "content": q}], "id": i, "category": c}) + "\n"
            for i, q, c in rows
        )
    )
    out = tmp_path / "c.jsonl"
    args = ["generate", "--model", str(tmp_path / "policy"), "--prompts", str(prompts), "--out", str(out),
            "--n", "2", "--off-prompt", "1", "--max-new-tokens", "5"]  # fmt: skip
    assert main(args) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    own = {r["id"]: r["completions"][:2] for r in records}
    for record, other in zip(records, ["b", "a"]):
        gen = record["meta"]["generation"]
        assert len(record["completions"]) == 3 and len(gen["finish_reasons"]) == 3
        assert gen["off_prompt"] == 1 and gen["off_prompt_sources"] == [other]
        assert record["completions"][2] in own[other]
    assert main(args[:-4] + ["--off-prompt", "-1"]) == 1
