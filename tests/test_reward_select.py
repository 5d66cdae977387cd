"""Active selection (`rlhfkit reward select`): the sets a reward model cannot rank are the ones sent to annotators;
an ensemble that agrees has nothing to ask; bad input names the file."""

from __future__ import annotations

import json
import math

import pytest

from rlhfkit.data.jsonl import read_jsonl, write_jsonl
from rlhfkit.errors import RlhfkitError
from rlhfkit.reward.select import SelectConfig, run, set_uncertainty

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_uncertainty_is_the_pairs_entropy_and_an_ensembles_disagreement():
    assert set_uncertainty([[0.0, 0.0]]) == pytest.approx(math.log(2))  # a coin flip
    assert set_uncertainty([[12.0, -12.0]]) < 1e-8  # the model is sure
    # three responses: the sure pair (1 vs 3) lowers the mean below the two coin flips
    assert set_uncertainty([[0.0, 0.0, 20.0]]) == pytest.approx(math.log(2) / 3, abs=1e-6)
    # two members: agreeing on a coin flip leaves nothing to learn; confidently disagreeing leaves the most
    assert set_uncertainty([[0.0, 0.0], [0.0, 0.0]]) == pytest.approx(0.0)
    assert set_uncertainty([[6.0, -6.0], [-6.0, 6.0]]) > 0.69
    assert set_uncertainty([[6.0, -6.0], [6.0, -6.0]]) == pytest.approx(0.0, abs=1e-9)


@pytest.fixture(scope="module")
def sharp_rm(rm_dir, tmp_path_factory):
    """The micro reward model with its head scaled up, so two different responses get clearly different scores."""
    import torch

    from rlhfkit.reward.model import load_reward_model, scalar_head

    model, tokenizer = load_reward_model(rm_dir)
    with torch.no_grad():
        scalar_head(model).weight.mul_(200.0)
    out = tmp_path_factory.mktemp("sharp") / "rm"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "rlhfkit.json").write_text((rm_dir / "rlhfkit.json").read_text())
    return out


def _pool(path):
    answers = [
        "the river is wide",
        "a cat sat down",
        "seven green apples",
        "we sail at dawn",
        "old maps fade",
    ]
    rows = []
    for i in range(6):
        first, second = answers[i % 5], answers[(i + 2) % 5]
        if i == 3:
            second = first  # identical responses: no model can rank them
        rows.append(
            {
                "id": f"set{i}",
                "prompt": [{"role": "user", "content": f"say something {i}"}],
                "completions": [
                    [{"role": "assistant", "content": first}],
                    [{"role": "assistant", "content": second}],
                ],
                "category": "chat",
            }
        )
    write_jsonl(path, rows)
    return path


def test_the_set_the_model_cannot_rank_is_kept_first(sharp_rm, tmp_path):
    pool = _pool(tmp_path / "pool.jsonl")
    cfg = SelectConfig(
        candidates=str(pool),
        model=str(sharp_rm),
        count=2,
        out=str(tmp_path / "pick.jsonl"),
        rest=str(tmp_path / "rest.jsonl"),
    )
    run(cfg)
    kept = [rec for _, rec in read_jsonl(tmp_path / "pick.jsonl")]
    assert [rec["id"] for rec in kept][0] == "set3"
    assert kept[0]["uncertainty"] == pytest.approx(math.log(2), abs=1e-5)
    assert kept[0]["uncertainty"] >= kept[1]["uncertainty"]
    rest = [rec["id"] for _, rec in read_jsonl(tmp_path / "rest.jsonl")]
    assert len(rest) == 4 and kept[1]["id"] not in rest and rest == sorted(rest)  # the others, in pool order
    # different answers got different scores: every other set is below a coin flip
    assert kept[1]["uncertainty"] < math.log(2) - 1e-3


def test_an_ensemble_of_one_model_twice_has_nothing_to_ask(sharp_rm, tmp_path):
    pool = _pool(tmp_path / "pool.jsonl")
    out = tmp_path / "pick.jsonl"
    run(SelectConfig(candidates=str(pool), model=f"{sharp_rm},{sharp_rm}", count=3, out=str(out)))
    assert [rec["uncertainty"] for _, rec in read_jsonl(out)] == pytest.approx([0.0, 0.0, 0.0], abs=1e-6)


