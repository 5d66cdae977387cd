"""Simulated annotators: calibrated agreement, biases, the label and judge commands."""

from __future__ import annotations

import json
import random

from rlhfkit.cli import main
from rlhfkit.world import label_candidates, measure_agreement
from rlhfkit.world.annotators import PoolConfig, calibration_pairs, judge_as, make_pool
from rlhfkit.world.answers import good_response
from rlhfkit.world.tasks import sample_task


def test_default_pool_agreement_is_like_instructgpt_labelers():
    agreement = measure_agreement(2000, seed=0)
    assert 0.70 <= agreement <= 0.76, agreement


def test_noisier_pool_agrees_less():
    calm = measure_agreement(600, seed=1, config=PoolConfig(noise=0.3))
    noisy = measure_agreement(600, seed=1, config=PoolConfig(noise=4.0))
    assert calm > noisy + 0.05


def test_biases_position_length_and_fatigue():
    rng = random.Random(0)
    a = make_pool(PoolConfig(size=1))[0]
    first = sum(judge_as(a, [5.0, 5.0], [10, 10], 0, rng).ranking[0] == 0 for _ in range(4000)) / 4000
    assert first > 0.52  # equal answers: the first shown wins more often
    long_a = make_pool(PoolConfig(size=1, length_bias=1.0, seed=2))[0]
    longer = sum(judge_as(long_a, [5.0, 5.0], [10, 80], 0, rng).ranking[0] == 1 for _ in range(4000)) / 4000
    assert longer > 0.6
    fresh = sum(judge_as(a, [6.0, 5.0], [10, 10], 0, rng).ranking[0] == 0 for _ in range(4000)) / 4000
    tired = sum(judge_as(a, [6.0, 5.0], [10, 10], 3000, rng).ranking[0] == 0 for _ in range(4000)) / 4000
    assert fresh > tired


def test_label_candidates_ranks_k_completions_in_shared_format():
    rng = random.Random(0)
    records = []
    for i in range(6):
        task = sample_task("capital", rng)
        comps = [good_response(task, rng), "I don't know.", "The capital is Atlantis."]
        records.append(
            {
                "id": f"c{i}",
                "prompt": [{"role": "user", "content": task.question}],
                "category": "factual",
                "meta": task.meta,
                "completions": [[{"role": "assistant", "content": c}] for c in comps],
            }
        )
    labels = label_candidates(records, pool_size=4, overlap=2, seed=0)
    assert len(labels) == 12 and labels == label_candidates(records, pool_size=4, overlap=2, seed=0)
    for rec in labels:
        assert sorted(rec["ranking"]) == [0, 1, 2] and rec["seconds"] > 0 and rec["created_at"].endswith("Z")
        assert (
            rec["annotator"].startswith("sim-")
            and isinstance(rec["ties"], list)
            and "gold" not in rec["meta"]
        )
    assert sum(rec["ranking"][0] == 0 for rec in labels) >= 9  # the correct answer usually wins
    assert (
        len({(r["id"].split(":")[0], r["annotator"]) for r in labels}) == 12
    )  # distinct annotators per item


def test_label_and_judge_commands(tmp_path, capsys):
    pairs = calibration_pairs(20, seed=0)
    cand = tmp_path / "candidates.jsonl"
    cand.write_text("\n".join(json.dumps(p) for p in pairs) + "\n", encoding="utf-8")
    out = tmp_path / "labels.jsonl"
    code = main(
        [
            "label",
            "--candidates",
            str(cand),
            "--pool-size",
            "5",
            "--overlap",
            "3",
            "--seed",
            "2",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    labels = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(labels) == 60
    keys = {
        "prompt",
        "completions",
        "ranking",
        "ties",
        "annotator",
        "seconds",
        "created_at",
        "id",
        "category",
        "meta",
    }
    assert all(keys <= set(rec) for rec in labels)

    scored_in = tmp_path / "responses.jsonl"
    rows = [{"messages": p["prompt"], "response": p["completions"][0][0]["content"]} for p in pairs]
    scored_in.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    assert main(["judge", "--in", str(scored_in), "--out", str(tmp_path / "scored.jsonl")]) == 0
    scored = [json.loads(line) for line in (tmp_path / "scored.jsonl").read_text().splitlines()]
    assert len(scored) == 20 and all(0 <= r["gold"] <= 10 and "fluency" in r["gold_parts"] for r in scored)


def test_bad_candidates_file_names_line_and_field(tmp_path, capsys):
    cand = tmp_path / "bad.jsonl"
    cand.write_text(
        json.dumps({"prompt": [{"role": "user", "content": "hi"}], "completions": ["only one"]}) + "\n"
    )
    assert main(["label", "--candidates", str(cand), "--out", str(tmp_path / "o.jsonl")]) == 1
    err = capsys.readouterr().err
    assert "bad.jsonl:1" in err and "completions" in err


def test_label_measures_the_two_annotator_agreement_ceiling(tmp_path, capsys):
    cand = tmp_path / "candidates.jsonl"
    cand.write_text("".join(json.dumps(p) + "\n" for p in calibration_pairs(30, seed=1)), encoding="utf-8")
    argv = ["label", "--candidates", str(cand), "--out", str(tmp_path / "l.jsonl"),
            "--agreement-out", str(tmp_path / "agreement.json")]  # fmt: skip
    assert main(argv) == 0
    ceiling = json.loads((tmp_path / "agreement.json").read_text())
    assert ceiling["items"] == 30 and ceiling["pairs"] == 30 and 0.5 < ceiling["pairwise_agreement"] <= 1.0
    assert len((tmp_path / "l.jsonl").read_text().splitlines()) == 30  # the second labelling is not written
