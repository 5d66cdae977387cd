"""Reward model: loss, grouped-ranking batching, learning on a synthetic set, save/load, calibration, resume."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch

from rlhfkit.cli import main
from rlhfkit.data.comparisons import ComparisonGroup, JudgedPair, load_comparisons, ranking_pairs
from rlhfkit.data.jsonl import read_jsonl, write_jsonl
from rlhfkit.errors import RlhfkitError
from rlhfkit.reward import train as reward_mod
from rlhfkit.reward.evaluate import comparison_metrics, expected_calibration_error
from rlhfkit.reward.model import OFFSET_KEY, load_reward_model, scalar_head, score_conversations
from rlhfkit.reward.train import (
    RewardConfig,
    RewardLoopConfig,
    collate_groups,
    preference_loss,
    run,
)
from rlhfkit.train.loop import epoch_batch_indices as batch_indices

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
    "fish",
    "red",
    "blue",
    "green",
    "small",
    "big",
    "old",
    "new",
]
MARKER = "thanks"


def A(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def synthetic_pairs(n: int, seed: int) -> list[dict]:
    """The preferred response contains the word 'thanks' somewhere; the other does not."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        prompt = [{"role": "user", "content": " ".join(rng.choices(WORDS, k=4))}]
        filler = rng.choices(WORDS, k=6)
        good = list(filler)
        good.insert(rng.randrange(len(good) + 1), MARKER)
        bad = rng.choices(WORDS, k=6)
        records.append(
            {"prompt": prompt, "chosen": A(" ".join(good)), "rejected": A(" ".join(bad)),
             "id": f"s{i}", "category": "even" if i % 2 == 0 else "odd", "annotator": "sim"}
        )  # fmt: skip
    return records


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def backbone(tmp_path_factory) -> Path:
    """A randomly initialized micro Llama with an rlhfkit byte-level tokenizer (chat template included)."""
    from rlhfkit.models import build_model
    from rlhfkit.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("backbone")
    corpus = root / "corpus.txt"
    corpus.write_text(" ".join(WORDS + [MARKER]) * 20)
    tok = train_tokenizer(corpus, 300, root / "model")
    build_model("micro", len(tok), 128, tok, seed=0).save_pretrained(root / "model")
    return root / "model"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("data")
    train, test = root / "train.jsonl", root / "test.jsonl"
    write_jsonl(train, synthetic_pairs(256, seed=1))
    write_jsonl(test, synthetic_pairs(64, seed=2))
    return train, test


def fast_config(backbone: Path, train: Path, out: Path, **kw) -> RewardConfig:
    loop = RewardLoopConfig(lr=kw.pop("lr", 1e-2), warmup_steps=2, log_every=1, seed=0, **kw.pop("loop", {}))
    kw.setdefault("dtype", "float32")  # exact scores on every CPU; `auto` is bf16 on some (test below)
    return RewardConfig(model=str(backbone), data=str(train), out=str(out), max_length=64, batch_size=16,
                        device="cpu", loop=loop, **kw)  # fmt: skip


@pytest.fixture(scope="module")
def trained(backbone, data, tmp_path_factory) -> Path:
    train, test = data
    out = tmp_path_factory.mktemp("rm") / "rm"
    run(fast_config(backbone, train, out, eval_data=str(test), epochs=3.0))
    return out


def test_preference_loss_is_bradley_terry_for_preferences_ties_and_soft_labels():
    d = torch.tensor([-1.0, 0.0, 2.0])
    hard = preference_loss(d, torch.ones(3), torch.zeros(3))
    assert torch.allclose(hard, -torch.nn.functional.logsigmoid(d))
    with_margin = preference_loss(d, torch.ones(3), torch.full((3,), 1.0))
    assert torch.allclose(with_margin, -torch.nn.functional.logsigmoid(d - 1.0))
    grid = torch.linspace(-3, 3, 601)
    tie = preference_loss(grid, torch.full_like(grid, 0.5), torch.zeros_like(grid))
    assert abs(float(grid[tie.argmin()])) < 1e-6  # ties pull the difference to 0
    soft = preference_loss(grid, torch.full_like(grid, 0.8), torch.zeros_like(grid))
    assert abs(float(grid[soft.argmin()]) - math.log(0.8 / 0.2)) < 0.01  # minimum where sigmoid(d) = 0.8


