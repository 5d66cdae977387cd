"""DPO: the loss and its gradients, learning a planted preference, pairs/rankings/soft labels, resume, CLI errors."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch

from conftest import WORDS  # noqa: E402
from rlhfkit.cli import main
from rlhfkit.data.comparisons import check_comparison, load_comparisons
from rlhfkit.data.jsonl import read_jsonl, write_jsonl
from rlhfkit.dpo import trainer as dpo_trainer
from rlhfkit.dpo.data import collate_groups, encode_groups
from rlhfkit.dpo.logprobs import REF_FILE
from rlhfkit.dpo.losses import dpo_loss, reward_stats
from rlhfkit.dpo.trainer import DPOConfig, DPOLoopConfig, run
from rlhfkit.train.chat_tokens import IGNORE

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MARKER = "thanks"


def A(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def planted_pairs(n: int, seed: int) -> list[dict]:
    """The chosen response contains 'thanks' somewhere; the rejected one is plain words."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        prompt = [{"role": "user", "content": " ".join(rng.choices(WORDS, k=3))}]
        good = rng.choices(WORDS, k=4)
        good.insert(rng.randrange(len(good) + 1), MARKER)
        bad = rng.choices(WORDS, k=5)
        records.append(
            {"prompt": prompt, "chosen": A(" ".join(good)), "rejected": A(" ".join(bad)), "id": f"p{i}"}
        )
    return records


@pytest.fixture(scope="module")
def policy(tmp_path_factory) -> Path:
    """A randomly initialized micro Llama with an rlhfkit tokenizer (chat template included)."""
    from rlhfkit.artifacts import save_hf_checkpoint
    from rlhfkit.models import build_model
    from rlhfkit.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("policy")
    corpus = root / "corpus.txt"
    corpus.write_text(" ".join(WORDS + [MARKER]) * 20)
    tok = train_tokenizer(corpus, 300, root / "model")
    save_hf_checkpoint(build_model("micro", len(tok), 128, tok, seed=0), tok, root / "model")
    return root / "model"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("data")
    train, test = root / "train.jsonl", root / "test.jsonl"
    write_jsonl(train, planted_pairs(128, seed=1))
    write_jsonl(test, planted_pairs(32, seed=2))
    return train, test


def fast_config(policy: Path, train: Path, out: Path, loop: dict | None = None, **kw) -> DPOConfig:
    loop_cfg = DPOLoopConfig(
        **{"lr": 1e-2, "warmup_steps": 2, "log_every": 1, "eval_every": 8, **(loop or {})}
    )
    return DPOConfig(policy=str(policy), data=str(train), out=str(out), max_length=64, batch_size=16,
                     device="cpu", loop=loop_cfg, **kw)  # fmt: skip


@pytest.fixture(scope="module")
def trained(policy, data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dpo") / "dpo"
    run(fast_config(policy, data[0], out, eval_data=str(data[1]), epochs=2.0, beta=0.5))
    return out


def _grads(loss_kind: str, p: float, beta: float, eps: float = 0.0):
    logps = torch.tensor([-3.0, -5.0, -3.5, -4.0], requires_grad=True)  # pi_w, pi_l, ref_w, ref_l
    losses, chosen, rejected = dpo_loss(*logps[:, None], torch.tensor([p]), beta, loss_kind, eps)
    losses.sum().backward()
    return float(losses.detach()), logps.grad.tolist(), float(chosen), float(rejected)


def test_losses_and_gradients_match_hand_computed_values():
    h = (-3.0 - -3.5) - (-5.0 - -4.0)  # = 1.5
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731

    def expect_grads(dh):  # dL/d(pi_w, pi_l, ref_w, ref_l) = (dh, -dh, -dh, dh)
        return pytest.approx([dh, -dh, -dh, dh], abs=1e-6)

    beta = 0.5
    # DPO, hard label: -log sigmoid(beta h); dL/dh = beta (sigmoid(beta h) - 1).
    loss, grads, chosen, rejected = _grads("sigmoid", 1.0, beta)
    assert loss == pytest.approx(-math.log(sig(beta * h)), abs=1e-6)
    assert grads == expect_grads(beta * (sig(beta * h) - 1))
    assert chosen == pytest.approx(beta * 0.5) and rejected == pytest.approx(beta * -1.0)
    # Soft label p = 0.7: -[p log s + (1-p) log(1-s)]; dL/dh = beta (s - p).
    loss, grads, *_ = _grads("sigmoid", 0.7, beta)
    s = sig(beta * h)
    assert loss == pytest.approx(-(0.7 * math.log(s) + 0.3 * math.log(1 - s)), abs=1e-6)
    assert grads == expect_grads(beta * (s - 0.7))
    # cDPO, eps = 0.1 on a hard label: the same as a soft label of 0.9.
    loss, grads, *_ = _grads("sigmoid", 1.0, beta, eps=0.1)
    assert loss == pytest.approx(-(0.9 * math.log(s) + 0.1 * math.log(1 - s)), abs=1e-6)
    assert grads == expect_grads(beta * (s - 0.9))
    # IPO, hard label: (h - 1/(2 beta))^2 = (1.5 - 1)^2; dL/dh = 2 (h - 1).
    loss, grads, *_ = _grads("ipo", 1.0, beta)
    assert loss == pytest.approx(0.25) and grads == expect_grads(1.0)
    # IPO, a tie pulls h to 0: h^2; with smoothing 0.1 the hard target 1/(2 beta) shrinks to 0.8/(2 beta).
    loss, grads, *_ = _grads("ipo", 0.5, beta)
    assert loss == pytest.approx(h**2) and grads == expect_grads(2 * h)
    loss, _, *_ = _grads("ipo", 1.0, beta, eps=0.1)
    assert loss == pytest.approx((h - 0.8 / (2 * beta)) ** 2)

    stats = reward_stats(
        torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.0, 1.0, 1.0]), torch.tensor([1.0, 0.2, 0.5])
    )
    # pair 1 right; pair 2 soft label 0.2 favours 'rejected', which scores higher: right; the tie is not counted.
    assert stats["reward_accuracy"] == 1.0 and stats["reward_margin"] == pytest.approx(1 / 3)
    assert "reward_accuracy" not in reward_stats(torch.zeros(1), torch.zeros(1), torch.tensor([0.5]))


