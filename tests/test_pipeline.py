"""The pipeline runs stages in order, records them, skips what is up to date and reruns what changed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlhfkit.cli import build_parser
from rlhfkit.config import to_flags
from rlhfkit.errors import RlhfkitError
from rlhfkit.pipeline import (
    ALL_STAGE_NAMES,
    CAI_STAGES,
    HYBRID_STAGES,
    METHODS,
    RLVR_STAGES,
    STAGES,
    UNSEEDED,
    build_config,
    command_line,
    rlhf_stages,
    run_pipeline,
    stage_key,
    stage_options,
)

TINY = {
    "world": {"size": "small"},
    "tokenizer": {"vocab_size": 400},
    "pretrain": {
        "preset": "micro",
        "max_steps": 6,
        "seq_len": 32,
        "batch_size": 8,
        "eval_every": 6,
        "eval_tokens": 1024,
        "sample_tokens": 2,
    },
    "sft": {"epochs": 0, "max_steps": 4, "batch_size": 8, "eval_every": 4, "max_len": 64, "max_val_chats": 8},
}


def _stages(run):
    return json.loads((run / "pipeline.json").read_text())["stages"]


def test_pipeline_runs_records_skips_and_reruns_changed_stages(tmp_path):
    run = tmp_path / "run"
    run_pipeline(run, TINY, until="sft")
    stages = _stages(run)
    assert [k for k, v in stages.items() if v["status"] == "done"] == [
        "world",
        "tokenizer",
        "pretrain",
        "sft",
    ]
    assert stages["pretrain"]["metrics"]["step"] == 6 and "val_bpb" in stages["pretrain"]["metrics"]
    assert stages["sft"]["command"][:2] == ["rlhfkit", "sft"]
    assert (run / "sft" / "config.json").exists() and (run / "pretrain" / "rlhfkit.json").exists()
    first_keys = {k: v["key"] for k, v in stages.items()}
    finished = {k: v["finished_at"] for k, v in stages.items()}

    # Same config: nothing reruns.
    run_pipeline(run, TINY, until="sft")
    assert {k: v["finished_at"] for k, v in _stages(run).items()} == finished

    # A changed SFT option reruns SFT only; upstream stages keep their results.
    changed = {**TINY, "sft": {**TINY["sft"], "max_steps": 5}}
    run_pipeline(run, changed, until="sft")
    after = _stages(run)
    assert all(after[k]["finished_at"] == finished[k] for k in ("world", "tokenizer", "pretrain"))
    assert after["sft"]["key"] != first_keys["sft"] and after["sft"]["metrics"]["step"] == 5


def test_a_run_made_with_the_old_folder_names_resumes_without_rerunning(tmp_path):
    """Before each stage wrote the folder of its name, pretrain wrote base/. Such a run's record holds commands
    (and so keys) with base/ in them; it must resume where it was, not start again."""
    run = tmp_path / "run"
    run_pipeline(run, TINY, until="pretrain")
    (run / "pretrain").rename(run / "base")
    record = json.loads((run / "pipeline.json").read_text())
    keys: dict[str, str] = {}
    for stage in STAGES[:3]:  # what the old code recorded: the same commands with base/ for pretrain's folder
        entry = record["stages"][stage.name]
        entry["command"] = [a.replace(str(run / "pretrain"), str(run / "base")) for a in entry["command"]]
        entry["key"] = keys[stage.name] = stage_key(entry["command"][1:], [keys[d] for d in stage.depends])
    (run / "pipeline.json").write_text(json.dumps(record))
    finished = {k: v["finished_at"] for k, v in _stages(run).items()}

    run_pipeline(run, TINY, until="sft")
    stages = _stages(run)
    assert {k: stages[k]["finished_at"] for k in finished} == finished  # nothing before sft reran
    assert not (run / "pretrain").exists() and (run / "sft" / "config.json").exists()
    assert stages["sft"]["command"][stages["sft"]["command"].index("--model") + 1] == str(run / "base")


def test_options_merge_defaults_quick_and_user_tables():
    opts = stage_options({"pretrain": {"max_steps": 7}, "seed": 3}, True, ALL_STAGE_NAMES)
    assert (
        opts["pretrain"]["max-steps"] == 7
        and opts["pretrain"]["preset"] == "micro"
        and opts["pretrain"]["seed"] == 3
    )
    assert to_flags({"a": 1, "flag": True, "off": False, "many": [1, 2]}) == [
        "--a",
        "1",
        "--flag",
        "--no-off",
        "--many",
        "1",
        "--many",
        "2",
    ]
    with pytest.raises(RlhfkitError, match="unknown stage table"):
        stage_options({"pretrainn": {}}, False, ALL_STAGE_NAMES)
    sft = STAGES[3]  # an option the stage's config does not have fails before anything runs, naming both
    with pytest.raises(
        RlhfkitError, match=r"pipeline stage \[sft\]: unknown option\(s\) for SFTConfig: warp_speed"
    ):
        build_config(sft, Path("run"), {"warp-speed": 9})
    with pytest.raises(RlhfkitError, match=r"pipeline stage \[sft\]: max-steps: cannot read 'many'"):
        build_config(sft, Path("run"), {"max-steps": "many"})
    assert repr(build_config(sft, Path("run"), {"epochs": 1}).epochs) == "1.0"  # typed as the flag would be


def test_quick_pipeline_runs_every_stage_end_to_end(tmp_path):
    """Every stage at micro size through the real code paths; every artifact exists and loads; the report renders."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    run = tmp_path / "quick"
    config = {
        **TINY,
        "candidates": {"n": 2, "max_new_tokens": 12},
        "reward": {"epochs": 0, "max_steps": 4, "eval_every": 4},
        "ppo": {"steps": 2, "batch_size": 8, "minibatch_size": 4, "epochs": 1, "max_new_tokens": 12},
        "evaluate": {"n_prompts": 16, "max_new_tokens": 16, "bootstrap": 50},
    }
    stages = run_pipeline(run, config, quick=True).stages
    assert all(v.status == "done" for v in stages.values()) and len(stages) == 10
    seconds_before = {name: v.seconds for name, v in stages.items()}
    for name in ("pretrain", "sft", "rs"):  # the default method: rejection sampling
        AutoModelForCausalLM.from_pretrained(str(run / name))
    # the default reward model is the bundled MiniLM encoder, not the policy's backbone
    assert AutoModelForSequenceClassification.from_pretrained(str(run / "reward")).config.model_type == "bert"
    assert (run / "labels" / "train.jsonl").stat().st_size > 0
    results = json.loads((run / "evaluate" / "results.json").read_text())
    assert {"win_sft_vs_base", "win_rs_vs_sft", "win_rs-bo8_vs_sft"} <= set(results["headline"])
    assert "win_rs-bo8_vs_sft" in stages["evaluate"].metrics  # the run record keeps the headline win rates
    # the aligned model also answers as best-of-8 by the run's reward model, as `serve --best-of` would
    assert results["config"]["best_of"] == ["rs-bo8=8"] and results["generation"]["rs-bo8"]["best_of"] == 8
    html = (run / "report.html").read_text()
    assert "<img" in html and "data:image/png;base64," in html
    assert (
        "Rejection sampling" in html and "winners of the last round" in html
    )  # the default method's section

    # every other method from the same SFT model and labels: upstream stages are reused, not rerun
    methods = "ppo,dpo,rloo,grpo,rs,online,hybrid"
    extra = {"online": {"label_budget": 32}, "cai_demos": {"chains": 40, "judgments": 40, "max_words": 100},
             "cai_labeler": {"epochs": 0, "max_steps": 2, "batch_size": 8, "max_len": 256, "max_val_chats": 8},
             "hybrid_reward": {"epochs": 0, "max_steps": 4}}  # fmt: skip
    stages = run_pipeline(run, {**config, **extra}, quick=True, method=methods).stages
    for name in ("pretrain", "sft", "labels", "reward", "rs"):
        assert stages[name].seconds == seconds_before[name], name  # skipped: up to date
    # PPO against the MiniLM reward model: its critic starts from the policy (it cannot read the RM's tokens)
    critic = json.loads((run / "ppo" / "value" / "config.json").read_text())
    assert critic["model_type"] == json.loads((run / "sft" / "config.json").read_text())["model_type"]
    for name in methods.split(","):
        assert stages[name].status == "done"
        AutoModelForCausalLM.from_pretrained(str(run / name))
    results = json.loads((run / "evaluate" / "results.json").read_text())
    assert list(results["models"]) == ["base", "sft", *methods.split(","), "ppo-bo8"]  # the first, best-of-8
    # the hybrid reward model learned from people on helpfulness prompts and from the AI labeler on harmlessness
    train = [json.loads(x) for x in (run / "cai" / "hybrid" / "train.jsonl").read_text().splitlines()]
    harmless = {"harmful", "benign_risky"}
    assert any("label" in t for t in train) and all("label" in t for t in train if t["category"] in harmless)
    assert any("ranking" in t and t["category"] not in harmless for t in train)


