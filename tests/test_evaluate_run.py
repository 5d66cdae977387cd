"""`rlhfkit evaluate` end to end on two micro models and demo-world evaluation prompts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import saved_reward_model
from rlhfkit.cli import main
from rlhfkit.evaluate import EvalConfig, headline_metrics, run
from rlhfkit.evaluate.commands import parse_models
from rlhfkit.evaluate.run import pick_prompts
from rlhfkit.world import judge_score


@pytest.fixture(scope="module")
def micro_models(tmp_path_factory, tokenizer_dir) -> dict[str, Path]:
    from rlhfkit.artifacts import save_hf_checkpoint
    from rlhfkit.models import build_model
    from rlhfkit.tokenizer import load_tokenizer

    root = tmp_path_factory.mktemp("models")
    tok = load_tokenizer(tokenizer_dir)
    out = {}
    for seed, name in enumerate(["base", "sft"]):
        model = build_model("micro", len(tok), 128, tok, seed=seed)
        save_hf_checkpoint(model, tok, root / name)
        out[name] = root / name
    return out


@pytest.fixture(scope="module")
def eval_prompts(tmp_path_factory) -> Path:
    from rlhfkit.world import build_world

    world = tmp_path_factory.mktemp("world")
    build_world(world, seed=0, size="small")
    return world / "eval_prompts.jsonl"


def config(models: dict[str, Path], prompts: Path, out: Path, **kw) -> EvalConfig:
    base = dict(n_prompts=8, max_new_tokens=12, bootstrap=50, quiet=True, seed=3)
    base.update(kw)
    return EvalConfig(
        models={k: str(v) for k, v in models.items()}, prompts=str(prompts), out=str(out), **base
    )


def test_prompts_are_taken_round_robin_over_categories(eval_prompts):
    prompts = pick_prompts(eval_prompts, 8)
    assert len(prompts) == 8
    assert len({p["category"] for p in prompts}) == 8
    assert all(p["messages"][-1]["role"] == "user" for p in prompts)
    assert len(pick_prompts(eval_prompts)) == sum(1 for line in eval_prompts.open() if line.strip())


def test_evaluate_two_micro_models_end_to_end(micro_models, eval_prompts, tmp_path):
    results = run(config(micro_models, eval_prompts, tmp_path / "eval"))
    saved = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert saved["win_rates"] == results["win_rates"]
    assert results["n_prompts"] == 8 and list(results["models"]) == ["base", "sft"]
    assert results["win_rates"]["base"]["sft"] + results["win_rates"]["sft"]["base"] == pytest.approx(1.0)
    assert {r["model"] for r in results["ranking"]} == {"base", "sft"}
    for row in results["ranking"]:
        assert row["elo_low"] <= row["elo"] <= row["elo_high"]
    assert set(results["by_category"]) == set(results["categories"])
    assert sum(v["n"] for v in results["by_category"].values()) == 8
    probes = results["probes"]["sft"]
    assert probes["honest_unknowable"]["n"] >= 1 and probes["refuses_harmful"]["n"] >= 1
    assert results["generation"]["sft"]["tokens"] > 0

    records = [json.loads(line) for line in (tmp_path / "eval" / "responses.jsonl").open()]
    assert len(records) == 8
    for record in records:
        assert set(record["responses"]) == {"base", "sft"}
        for resp in record["responses"].values():
            gold = judge_score(record["prompt"], resp["text"], record["meta"])
            assert resp["score"] == gold.total and resp["parts"] == gold.parts
            assert resp["finish_reason"] in ("stop", "length") and resp["tokens"] >= 1
    means = {m: sum(r["responses"][m]["score"] for r in records) / 8 for m in ("base", "sft")}
    assert means == pytest.approx(results["mean_score"])

    again = run(config(micro_models, eval_prompts, tmp_path / "again"))
    assert (tmp_path / "again" / "responses.jsonl").read_text() == (
        tmp_path / "eval" / "responses.jsonl"
    ).read_text()
    assert again["ranking"] == results["ranking"]

    head = headline_metrics(results)
    assert head["win_sft_vs_base"] == round(results["win_rates"]["sft"]["base"], 3)
    assert "honest_sft" in head and "elo_base" in head


def test_reward_model_judge_scores_and_keeps_gold_probes(micro_models, eval_prompts, tmp_path):
    # A causal-LM folder loads as a reward model with a fresh scalar head: real RM code path, arbitrary scores.
    only_sft = {"sft": micro_models["sft"]}  # one model: no win rates, a trivial ranking
    results = run(
        config(only_sft, eval_prompts, tmp_path / "eval", judge=f"reward:{micro_models['base']}", n_prompts=4)
    )
    assert results["judge"].startswith("reward:")
    assert results["win_rates"] == {"sft": {}} and results["ranking"][0]["elo"] == 1000.0
    assert "probes" in results and "gold_mean_score" in results
    record = json.loads((tmp_path / "eval" / "responses.jsonl").open().readline())
    resp = record["responses"]["sft"]
    assert isinstance(resp["score"], float) and "gold" in resp
    assert resp["gold"] == judge_score(record["prompt"], resp["text"], record["meta"]).total


def test_cli_evaluate_and_report(micro_models, eval_prompts, tmp_path, capsys):
    out = tmp_path / "eval"
    code = main(
        ["evaluate", "--model", f"base={micro_models['base']}", "--model", f"sft={micro_models['sft']}",
         "--prompts", str(eval_prompts), "--out", str(out), "--n-prompts", "4", "--max-new-tokens", "8",
         "--bootstrap", "20", "--temperature", "0", "--report"]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "Ranking" in printed and "Win rate" in printed
    assert (out / "results.json").is_file() and (out / "report.html").is_file()
    assert main(["report", str(out)]) == 0


def test_cli_errors_are_one_line(micro_models, eval_prompts, tmp_path, capsys):
    assert main(["evaluate", "--model", "nodir", "--prompts", str(eval_prompts), "--out", str(tmp_path)]) == 1
    assert "expected NAME=DIR" in capsys.readouterr().err
    args = ["evaluate", "--model", f"a={tmp_path}", "--prompts", str(eval_prompts), "--out", str(tmp_path)]
    assert main(args) == 1
    assert "no config.json" in capsys.readouterr().err
    args = ["evaluate", "--model", f"a={micro_models['base']}", "--prompts", str(eval_prompts), "--out",
            str(tmp_path), "--judge", "llm"]  # fmt: skip
    assert main(args) == 1
    assert "gold" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing")]) == 1
    with pytest.raises(Exception, match="used twice"):
        parse_models(["a=x", "a=y"])


def test_best_of_n_answers_with_the_reranker_s_favourite_sample(micro_models, eval_prompts, tmp_path):
    from rlhfkit.generation import SamplingParams, generate_chat
    from rlhfkit.generation.best_of import best_in_groups, kl_bound
    from rlhfkit.generation.loading import load_for_generation
    from rlhfkit.reward.model import load_reward_model, score_conversations
    from rlhfkit.train.precision import Precision

    # The same folder twice: once as itself, once answering as best-of-4 by a reward model (the base model
    # with a random scalar head, saved: arbitrary but fixed scores).
    models = {"sft": micro_models["sft"], "sft-bo4": micro_models["sft"]}
    reranker = str(saved_reward_model(micro_models["base"], tmp_path / "rm"))
    cfg = config(models, eval_prompts, tmp_path / "eval", best_of=["sft-bo4=4"], reranker=reranker)
    results = run(cfg)

    # What best-of-4 must have answered: 4 samples a prompt drawn as evaluate draws them, the reward model's
    # favourite finished one kept.
    prompts = [p["messages"] for p in pick_prompts(eval_prompts, 8)]
    model, tok = load_for_generation(str(micro_models["sft"]))  # as evaluate loads it: the same kernels
    params = SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, seed=cfg.seed)
    drawn = generate_chat(
        model, tok, [p for p in prompts for _ in range(4)], params, batch_size=cfg.batch_size
    )
    rm, rm_tok = load_reward_model(reranker)
    items = [(prompts[i // 4], [{"role": "assistant", "content": c.text}]) for i, c in enumerate(drawn)]
    bf16 = Precision.of(torch.device("cpu"), "auto").scorer_bf16  # as evaluate scores on this CPU
    scores = score_conversations(rm, rm_tok, items, 128, bf16=bf16)
    winners = best_in_groups(scores, [c.finish_reason == "stop" for c in drawn], 4)
    records = [json.loads(line) for line in (tmp_path / "eval" / "responses.jsonl").open()]
    assert [r["responses"]["sft-bo4"]["text"] for r in records] == [drawn[i].text.strip() for i in winners]
    assert len(set(winners) - set(range(0, 32, 4))) > 0  # not always the first sample: the picking is real

    kl = results["kl_to_first"]["models"]["sft-bo4"]
    assert kl["upper_bound"] and kl["kl"] == pytest.approx(kl["kl_sampler_on_picked"] + kl_bound(4), abs=1e-5)
    assert results["generation"]["sft-bo4"]["best_of"] == 4
    assert "win_sft-bo4_vs_sft" in headline_metrics(results)


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"best_of": ["nope=4"]}, "no --model is named 'nope'"),
        ({"best_of": ["sft=1"]}, "N from 2 to 64"),
        ({"best_of": ["sft=4"]}, "needs --reranker"),
        ({"best_of": ["sft=4"], "reranker": "no/such/folder"}, "not a reward model folder"),
        ({"best_of": ["sft=4"], "reranker": "RM", "judge": "reward:RM"}, "also the judge"),
    ],
)
def test_best_of_n_refuses_a_bad_setup_before_sampling(micro_models, eval_prompts, tmp_path, kw, message):
    from rlhfkit.errors import RlhfkitError

    if kw.get("reranker") == "RM":
        kw = {**kw, "reranker": str(micro_models["base"]), "judge": f"reward:{micro_models['base']}"}
    with pytest.raises(RlhfkitError, match=message):
        run(config({"sft": micro_models["sft"]}, eval_prompts, tmp_path / "eval", **kw))
    assert not (tmp_path / "eval").exists()