def test_the_sft_term_adds_the_chosen_rows_per_token_nll():
    from rlhfkit.dpo.trainer import DPOConfig, batch_loss
    from rlhfkit.train.chat_tokens import IGNORE

    # rows 0 (3 label tokens) and 1 (1 label token); a stand-in "model" whose sequence log-probs we fix
    labels = torch.tensor([[IGNORE, 5, 6, 7], [IGNORE, IGNORE, IGNORE, 8]])
    logps = torch.tensor([-3.0, -2.0], requires_grad=True)
    batch = {"labels": labels, "ref_logps": torch.tensor([-3.0, -2.0]), "better": torch.tensor([0]),
             "worse": torch.tensor([1]), "target": torch.tensor([1.0]), "weight": torch.tensor([1.0]), "count": 1}  # fmt: skip
    import rlhfkit.dpo.trainer as trainer

    original = trainer.sequence_logprobs
    trainer.sequence_logprobs = lambda model, b: logps
    try:
        plain, _, _ = batch_loss(None, batch, DPOConfig(beta=0.1))
        with_sft, _, _ = batch_loss(None, batch, DPOConfig(beta=0.1, sft_coef=2.0))
    finally:
        trainer.sequence_logprobs = original
    assert float(plain) == pytest.approx(math.log(2))  # h = 0 at the reference
    assert float(with_sft - plain) == pytest.approx(2.0 * 3.0 / 3)  # 2 x (-(-3) / 3 tokens)


def test_dpo_learns_a_planted_preference_that_generalizes(trained, policy):
    metrics = [rec for _, rec in read_jsonl(trained / "metrics.jsonl")]
    early = sum(m["loss"] for m in metrics[:2]) / 2
    late = sum(m["loss"] for m in metrics[-3:]) / 3
    assert late < 0.6 * early, (early, late)
    assert metrics[0]["loss"] == pytest.approx(
        math.log(2), abs=0.05
    )  # h = 0 at the start: policy = reference
    manifest = json.loads((trained / "rlhfkit.json").read_text())
    final = manifest["metrics"]
    assert manifest["stage"] == "dpo" and manifest["parent"] == str(policy)
    assert final["val_accuracy"] >= 0.9, (
        final
    )  # held-out pairs: implicit reward ranks 'thanks' responses first
    assert final["reward_chosen"] > final["reward_rejected"] and final["val_reward_margin"] > 0
    assert final["comparisons"] == 128 and (trained / REF_FILE).exists()

    from transformers import AutoModelForCausalLM, GenerationConfig

    assert AutoModelForCausalLM.from_pretrained(str(trained)).config.vocab_size > 0
    assert GenerationConfig.from_pretrained(str(trained)).eos_token_id