def test_quick_cai_pipeline_runs_every_stage(tmp_path):
    """The Constitutional AI variant end to end at micro size: SL-CAI, AI labels, RM, PPO, evaluation."""
    run = tmp_path / "cai"
    config = {
        **TINY,
        "cai_demos": {"chains": 40, "judgments": 40, "max_words": 100},
        "cai_critic": {"epochs": 0, "max_steps": 2, "batch_size": 8, "max_len": 256, "max_val_chats": 8},
        "cai_labeler": {"epochs": 0, "max_steps": 2, "batch_size": 8, "max_len": 256, "max_val_chats": 8},
        "cai_revise": {"revisions": 1, "max_new_tokens": 8, "min_preference": 0.0},
        "sl_cai": {"epochs": 0, "max_steps": 2, "batch_size": 8, "max_len": 64, "max_val_chats": 8},
        "cai_control": {"epochs": 0, "max_steps": 2, "batch_size": 8, "max_len": 64, "max_val_chats": 8},
        "cai_candidates": {"n": 2, "max_new_tokens": 8},
        "cai_reward": {"epochs": 0, "max_steps": 2},
        "cai_ppo": {"steps": 1, "batch_size": 8, "minibatch_size": 4, "epochs": 1, "max_new_tokens": 8},
        "cai_evaluate": {"n_prompts": 8, "max_new_tokens": 8, "bootstrap": 20},
    }
    stages = run_pipeline(run, config, quick=True, cai=True).stages
    assert all(v.status == "done" for v in stages.values()) and len(stages) == 15
    # the critic critiqued and revised the SFT model's answers, the labeler checked each revision and labelled pairs
    assert (run / "cai" / "critic" / "config.json").exists() and (
        run / "cai" / "labeler" / "config.json"
    ).exists()
    chains = [
        json.loads(line)
        for line in (run / "cai" / "revise" / "revisions.chains.jsonl").read_text().splitlines()
    ]
    changed = [s for c in chains for s in c["steps"] if s["revision"] and s["revision"] != c["initial"]]
    assert changed and all("verified" in s for s in changed)  # some revisions differ, and each was checked
    # the control: the same first answers unrevised, fine-tuned on like the revisions and evaluated beside them
    unrevised = (run / "cai" / "revise" / "unrevised.jsonl").read_text().splitlines()
    assert [json.loads(x)["messages"][-1]["content"] for x in unrevised] == [
        c["initial"] for c in chains if c["initial"]
    ]
    assert "self_distilled" in json.loads((run / "cai" / "evaluate" / "results.json").read_text())["models"]
    world_eval = json.loads((run / "cai" / "evaluate" / "world_eval.json").read_text())
    assert world_eval["human_comparisons"] == 0 and world_eval["revisions"]["chains"] > 0
    assert world_eval["labels"]["pairs"] + world_eval["labels"]["gold_ties"] > 0
    labels = [json.loads(line) for line in (run / "cai" / "labels" / "train.jsonl").read_text().splitlines()]
    assert labels and all(0.0 <= rec["label"] <= 1.0 for rec in labels)
    assert (run / "cai" / "ppo" / "config.json").exists() and (
        run / "cai" / "evaluate" / "results.json"
    ).exists()