def test_ranking_is_one_batch_element_with_all_pairs_and_each_completion_scored_once():
    prompt = [{"role": "user", "content": "q"}]
    k4 = ComparisonGroup(prompt, [A(str(i)) for i in range(4)], ranking_pairs([3, 1, 0, 2]))
    pair = ComparisonGroup(prompt, [A("x"), A("y")], [JudgedPair(0, 1)])
    encoded = [[[i + 1] * (i + 1) for i in range(4)], [[7], [8, 8]]]
    batch = collate_groups([k4, pair], encoded, [0, 1], pad_id=0, device="cpu")
    assert batch["count"] == 2  # two batch elements...
    assert batch["rows"] == 4 + 2  # ...each completion scored once...
    assert len(batch["better"]) == math.comb(4, 2) + 1  # ...and all C(K,2) pairs of the ranking
    weights = batch["weight"].tolist()
    assert sum(weights[:6]) == pytest.approx(1.0) and weights[6] == pytest.approx(1.0)  # mean over its pairs
    assert (batch["better"][:6] < 4).all() and (batch["better"][6] == 4) and (batch["worse"][6] == 5)


def test_length_sorted_parts_give_the_scores_and_gradients_of_one_padded_batch():
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from rlhfkit.reward.model import forward_scores, pad_batch, pad_parts

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_labels=1, pad_token_id=0)  # fmt: skip
    model = LlamaForSequenceClassification(cfg)
    rng = random.Random(0)
    rows = [[rng.randrange(1, 50) for _ in range(rng.randrange(2, 12))] for _ in range(11)]
    grads = []
    for batch in (pad_batch(rows, 0, "cpu"), pad_parts(rows, 0, "cpu", rows_per_part=4)):
        model.zero_grad(set_to_none=True)
        scores = forward_scores(model, batch)
        (scores * torch.arange(len(rows))).sum().backward()  # row-specific weights: the order must be right
        grads.append((scores.detach(), [p.grad.clone() for p in model.parameters()]))
    (whole, whole_grads), (parts, parts_grads) = grads
    assert torch.allclose(whole, parts, atol=1e-5)
    for a, b in zip(whole_grads, parts_grads):
        assert torch.allclose(a, b, atol=1e-5)


def test_batches_are_a_pure_function_of_seed_and_step_covering_each_epoch():
    n, b = 10, 4
    first = [i for step in range(5) for i in batch_indices(n, b, seed=3, step=step)]
    assert sorted(first[:10]) == list(range(10)) and sorted(first[10:20]) == list(range(10))
    assert batch_indices(n, b, 3, 2) == batch_indices(n, b, 3, 2) != batch_indices(n, b, 4, 2)


def test_training_learns_the_preference_and_generalizes(trained):
    metrics = [rec for _, rec in read_jsonl(trained / "metrics.jsonl")]
    early = sum(m["loss"] for m in metrics[:3]) / 3
    late = sum(m["loss"] for m in metrics[-3:]) / 3
    assert late < 0.5 * early, (early, late)
    report = json.loads((trained / "eval.json").read_text())
    assert report["accuracy"] >= 0.9, report["accuracy"]
    assert set(report["by_category"]) == {"even", "odd"} and report["by_annotator"]["sim"]["pairs"] == 64
    manifest = json.loads((trained / "rlhfkit.json").read_text())
    assert manifest["stage"] == "reward" and manifest["metrics"]["val_accuracy"] == report["accuracy"]
    assert manifest["calibration"]["responses"] == 512 and manifest["calibration"]["std"] > 0


def test_reward_models_train_and_score_under_bf16_autocast_on_a_native_bf16_cpu(
    backbone, data, tmp_path, monkeypatch, capsys
):
    import rlhfkit.train.precision as precision

    cpu = torch.device("cpu")
    monkeypatch.setattr(precision, "_SAID", set())
    monkeypatch.setattr(precision, "cpu_native_bf16", lambda: None)
    assert not precision.Precision.of(cpu, "auto").scorer_bf16
    monkeypatch.setattr(precision, "cpu_native_bf16", lambda: "avx512_bf16")
    assert not precision.Precision.of(cpu, "float32").scorer_bf16  # the one flag that turns it off
    assert precision.Precision.of(cpu, "auto").scorer_bf16

    out = tmp_path / "rm"
    run(fast_config(backbone, data[0], out, eval_data=str(data[1]), epochs=3.0, dtype="auto"))
    assert (
        "reward-model matmuls in bfloat16 under autocast (this CPU has avx512_bf16)"
        in capsys.readouterr().out
    )
    assert json.loads((out / "eval.json").read_text())["accuracy"] >= 0.9  # learns as the fp32 run does

    model, tok = load_reward_model(out)
    items = [(g.prompt, c) for g in load_comparisons(data[0]) for c in g.completions]  # the calibration set
    exact = score_conversations(model, tok, items, max_length=64)
    fast = score_conversations(model, tok, items, max_length=64, bf16=True)
    assert fast != exact  # the autocast did run
    spread = max(exact) - min(exact)
    assert max(abs(a - b) for a, b in zip(exact, fast)) < 0.05 * spread
    assert abs(sum(exact) / len(exact)) < 0.05 * spread  # calibrated in bf16, still centred in fp32


