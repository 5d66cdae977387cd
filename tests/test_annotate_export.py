"""Exports load with the comparisons reader and train a reward model: annotate -> `rlhfkit reward train`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlhfkit.cli import main
from rlhfkit.data.comparisons import load_comparisons
from test_annotate_app import Env, label_next


def _label(client, campaign: str, chosen_index: int, **extra) -> None:
    view = client.get(f"/api/campaigns/{campaign}/next").json()
    others = [r["index"] for r in view["responses"] if r["index"] != chosen_index]
    body = {"assignment_id": view["assignment_id"], "ranking": [chosen_index, *others], **extra}
    assert client.post(f"/api/campaigns/{campaign}/labels", json=body).status_code == 201


def test_pairwise_majority_soft_label_and_margin(tmp_path: Path) -> None:
    env = Env(tmp_path)
    env.campaign(n=1, k=2, overlap=3, mode="pairwise")
    _label(env.client("ana"), "c1", 0, strength=3)  # much better: margin 1
    _label(env.client("bo"), "c1", 0, strength=1)  # slightly: margin 1/3
    _label(env.client("boss"), "c1", 1, strength=1, flags=["harmful"])  # dissent: -1/3
    out = tmp_path / "majority.jsonl"
    assert main(["annotate", "export", "--db", env.db, "--campaign", "c1", "--out", str(out)]) == 0
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert record["chosen"][0]["content"] == "Answer 0.0" and record["tie"] is False
    assert record["label"] == pytest.approx(2 / 3)
    assert record["margin"] == pytest.approx((1 + 1 / 3 - 1 / 3) / 3, abs=1e-4)
    assert record["flags"] == ["harmful"] and record["meta"]["flag_counts"] == {"harmful": 1}
    assert [v["annotator"] for v in record["meta"]["votes"]] == ["ana", "bo", "boss"]
    (group,) = load_comparisons(out)
    assert group.pairs[0].target == pytest.approx(2 / 3)


def test_rank_exports_load_as_comparison_groups(tmp_path: Path) -> None:
    env = Env(tmp_path)
    env.campaign(n=3, k=3, overlap=2)
    for name in ("ana", "bo"):
        client = env.client(name)
        label_next(client, ties=[])
        label_next(client, first_shown_wins=False)
        view = client.get("/api/campaigns/c1/next").json()
        order = view["display_order"]
        body = {"assignment_id": view["assignment_id"], "ranking": order, "ties": [[order[1], order[2]]]}
        assert client.post("/api/campaigns/c1/labels", json=body).status_code == 201
    for votes, expected in (("all", 6), ("majority", 3)):
        out = tmp_path / f"{votes}.jsonl"
        assert (
            main(
                [
                    "annotate",
                    "export",
                    "--db",
                    env.db,
                    "--campaign",
                    "c1",
                    "--out",
                    str(out),
                    "--votes",
                    votes,
                ]
            )
            == 0
        )
        groups = load_comparisons(out)
        assert len(groups) == expected and all(len(g.pairs) == 3 for g in groups)
    tied = [g for g in load_comparisons(tmp_path / "all.jsonl") if g.record["ties"]]
    assert len(tied) == 2 and all(sum(p.is_tie for p in g.pairs) == 1 for g in tied)


def test_export_trains_a_reward_model(tmp_path: Path) -> None:
    from rlhfkit.models import build_model
    from rlhfkit.tokenizer import train_tokenizer

    env = Env(tmp_path)
    env.campaign(n=6, k=2, overlap=1, mode="pairwise")
    client = env.client("ana")
    for _ in range(6):
        label_next(client)
    data = tmp_path / "comparisons.jsonl"
    assert (
        main(["annotate", "export", "--db", env.db, "--campaign", "c1", "--out", str(data), "--votes", "all"])
        == 0
    )
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("Question Answer Be brief. 0 1 2 3 4 5 ? . " * 50)
    tok = train_tokenizer(corpus, 300, tmp_path / "backbone")
    build_model("micro", len(tok), 128, tok, seed=0).save_pretrained(tmp_path / "backbone")
    out = tmp_path / "rm"
    args = ["reward", "train", "--model", str(tmp_path / "backbone"), "--data", str(data), "--out", str(out),
            "--max-steps", "2", "--epochs", "0", "--max-length", "64", "--device", "cpu"]  # fmt: skip
    assert main(args) == 0
    assert (out / "rlhfkit.json").exists()
