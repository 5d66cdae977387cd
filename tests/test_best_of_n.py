"""Best-of-n keeps, for every group of n samples, the one the reward model scores highest."""

from __future__ import annotations

import json
import math

import torch
from transformers import AutoTokenizer, LlamaForSequenceClassification

from rlhfkit.cli import main
from rlhfkit.generation import Completion
from rlhfkit.generation.best_of import best_in_groups, kl_bound, pick_best_of
from rlhfkit.models import build_model, preset_config
from rlhfkit.reward.model import load_reward_model, score_conversations


def _reward_model(tmp_path, tokenizer_dir):
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    cfg = preset_config("micro", len(tok), 128, tok)
    cfg.num_labels = 1
    torch.manual_seed(1)
    rm = LlamaForSequenceClassification(cfg)
    rm.save_pretrained(tmp_path / "rm")
    tok.save_pretrained(tmp_path / "rm")
    return tmp_path / "rm"


def test_pick_best_of_takes_the_highest_scored_sample_of_each_group(tmp_path, tokenizer_dir):
    rm_dir = _reward_model(tmp_path, tokenizer_dir)
    prompts = [
        [{"role": "user", "content": "Who sells bread?"}],
        [{"role": "user", "content": "Who sells soup?"}],
    ]
    texts = [
        "The baker.",
        "A farmer.",
        "The cook.",
        "Bread.",
        "Soup is sold by the cook.",
        "No.",
        "Yes.",
        "The sea.",
    ]
    completions = [Completion(token_ids=[], logprobs=[], finish_reason="stop", text=t) for t in texts]
    kept, scores = pick_best_of(completions, prompts, best_of=2, reranker=str(rm_dir))
    rm, tok = load_reward_model(rm_dir)
    items = [(prompts[i // 4], [{"role": "assistant", "content": t}]) for i, t in enumerate(texts)]
    expected = score_conversations(rm, tok, items, 128)
    for g in range(4):  # 2 prompts x (4 samples / best_of 2) groups
        a, b = 2 * g, 2 * g + 1
        best = a if expected[a] >= expected[b] else b
        assert kept[g].text == texts[best]
        assert abs(scores[g] - expected[best]) < 1e-5


def test_generate_best_of_cli_writes_n_completions_with_rewards(tmp_path, tokenizer_dir):
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    from rlhfkit.artifacts import save_hf_checkpoint

    save_hf_checkpoint(build_model("micro", len(tok), 128, tok), tok, tmp_path / "policy")
    rm_dir = _reward_model(tmp_path, tokenizer_dir)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(
        json.dumps({"messages": [{"role": "user", "content": "Who sells bread?"}], "id": "a"}) + "\n"
    )
    out = tmp_path / "c.jsonl"
    args = ["generate", "--model", str(tmp_path / "policy"), "--prompts", str(prompts), "--out", str(out), "--n", "2",
            "--best-of", "3", "--reward", str(rm_dir), "--max-new-tokens", "6"]  # fmt: skip
    assert main(args) == 0
    rec = json.loads(out.read_text())
    assert len(rec["completions"]) == 2 and len(rec["meta"]["generation"]["rewards"]) == 2
    assert (
        main(
            [
                "generate",
                "--model",
                str(tmp_path / "policy"),
                "--prompts",
                str(prompts),
                "--out",
                str(out),
                "--best-of",
                "2",
            ]
        )
        == 1
    )


def test_a_finished_sample_beats_a_higher_scored_cut_off_one():
    scores = [0.9, 0.2, 0.5, 0.7, 0.1, 0.3]
    finished = [False, True, True, False, False, False]
    # group 1: the cut-off 0.9 loses to the finished 0.2; group 2: the finished 0.5 wins;
    # group 3: none finished, so the best cut-off one is kept
    assert best_in_groups(scores[:2], finished[:2], 2) == [1]
    assert best_in_groups(scores, finished, 3) == [2, 3]
    assert best_in_groups(scores[4:], finished[4:], 2) == [1]
    assert abs(kl_bound(8) - (math.log(8) - 7 / 8)) < 1e-12 and kl_bound(1) == 0.0