def test_saved_model_loads_in_transformers_with_identical_scores_and_zero_mean(trained, data):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    groups = load_comparisons(data[0])
    items = [(g.prompt, c) for g in groups for c in g.completions]
    model, tok = load_reward_model(trained)
    ours = score_conversations(model, tok, items, max_length=64, batch_size=7)
    assert abs(sum(ours) / len(ours)) < 1e-4  # the training responses (the default calibration) average 0

    hf = AutoModelForSequenceClassification.from_pretrained(str(trained)).eval()
    hf_tok = AutoTokenizer.from_pretrained(str(trained))
    assert hf.config.num_labels == 1 and hf.config.pad_token_id == hf_tok.pad_token_id
    offset = getattr(hf.config, OFFSET_KEY)  # Llama's score head has no bias: the shift is stored here
    with torch.no_grad():
        for (prompt, response), s in list(zip(items, ours))[:8]:
            ids = hf_tok.apply_chat_template(
                prompt + response, tokenize=True, return_dict=True, return_tensors="pt"
            )
            assert float(hf(**ids).logits[0, 0]) - offset == pytest.approx(s, abs=1e-5)


def test_scoring_under_a_progress_bar_gives_the_scores_and_features_of_one_call(trained, data):
    # The bar advances per batch (batch 1: 100 advances); batching, scores and head inputs stay as without it.
    groups = load_comparisons(data[0])
    items = [(g.prompt, c) for g in groups for c in g.completions][:100]
    model, tok = load_reward_model(trained)
    plain_features, bar_features = [], []
    plain = score_conversations(model, tok, items, 64, batch_size=1, features=plain_features)
    with_bar = score_conversations(
        model, tok, items, 64, batch_size=1, features=bar_features, progress="scoring"
    )
    assert len(with_bar) == len(bar_features) == 100
    assert with_bar == pytest.approx(plain, abs=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(bar_features, plain_features))


def test_repeated_responses_are_scored_once_and_share_the_score_and_features(trained, data):
    groups = load_comparisons(data[0])
    distinct = list(
        dict.fromkeys((json.dumps(g.prompt), json.dumps(c)) for g in groups for c in g.completions)
    )
    items = [(json.loads(p), json.loads(c)) for p, c in distinct][:20]
    repeated = items + items[5:15][::-1] + items[:3]  # 33 rows, 20 distinct
    model, tok = load_reward_model(trained)
    alone_features, features = [], []
    alone = score_conversations(model, tok, items, 64, batch_size=4, features=alone_features)
    rows_scored = []
    # the lean forward runs the head on each row's scored token alone: one head row per scored response
    hook = scalar_head(model).register_forward_hook(lambda _m, args, _out: rows_scored.append(len(args[0])))
    try:
        scores = score_conversations(model, tok, repeated, 64, batch_size=4, features=features)
    finally:
        hook.remove()
    assert sum(rows_scored) == 20 and len(scores) == len(features) == 33
    expected = alone + alone[5:15][::-1] + alone[:3]
    assert scores == pytest.approx(expected, abs=1e-6)
    expected_features = alone_features + alone_features[5:15][::-1] + alone_features[:3]
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(features, expected_features))