def test_reads_rankings_and_trl_pairs_with_soft_labels(policy, tmp_path):
    from rlhfkit.tokenizer import load_tokenizer

    prompt = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "the cat"},
              {"role": "assistant", "content": "a dog"}, {"role": "user", "content": "the sun"}]  # fmt: skip
    rankings = tmp_path / "rankings.jsonl"
    write_jsonl(rankings, [
        {"prompt": prompt, "completions": [A("red moon"), A("thanks bird"), A("big tree")], "ranking": [1, 0, 2],
         "ties": [[0, 2]], "annotator": "sim:0", "seconds": 3.0},
        {"prompt": prompt[1:2], "completions": [A("a"), A("b")], "ranking": [0, 1]},
    ])  # fmt: skip
    pairs = tmp_path / "pairs.jsonl"
    write_jsonl(pairs, [
        {"prompt": prompt[1:2], "chosen": A("thanks sun"), "rejected": A("stone"), "label": 0.7, "annotator": "ai:x"},
        {"prompt": prompt[1:2], "chosen": A("blue"), "rejected": A("red"), "tie": True},
    ])  # fmt: skip
    tok = load_tokenizer(policy)
    ranked = encode_groups(tok, load_comparisons(rankings), 64, str(rankings))
    assert [len(g.rows) for g in ranked] == [3, 2] and len(ranked[0].pairs) == 3  # C(3, 2) pairs, one group
    assert sorted(p.target for p in ranked[0].pairs) == [0.5, 1.0, 1.0]
    # Labels cover exactly the completion: not the system/user turns nor the prompt's earlier assistant turn.
    ids, labels = ranked[0].rows[1]
    labelled = tok.decode([t for t, lab in zip(ids, labels) if lab != IGNORE])
    assert "thanks bird" in labelled and "dog" not in labelled and "cat" not in labelled

    soft = encode_groups(tok, load_comparisons(pairs), 64, str(pairs))
    assert [p.target for g in soft for p in g.pairs] == [0.7, 0.5]
    ref = torch.zeros(2, 2)
    batch = collate_groups(soft, [1, 0], ref, tok.pad_token_id, "cpu")
    assert (
        batch["count"] == 2
        and batch["input_ids"].shape[0] == 4
        and batch["target"].tolist() == pytest.approx([0.5, 0.7])
    )
    batch = collate_groups(ranked, [0, 1], torch.zeros(2, 3), tok.pad_token_id, "cpu")
    assert batch["input_ids"].shape[0] == 5 and batch["better"].tolist() == [1, 1, 0, 3]  # each row once
    assert batch["weight"].tolist() == pytest.approx(
        [1 / 3] * 3 + [1.0]
    )  # each group's loss is its pair mean

    # Both files train through the command line.
    both = tmp_path / "both.jsonl"
    both.write_text(rankings.read_text() + pairs.read_text())
    out = tmp_path / "out"
    assert main(["dpo", "--policy", str(policy), "--data", str(both), "--out", str(out), "--epochs", "0",
                 "--max-steps", "2", "--batch-size", "4", "--micro-batch-size", "2", "--loss", "ipo",
                 "--label-smoothing", "0.1", "--device", "cpu"]) == 0  # fmt: skip
    manifest = json.loads((out / "rlhfkit.json").read_text())
    assert manifest["metrics"]["pairs"] == 3 + 1 + 1 + 1 and manifest["config"]["loss"] == "ipo"


def test_a_long_multi_turn_prompt_loses_its_oldest_exchanges_not_the_responses(policy):
    from rlhfkit.tokenizer import load_tokenizer
    from rlhfkit.train.chat_tokens import chat_ids

    tok = load_tokenizer(policy)
    old = " ".join(WORDS[:12])
    prompt = [{"role": "system", "content": "be brief"}]
    for i in range(4):  # four exchanges; the last user turn is the one the completions answer
        prompt += [{"role": "user", "content": f"{old} {i}"}, {"role": "assistant", "content": old}]
    prompt.append({"role": "user", "content": "the sun"})
    chosen, rejected = A("thanks bird big tree"), A("stone")
    groups = [check_comparison({"prompt": prompt, "chosen": chosen, "rejected": rejected}, "pairs.jsonl", 1)]
    full = len(chat_ids(tok, prompt + chosen))
    short = len(chat_ids(tok, [prompt[0], prompt[-1]] + chosen))
    max_length = short + (full - short) // 2  # room for about half of the old exchanges

    (group,) = encode_groups(tok, groups, max_length, "pairs.jsonl")
    for (ids, labels), completion in zip(group.rows, (chosen, rejected)):
        labelled = tok.decode([t for t, lab in zip(ids, labels) if lab != IGNORE])
        assert completion[0]["content"] in labelled  # the whole response is scored
        assert len(ids) <= max_length
    text = tok.decode(group.rows[0][0])
    # The system message and the newest exchanges stay; the oldest go first.
    assert "be brief" in text and "the sun" in text and f"{old} 3" in text and f"{old} 0" not in text
    # Both completions keep the same prompt, so it cancels in DPO's log-ratio difference.
    prefix = lambda row: row[0][: next(i for i, lab in enumerate(row[1]) if lab != IGNORE)]  # noqa: E731
    assert prefix(group.rows[0]) == prefix(group.rows[1])


