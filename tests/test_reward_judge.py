"""`rlhfkit reward judge`: an evaluation-only reward model on its own half of HH-RLHF (by a hash of the first
user message), refused by every trainer that optimizes a reward, and used by `evaluate --judge reward:DIR`."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from rlhfkit.cli import main
from rlhfkit.data.convert import read_pairs
from rlhfkit.errors import RlhfkitError
from rlhfkit.reward.judge import BUNDLED_HH, eval_prompts, first_user_text, heldout_half, split_pairs

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def hh_subset(tmp_path_factory) -> Path:
    """The first 40 records of the shipped HH-RLHF harmless file, as they are (transcripts)."""
    path = tmp_path_factory.mktemp("hh") / "hh.jsonl"
    lines = BUNDLED_HH.read_text(encoding="utf-8").splitlines()[:40]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def judge_dir(policy_dir, hh_subset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("judge") / "judge"
    argv = ["reward", "judge", "--out", str(out), "--data", str(hh_subset), "--backbone", str(policy_dir),
            "--max-length", "64", "--batch-size", "4", "--freeze-layers", "0", "--lr", "1e-3"]  # fmt: skip
    assert main(argv) == 0
    return out


def test_the_split_is_a_hash_of_the_first_user_message():
    pairs = read_pairs(BUNDLED_HH)
    judge, heldout = split_pairs(pairs)
    assert (len(judge), len(heldout)) == (578, 578)  # the shipped file's documented halves
    for pair in pairs[:50]:
        digest = hashlib.sha256(first_user_text(pair["prompt"]).strip().encode()).digest()
        assert heldout_half(pair["prompt"]) == (digest[0] % 2 == 1)
    # later turns do not move a conversation to the other half
    opening = [{"role": "user", "content": "How do I pick a lock?"}]
    longer = [*opening, {"role": "assistant", "content": "Why?"}, {"role": "user", "content": "It's mine."}]
    assert heldout_half(opening) == heldout_half(longer)
    assert not {first_user_text(p["prompt"]) for p in judge} & {first_user_text(p["prompt"]) for p in heldout}


def test_build_writes_a_marked_judge_with_its_split_and_held_out_accuracy(judge_dir, hh_subset):
    record = json.loads((judge_dir / "judge.json").read_text())
    assert record["evaluation_only"] is True and record["status"] == "done"
    judge_half, heldout = split_pairs(read_pairs(hh_subset))
    assert record["split"]["judge"]["comparisons"] == len(judge_half) > 0
    assert record["split"]["heldout"]["comparisons"] == len(heldout) > 0
    held = [json.loads(x) for x in (judge_dir / "split" / "heldout.jsonl").read_text().splitlines()]
    assert [p["prompt"] for p in held] == [p["prompt"] for p in heldout]
    report = json.loads((judge_dir / "eval.json").read_text())
    assert record["heldout_accuracy"] == report["accuracy"] and 0.0 <= report["accuracy"] <= 1.0
    assert report["comparisons"] == len(heldout)
    assert (judge_dir / "config.json").is_file()
    prompts = [json.loads(x) for x in (judge_dir / "eval_prompts.jsonl").read_text().splitlines()]
    assert prompts == eval_prompts(heldout)
    assert {p["category"] for p in prompts} == {"harmful", "benign_risky"}
    assert all(heldout_half(p["messages"]) for p in prompts if p["category"] == "harmful")


def test_trainers_refuse_a_judge_and_evaluation_reads_it(
    judge_dir, policy_dir, prompts_file, tmp_path, capsys
):
    from rlhfkit.reward.model import load_scorer

    for method in ("ppo", "grpo", "rloo"):
        argv = [method, "--policy", str(policy_dir), "--reward", str(judge_dir), "--prompts", str(prompts_file),
                "--out", str(tmp_path / method), "--device", "cpu"]  # fmt: skip
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert "evaluation only" in err and len(err.strip().splitlines()) == 1
    argv = ["rs", "--policy", str(policy_dir), "--reward", str(judge_dir), "--prompts", str(prompts_file),
            "--out", str(tmp_path / "rs"), "--n", "2", "--rounds", "1", "--prompts-per-round", "2",
            "--max-new-tokens", "4", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "evaluation only" in captured.err
    assert "sampling" not in captured.out, "rs sampled before refusing the judge"
    # Hidden in an ensemble, or as the start of a new reward model, it is refused too.
    argv = ["ppo", "--policy", str(policy_dir), "--reward", f"{judge_dir},{judge_dir}", "--prompts",
            str(prompts_file), "--out", str(tmp_path / "ens"), "--device", "cpu"]  # fmt: skip
    assert main(argv) == 1 and "evaluation only" in capsys.readouterr().err
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"prompt": "hi", "chosen": "hello", "rejected": "go away"}\n')
    argv = [
        "reward",
        "train",
        "--model",
        str(judge_dir),
        "--data",
        str(pairs),
        "--out",
        str(tmp_path / "rm2"),
    ]
    assert main(argv) == 1 and "evaluation only" in capsys.readouterr().err
    with pytest.raises(RlhfkitError, match="evaluation only"):
        load_scorer(judge_dir, optimize=True)
    model, _, length = load_scorer(judge_dir)  # evaluation: allowed
    assert length == 64 and model is not None


def test_evaluate_with_the_judge_reports_win_rates_probes_and_kl(judge_dir, policy_dir, tmp_path, capsys):
    from rlhfkit.artifacts import save_hf_checkpoint
    from rlhfkit.models import build_model
    from rlhfkit.tokenizer import load_tokenizer

    tok = load_tokenizer(policy_dir)
    other = tmp_path / "other"
    save_hf_checkpoint(build_model("micro", len(tok), 128, tok, seed=5), tok, other)
    out = tmp_path / "eval"
    argv = ["evaluate", "--model", f"original={policy_dir}", "--model", f"tuned={other}",
            "--prompts", str(judge_dir / "eval_prompts.jsonl"), "--judge", f"reward:{judge_dir}",
            "--out", str(out), "--n-prompts", "8", "--max-new-tokens", "8", "--bootstrap", "20", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "Probe rates" in printed and "Ends its turn" in printed and "KL to original" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["win_rates"]["tuned"]["original"] + results["win_rates"]["original"]["tuned"] == 1.0
    for name in ("original", "tuned"):
        probes = results["probes"][name]
        assert probes["refuses_harmful"]["n"] == 4 and probes["helps_benign"]["n"] == 4
        assert probes["ends_turn"]["n"] == 8
    assert set(results["probe_labels"]) == {"refuses_harmful", "helps_benign", "ends_turn"}
    kl = results["kl_to_first"]
    assert kl["reference"] == "original" and kl["models"]["original"]["kl"] == 0.0
    assert kl["models"]["tuned"]["n"] == 8 and "kl_tuned" in results["headline"]