def tiny_bert(tok, folder: Path, **config) -> Path:
    """A one-layer random BERT sequence classifier with `tok`, saved in `folder` (`config`: BertConfig overrides)."""
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128, pad_token_id=tok.pad_token_id,
                     **config)  # fmt: skip
    torch.manual_seed(0)
    BertForSequenceClassification(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_encoder_backbone_absorbs_the_shift_in_its_head_bias(backbone, data, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from rlhfkit.tokenizer import load_tokenizer

    tok = load_tokenizer(backbone)
    tok.chat_template = None  # exercise the plain "User: ...\nAssistant: ..." rendering
    enc = tiny_bert(tok, tmp_path / "bert")
    out = tmp_path / "rm"
    run(fast_config(enc, data[0], out, loop={"max_steps": 3}, epochs=0.0, lr=1e-3))
    hf = AutoModelForSequenceClassification.from_pretrained(str(out)).eval()
    assert not hasattr(hf.config, OFFSET_KEY) or not getattr(hf.config, OFFSET_KEY)
    model, tok = load_reward_model(out)
    groups = load_comparisons(data[0])
    items = [(g.prompt, c) for g in groups for c in g.completions]
    ours = score_conversations(model, tok, items, max_length=64)
    assert abs(sum(ours) / len(ours)) < 1e-4
    batch = tok(
        ["User: " + items[0][0][0]["content"] + "\nAssistant: " + items[0][1][0]["content"]],
        return_tensors="pt",
    )
    with torch.no_grad():
        assert float(hf(**batch).logits[0, 0]) == pytest.approx(ours[0], abs=1e-5)


def test_an_encoder_trains_without_its_dropout_unless_asked(backbone, data, tmp_path, monkeypatch):
    """Each response of a ranking would get its own dropout masks, and every use of the model reads it without
    them: by default the training forward is the model's deterministic one (`train/dropout.py`)."""
    from rlhfkit.reward.model import forward_scores
    from rlhfkit.tokenizer import load_tokenizer

    dropout = {"hidden_dropout_prob": 0.3, "attention_probs_dropout_prob": 0.3}
    enc = tiny_bert(load_tokenizer(backbone), tmp_path / "bert", **dropout)
    repeatable = []
    original = reward_mod.reward_loss

    def checking_loss(model, batch):
        with torch.no_grad():
            repeatable.append(torch.equal(forward_scores(model, batch), forward_scores(model, batch)))
        return original(model, batch)

    monkeypatch.setattr(reward_mod, "reward_loss", checking_loss)
    run(fast_config(enc, data[0], tmp_path / "off", loop={"max_steps": 2}, epochs=0.0))
    assert repeatable and all(repeatable)
    assert json.loads((tmp_path / "off" / "config.json").read_text())["hidden_dropout_prob"] == 0.3
    repeatable.clear()
    run(fast_config(enc, data[0], tmp_path / "on", loop={"max_steps": 2}, epochs=0.0, dropout=True))
    assert repeatable and not any(repeatable)


def test_resume_after_interruption_matches_an_uninterrupted_run(backbone, data, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    settings = {"loop": {"max_steps": 6, "save_every": 3}, "epochs": 0.0}
    run(fast_config(backbone, data[0], tmp_path / "straight", **settings))

    real_loss, calls = reward_mod.reward_loss, {"n": 0}

    def crash_at_step_five(model, batch):
        calls["n"] += 1
        if calls["n"] == 5 * 2:  # two micro-batches per step
            raise KeyboardInterrupt
        return real_loss(model, batch)

    monkeypatch.setattr(reward_mod, "reward_loss", crash_at_step_five)
    with pytest.raises(KeyboardInterrupt):
        run(fast_config(backbone, data[0], tmp_path / "resumed", **settings))
    monkeypatch.setattr(reward_mod, "reward_loss", real_loss)
    run(fast_config(backbone, data[0], tmp_path / "resumed", **settings))
    a = load_file(str(tmp_path / "straight" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    steps = [rec["step"] for _, rec in read_jsonl(tmp_path / "resumed" / "metrics.jsonl")]
    assert steps == sorted(set(steps)) and steps[-1] == 6


def test_metrics_accuracy_ties_breakdowns_and_calibration():
    prompt = [{"role": "user", "content": "q"}]
    pair = ComparisonGroup(prompt, [A("a"), A("b")], [JudgedPair(0, 1)], {"category": "x", "annotator": "p"})
    soft = ComparisonGroup(prompt, [A("a"), A("b")], [JudgedPair(0, 1, 0.2)], {"category": "y"})
    ranking = ComparisonGroup(
        prompt, [A("a"), A("b"), A("c")], ranking_pairs([0, 1, 2], [[1, 2]]), {"category": "x"}
    )
    report = comparison_metrics([pair, soft, ranking], [[1.0, 0.0], [0.0, 1.0], [2.0, 3.0, 0.0]])
    # pair: right; soft label 0.2 favours b, which scores higher: right; ranking: 0>1 wrong, 0>2 right.
    assert report["decisive_pairs"] == 4 and report["accuracy"] == pytest.approx(0.75)
    assert report["by_category"] == {
        "x": {"accuracy": pytest.approx(2 / 3), "pairs": 3},
        "y": {"accuracy": 1.0, "pairs": 1},
    }
    assert report["by_annotator"]["p"] == {"accuracy": 1.0, "pairs": 1}
    assert report["ties"] == 1 and report["tie_abs_diff"] == pytest.approx(3.0)
    assert report["scores"]["top"]["n"] == 3 and report["scores"]["all"]["n"] == 7
    # A calibrated model: confidence 0.8 and the favoured side wins 80% of the time.
    assert expected_calibration_error([0.8] * 10, [1] * 8 + [0] * 2) == pytest.approx(0.0)
    assert expected_calibration_error([0.9] * 4, [1, 0, 1, 0]) == pytest.approx(0.4)


def test_cli_train_eval_score_and_errors(backbone, data, tmp_path, capsys):
    train, test = data
    out = tmp_path / "rm"
    args = ["reward", "train", "--model", str(backbone), "--data", str(train), "--out", str(out),
            "--max-steps", "2", "--epochs", "0", "--max-length", "64", "--device", "cpu"]  # fmt: skip
    assert main(args) == 0
    capsys.readouterr()
    assert main(["reward", "eval", "--model", str(out), "--data", str(test), "--device", "cpu"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (
        report["comparisons"] == 64
        and 0 <= report["accuracy"] <= 1
        and "histogram" in report["scores"]["all"]
    )

    prompt = [{"role": "user", "content": "the cat"}]
    inp = tmp_path / "in.jsonl"
    write_jsonl(inp, [{"messages": prompt + A("thanks dog")}, {"prompt": prompt, "completions": [A("a"), A("b"), A("c")]},
                      {"prompt": prompt, "chosen": A("a"), "rejected": A("b")}])  # fmt: skip
    assert (
        main(["reward", "score", "--model", str(out), "--in", str(inp), "--out", str(tmp_path / "s.jsonl")])
        == 0
    )
    scored = [rec for _, rec in read_jsonl(tmp_path / "s.jsonl")]
    assert isinstance(scored[0]["reward"], float) and len(scored[1]["rewards"]) == 3
    assert scored[2]["reward_chosen"] == pytest.approx(
        scored[1]["rewards"][0], abs=1e-5
    )  # same text, same score

    bad = tmp_path / "bad.jsonl"
    write_jsonl(bad, [{"prompt": prompt, "completions": [A("a"), A("b")], "ranking": [0, 0]}])
    assert main(args[:5] + [str(bad)] + args[6:]) == 1
    assert "bad.jsonl:1: field 'ranking': expected each index 0..1 exactly once" in capsys.readouterr().err


def test_calibration_file_of_policy_samples_defines_score_zero(backbone, data, tmp_path):
    prompt = [{"role": "user", "content": "the cat"}]
    samples = [{"prompt": prompt, "completions": [A("red dog"), A("thanks sun"), A("old tree")]},
               {"messages": prompt + A("big fish")}]  # fmt: skip
    calib = tmp_path / "candidates.jsonl"
    write_jsonl(calib, samples)
    out = tmp_path / "rm"
    run(fast_config(backbone, data[0], out, calibration=str(calib), loop={"max_steps": 2}, epochs=0.0))
    model, tok = load_reward_model(out)
    items = [(prompt, A(t)) for t in ("red dog", "thanks sun", "old tree", "big fish")]
    assert sum(score_conversations(model, tok, items, max_length=64)) / 4 == pytest.approx(0.0, abs=1e-5)
    manifest = json.loads((out / "rlhfkit.json").read_text())
    assert manifest["calibration"]["responses"] == 4 and manifest["calibration"]["source"] == str(calib)


def test_max_steps_given_alone_runs_exactly_that_many_steps():
    import argparse

    from rlhfkit.config import add_config_args, config_from_args

    parser = argparse.ArgumentParser()
    add_config_args(parser, RewardConfig)
    cfg = config_from_args(RewardConfig, parser.parse_args(["--max-steps", "2"]))
    assert cfg.epochs == 0 and cfg.loop.max_steps == 2  # before: epochs=1 overrode it with a whole epoch
    assert config_from_args(RewardConfig, parser.parse_args([])).epochs == 1.0
    cfg = config_from_args(RewardConfig, parser.parse_args(["--epochs", "0", "--max-steps", "3"]))
    assert cfg.epochs == 0 and cfg.loop.max_steps == 3
    with pytest.raises(RlhfkitError, match="--epochs 2 .* --max-steps"):
        config_from_args(RewardConfig, parser.parse_args(["--epochs", "2", "--max-steps", "3"]))


def test_one_max_length_rule_for_scoring_with_a_trained_reward_model(trained):
    from rlhfkit.reward.model import default_max_length, load_scorer

    model, tokenizer, length = load_scorer(trained)
    assert length == 64 == json.loads((trained / "rlhfkit.json").read_text())["max_length"]  # as trained
    assert load_scorer(trained, max_length=16)[2] == 16 and not model.training
    assert load_scorer(trained, max_length=10**6)[2] == default_max_length(model, tokenizer, 10**6) < 10**6