def test_bad_input_is_named(sharp_rm, tmp_path):
    pool = _pool(tmp_path / "pool.jsonl")
    with pytest.raises(RlhfkitError, match="holds 6 candidate sets"):
        run(SelectConfig(candidates=str(pool), model=str(sharp_rm), count=7, out=str(tmp_path / "x.jsonl")))
    with pytest.raises(RlhfkitError, match="not a reward model folder"):
        run(
            SelectConfig(
                candidates=str(pool), model=str(tmp_path / "nope"), count=1, out=str(tmp_path / "x.jsonl")
            )
        )
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": [{"role": "user", "content": "hi"}], "completions": ["only one"]}\n')
    with pytest.raises(RlhfkitError, match=r"bad\.jsonl:1: field 'completions'"):
        run(SelectConfig(candidates=str(bad), model=str(sharp_rm), count=1, out=str(tmp_path / "x.jsonl")))
    assert not (tmp_path / "x.jsonl").exists()


def test_the_posterior_disagreement_grows_with_the_score_uncertainty():
    import torch

    from rlhfkit.reward.select import pair_disagreement

    mean = torch.zeros(3, dtype=torch.float64)
    bald = pair_disagreement(mean, torch.tensor([0.0, 1.0, 9.0], dtype=torch.float64))
    assert bald[0] == pytest.approx(0.0, abs=1e-9) and 0 < bald[1] < bald[2]
    # a confident mean leaves less to learn at the same variance
    assert (
        pair_disagreement(torch.tensor([8.0], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64))[
            0
        ]
        < bald[1]
    )


def _posterior_rm(rm_dir, tmp_path, labelled):
    from conftest import saved_reward_model

    out = saved_reward_model(rm_dir, tmp_path / "rm")
    (out / "rlhfkit.json").write_text(json.dumps({"stage": "reward", "config": {"data": str(labelled)}}))
    return out


def _rankings(path, rows, copies):
    write_jsonl(
        path, [{**rec, "id": f"{rec['id']}-{c}", "ranking": [0, 1]} for rec in rows for c in range(copies)]
    )
    return path


def test_the_posterior_asks_about_what_the_labels_have_not_covered(rm_dir, tmp_path):
    pool = _pool(tmp_path / "pool.jsonl")
    rows = [rec for _, rec in read_jsonl(pool)]
    labelled_same = _rankings(tmp_path / "same.jsonl", [rows[0]], 10)  # set0's own pair, labelled ten times
    labelled_other = _rankings(tmp_path / "other.jsonl", [rows[1]], 10)

    def uncertainty(labelled, name):
        rm = _posterior_rm(rm_dir, tmp_path / name, labelled)
        out = tmp_path / f"{name}.jsonl"
        run(SelectConfig(candidates=str(pool), model=str(rm), count=6, out=str(out), by="posterior"))
        return {rec["id"]: rec["uncertainty"] for _, rec in read_jsonl(out)}

    same, other = uncertainty(labelled_same, "same"), uncertainty(labelled_other, "other")
    assert same["set0"] < other["set0"]  # labelling a pair settles it
    assert other["set1"] < same["set1"]
    # two identical answers: the coin flip that entropy asks about first is worth nothing here
    assert same["set3"] == pytest.approx(0.0, abs=1e-9) and min(same.values()) == same["set3"]


def test_the_posterior_needs_the_training_labels(rm_dir, tmp_path):
    from conftest import saved_reward_model

    pool = _pool(tmp_path / "pool.jsonl")
    rm = saved_reward_model(rm_dir, tmp_path / "rm")
    (rm / "rlhfkit.json").write_text(json.dumps({"stage": "reward", "config": {"data": "gone.jsonl"}}))
    with pytest.raises(RlhfkitError, match="names no comparisons file"):
        run(
            SelectConfig(
                candidates=str(pool), model=str(rm), count=1, out=str(tmp_path / "x.jsonl"), by="posterior"
            )
        )
    with pytest.raises(RlhfkitError, match="reads one reward model"):
        run(
            SelectConfig(
                candidates=str(pool),
                model=f"{rm},{rm}",
                count=1,
                out=str(tmp_path / "x.jsonl"),
                by="posterior",
            )
        )
    with pytest.raises(RlhfkitError, match="--by: expected one of entropy, posterior"):
        run(
            SelectConfig(
                candidates=str(pool), model=str(rm), count=1, out=str(tmp_path / "x.jsonl"), by="random"
            )
        )
