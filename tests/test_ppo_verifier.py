"""`--reward verifier` (RLVR): the task's checker is the reward of ppo, rloo and grpo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlhfkit.cli import main
from rlhfkit.ppo.config import GRPOConfig, PPOLoopConfig
from rlhfkit.ppo.trainer import run

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def write_prompts(path: Path, rows: list[dict]) -> Path:
    from rlhfkit.data.jsonl import write_jsonl

    write_jsonl(path, rows)
    return path


def easy_task(path: Path) -> Path:
    """24 prompts whose checkable answer is the word 'cat' among the choices 'cat' and 'dog'."""
    rows = [
        {
            "id": f"v{i}",
            "messages": [{"role": "user", "content": f"cat or dog {i}?"}],
            "meta": {"answer": "cat", "choices": ["cat", "dog"]},
        }
        for i in range(24)
    ]
    return write_prompts(path, rows)


def grpo_config(policy_dir: Path, prompts: Path, out: Path, **kw) -> GRPOConfig:
    settings = dict(
        policy=str(policy_dir),
        prompts=str(prompts),
        out=str(out),
        reward="verifier",
        steps=10,
        batch_size=32,
        epochs=2,
        minibatch_size=16,
        max_new_tokens=6,
        beta=0.02,
        kl_target=0.0,
        missing_eot_penalty=0.0,
        sample_every=0,
        max_approx_kl=0.0,
        device="cpu",
    )
    settings.update(kw)
    return GRPOConfig(**settings, loop=PPOLoopConfig(lr=3e-2, warmup_steps=1, save_every=100, seed=0))


def test_grpo_with_the_verifier_gives_more_correct_answers(policy_dir, tmp_path):
    # seeds 0-3 measured: the correct fraction goes from <= 0.03 in the first two steps to 0.42-0.81 in the last two
    out = run(grpo_config(policy_dir, easy_task(tmp_path / "p.jsonl"), tmp_path / "grpo"))
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    first = sum(r["reward"] for r in rows[:2]) / 2  # the reward is the fraction of correct answers
    last = sum(r["reward"] for r in rows[-2:]) / 2
    assert last > first + 0.2, (first, last)
    manifest = json.loads((out / "rlhfkit.json").read_text())
    assert manifest["reward_model"] == "verifier" and manifest["reward_normalization"]["std"] == 1.0


def test_the_reward_is_the_checker_plus_an_optional_format_term(tmp_path):
    from rlhfkit.ppo.verifier_reward import verifier_reward_fn

    path = write_prompts(
        tmp_path / "p.jsonl",
        [
            {
                "messages": [{"role": "user", "content": "How much do 3 pens at $2 cost?"}],
                "meta": {"answer": 6},
            },
            {"messages": [{"role": "user", "content": "2 + 2?"}], "answer": "4"},  # top level, as a string
        ],
    )
    prompts = [
        [{"role": "user", "content": "How much do 3 pens at $2 cost?"}],
        [{"role": "user", "content": "2 + 2?"}],
    ]
    replies = ["3 × $2 = $6. So the answer is $6.", "It is 4 or 5."]
    score, stats = verifier_reward_fn("verifier", str(path))
    assert score(prompts, replies, [[], []]) == [1.0, 0.0] and stats == {"score_std": 1.0}
    assert score(prompts, ["The answer is $7.", "no idea"], [[], []]) == [0.0, 0.0]
    score, _ = verifier_reward_fn("verifier+format=0.5", str(path))
    # one final answer earns the format term, right or wrong; a contradiction or no answer earns nothing
    assert score(prompts * 2, ["$6", "5", "$7", "4 or 5"], [[]] * 4) == [1.5, 0.5, 0.5, 0.0]


@pytest.mark.parametrize(
    "spec, message",
    [
        ("verifier+length", "expected verifier, optionally with"),
        ("verifier+format=x", "format weight W must be a number >= 0"),
        ("verifier+process+process", "each once"),
    ],
)
def test_a_bad_reward_spec_is_one_line(spec, message, tmp_path):
    from rlhfkit.errors import RlhfkitError
    from rlhfkit.ppo.verifier_reward import verifier_reward_fn

    path = easy_task(tmp_path / "p.jsonl")
    with pytest.raises(RlhfkitError, match=message):
        verifier_reward_fn(spec, str(path))


def test_prompts_without_an_answer_fail_before_training_naming_the_line(policy_dir, tmp_path, capsys):
    rows = [
        {"messages": [{"role": "user", "content": "1 + 1?"}], "meta": {"answer": 2}},
        {"messages": [{"role": "user", "content": "tell me about the sun"}], "meta": {"kind": "bare_topic"}},
    ]
    path = write_prompts(tmp_path / "p.jsonl", rows)
    out = tmp_path / "g"
    code = main(
        [
            "grpo",
            "--policy",
            str(policy_dir),
            "--reward",
            "verifier",
            "--prompts",
            str(path),
            "--out",
            str(out),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1
    assert f"{path}:2: field 'meta.answer': missing; --reward verifier needs every prompt's answer" in err
    assert not out.exists()  # nothing was loaded or written


def test_ppo_with_the_verifier_trains_a_critic_from_the_policy(policy_dir, tmp_path):
    out = tmp_path / "ppo"
    code = main(
        [
            "ppo",
            "--policy",
            str(policy_dir),
            "--reward",
            "verifier+format",
            "--prompts",
            str(easy_task(tmp_path / "p.jsonl")),
            "--out",
            str(out),
            "--steps",
            "2",
            "--batch-size",
            "8",
            "--minibatch-size",
            "8",
            "--epochs",
            "1",
            "--max-new-tokens",
            "6",
            "--sample-every",
            "0",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    assert (out / "value" / "config.json").exists()  # no reward model to start the critic from
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(0.0 <= r["reward"] <= 1.2 for r in rows)