def test_pipeline_seed_seeds_every_stage_that_takes_one():
    opts = stage_options({"seed": 3}, False, ALL_STAGE_NAMES)
    seeded = {name for name, o in opts.items() if o.get("seed") == 3}
    assert seeded == set(opts) - set(UNSEEDED)
    assert {"cai_demos", "cai_critic", "cai_labeler", "cai_revise", "sl_cai", "cai_control", "cai_candidates",
            "cai_labels", "cai_reward", "cai_ppo", "cai_evaluate", "hybrid_labels", "hybrid_reward"} <= seeded  # fmt: skip
    parser = build_parser()
    stages = {
        s.name: s for s in [*STAGES, *CAI_STAGES, *HYBRID_STAGES, *RLVR_STAGES, *rlhf_stages(list(METHODS))]
    }
    for name in seeded - {
        "evaluate",
        "cai_evaluate",
        "rlvr_evaluate",
    }:  # evaluate's argv needs existing models; its flag is checked below
        assert parser.parse_args(command_line(stages[name], Path("run"), opts[name])).seed == 3, name
    assert (
        parser.parse_args(["evaluate", "--prompts", "p", "--model", "a=b", "--out", "o", "--seed", "3"]).seed
        == 3
    )


def test_quick_grpo_verifier_pipeline_runs_world_to_tool_evaluation(tmp_path):
    """`--method grpo-verifier`: verifiable world with tools -> SFT on tool demonstrations -> GRPO with the
    checker and the tools -> accuracy with the tools on held-out tasks, each stage through its real code."""
    run = tmp_path / "rlvr"
    config = {
        "rlvr_world": {"size": "small", "verifiable": 80},
        "rlvr_tokenizer": {"vocab_size": 400},
        "rlvr_pretrain": TINY["pretrain"],
        "rlvr_sft": {"max_steps": 4, "batch_size": 8, "eval_every": 4, "max_len": 256, "max_val_chats": 8},
        "grpo_verifier": {
            "steps": 1,
            "batch_size": 8,
            "minibatch_size": 8,
            "epochs": 1,
            "max_new_tokens": 16,
        },
        "rlvr_evaluate": {"n_prompts": 6, "max_new_tokens": 16, "pass_samples": 2, "bootstrap": 0},
    }
    stages = run_pipeline(run, config, quick=True, method="grpo-verifier").stages
    names = ["rlvr_world", "rlvr_tokenizer", "rlvr_pretrain", "rlvr_sft", "grpo_verifier", "rlvr_evaluate"]
    assert list(stages) == names
    assert all(v.status == "done" for v in stages.values())
    assert stages["grpo_verifier"].command[:2] == ["rlhfkit", "grpo"]
    assert (
        "--max-tool-turns" in stages["grpo_verifier"].command
        and "verifier" in stages["grpo_verifier"].command
    )
    sft = json.loads((run / "sft" / "rlhfkit.json").read_text())
    assert sft["config"]["data"].endswith("verifiable_tools_sft.jsonl")
    results = json.loads((run / "evaluate" / "results.json").read_text())
    assert (
        list(results["verifiable"]) == ["sft", "grpo-verifier"] and results["config"]["max_tool_turns"] == 6
    )
    assert "tools" in results["verifiable"]["grpo-verifier"] and results["n_prompts"] == 6


def test_grpo_verifier_is_a_method_of_its_own():
    from rlhfkit.pipeline import RLVR_STAGES, parse_methods
    from rlhfkit.pipeline.stages import stage_list

    assert stage_list(False, parse_methods("grpo-verifier")) == RLVR_STAGES
    with pytest.raises(RlhfkitError, match="give it alone"):
        parse_methods("ppo,grpo-verifier")
    opts = stage_options({}, False, ALL_STAGE_NAMES)
    assert opts["grpo_verifier"]["reward"] == "verifier" and opts["rlvr_world"]["tools"] is True
    assert opts["rlvr_pretrain"] == opts["pretrain"]  # the same base model recipe as the RLHF pipeline