def test_resume_matches_an_uninterrupted_run_and_a_finished_rerun_keeps_metrics(
    policy, data, tmp_path, monkeypatch
):
    from safetensors.torch import load_file

    settings = {"loop": {"max_steps": 6, "save_every": 3}, "epochs": 0.0, "micro_batch_size": 8}
    run(fast_config(policy, data[0], tmp_path / "straight", **settings))

    real_loss, calls = dpo_trainer.batch_loss, {"n": 0}

    def crash_in_step_five(model, batch, cfg):
        calls["n"] += 1
        if calls["n"] == 5 * 2:  # two micro-batches per step
            raise KeyboardInterrupt
        return real_loss(model, batch, cfg)

    monkeypatch.setattr(dpo_trainer, "batch_loss", crash_in_step_five)
    with pytest.raises(KeyboardInterrupt):
        run(fast_config(policy, data[0], tmp_path / "resumed", **settings))
    monkeypatch.setattr(dpo_trainer, "batch_loss", real_loss)

    def no_reference_forward(*args, **kwargs):
        raise AssertionError("the reference log-probs should come from the cache")

    monkeypatch.setattr(dpo_trainer, "group_logprobs", no_reference_forward)
    run(fast_config(policy, data[0], tmp_path / "resumed", **settings))
    a = load_file(str(tmp_path / "straight" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    steps = [rec["step"] for _, rec in read_jsonl(tmp_path / "resumed" / "metrics.jsonl")]
    assert steps == sorted(set(steps)) and steps[-1] == 6

    before = json.loads((tmp_path / "resumed" / "rlhfkit.json").read_text())["metrics"]
    run(fast_config(policy, data[0], tmp_path / "resumed", **settings))  # already finished: nothing to train
    after = json.loads((tmp_path / "resumed" / "rlhfkit.json").read_text())["metrics"]
    same = {k: v for k, v in after.items() if k != "wall_seconds"}
    assert same == {k: v for k, v in before.items() if k != "wall_seconds"} and after["step"] == 6
    (tmp_path / "resumed" / "rlhfkit.json").unlink()  # killed after the last checkpoint, before the manifest
    run(fast_config(policy, data[0], tmp_path / "resumed", **settings))
    again = json.loads((tmp_path / "resumed" / "rlhfkit.json").read_text())["metrics"]
    assert (
        again["step"] == 6
        and again["loss"] == before["loss"]
        and again["reward_margin"] == before["reward_margin"]
    )


def test_cli_gives_one_clear_error_for_bad_input(policy, data, tmp_path, capsys):
    base = [
        "dpo",
        "--policy",
        str(policy),
        "--data",
        str(data[0]),
        "--out",
        str(tmp_path / "o"),
        "--device",
        "cpu",
    ]
    cases = [
        (["dpo", "--data", str(data[0])], "--policy is required"),
        (["dpo", "--policy", str(policy)], "--data is required"),
        (base + ["--beta", "0"], "--beta: expected a number > 0, got 0.0"),
        (base + ["--loss", "hinge"], "--loss: expected one of sigmoid, ipo, got 'hinge'"),
        (base + ["--max-length", "4"], "no usable pairs"),
        (base[:4] + [str(tmp_path / "missing.jsonl")] + base[5:], "missing.jsonl"),
    ]
    for args, message in cases:
        assert main(args) == 1, args
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err, err


def test_dropout_is_off_while_training_unless_asked_for(policy, data, tmp_path):
    """The reference log-probs are computed without dropout, so the policy's must be too: at the first step
    the policy is the reference and every log-ratio is 0 (loss log 2). `--dropout` keeps the model's own."""
    import shutil

    leaky = tmp_path / "leaky"
    shutil.copytree(policy, leaky)
    config = json.loads((leaky / "config.json").read_text())
    (leaky / "config.json").write_text(json.dumps({**config, "attention_dropout": 0.5}))

    def first_loss(out: Path, **kw) -> float:
        run(fast_config(leaky, data[0], out, loop={"max_steps": 1, "lr": 1e-9}, epochs=0.0, beta=10.0, **kw))
        return next(rec for _, rec in read_jsonl(out / "metrics.jsonl") if rec.get("step") == 1)["loss"]

    assert first_loss(tmp_path / "off") == pytest.approx(math.log(2), abs=1e-4)
    assert abs(first_loss(tmp_path / "on", dropout=True) - math.log(2)) > 5e-3  # measured 0.014
    saved = json.loads((tmp_path / "off" / "config.json").read_text())
    assert saved["attention_dropout"] == 0.5  # the config is saved as it was
