"""Multi-turn tool-using rollouts (`ppo/environment.py`): the environment step, masks that are zero exactly on
tool tokens, log-probs that stay exact across turns, credit that skips tool turns, and ppo/grpo/rloo trained
with `--max-tool-turns`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rlhfkit.data.tool_calls import ToolCall, call_text
from rlhfkit.generation import Completion, SamplingParams, end_of_turn_ids
from rlhfkit.ppo import rollout as rollout_module
from rlhfkit.ppo.advantages import gae, per_token_rewards
from rlhfkit.ppo.config import GRPOConfig, PPOConfig, PPOLoopConfig, RLOOConfig
from rlhfkit.ppo.environment import run_episodes, tool_turn_ids
from rlhfkit.ppo.rollout import collect, measure
from rlhfkit.ppo.trainer import run
from rlhfkit.tokenizer import load_tokenizer
from rlhfkit.world.tools import WORLD_TOOLS, run_tool

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CALL = ToolCall("calculator", {"expr": "3 * 4"})


def turn(tok, text: str, stop: bool = True) -> Completion:
    end = [tok.convert_tokens_to_ids("<|end|>")] if stop else []
    return Completion(
        tok(text, add_special_tokens=False)["input_ids"] + end, [], "stop" if stop else "length", text
    )


def first_turn(tok, contexts: list[list[int]]) -> bool:
    return not any("<|tool|>" in tok.decode(c) for c in contexts)


def scripted(tok, script: dict[int, list[str]]):
    """A sampler that answers turn t of episode i with script[i][t] (and records what it was asked)."""
    asked: list[list[list[int]]] = []

    def sample(contexts, params):
        asked.append(contexts)
        t = len(asked) - 1
        running = [i for i, lines in script.items() if len(lines) > t and (t == 0 or lines[t - 1][0] == "{")]
        return [turn(tok, script[i][t]) for i in running]

    return sample, asked


def test_the_environment_runs_calls_appends_tool_turns_and_stops_at_the_turn_limit(policy_dir):
    tok = load_tokenizer(policy_dir)
    script = {
        0: ["the answer is 12"],
        1: [call_text(CALL), "so 12"],
        2: ['{"name": "calculator", "arguments": ', "oops"],  # a bad call: its error is the tool's output
        3: [call_text(CALL), call_text(CALL), call_text(CALL)],  # one call more than the limit
    }
    sample, asked = scripted(tok, script)
    prompts = [[5, 6, 7]] * 4
    episodes = run_episodes(sample, tok, prompts, SamplingParams(max_new_tokens=40), WORLD_TOOLS, 2, 10**6)
    assert [e.text for e in episodes] == ["the answer is 12", "so 12", "oops", call_text(CALL)]
    assert [e.tool_calls for e in episodes] == [0, 1, 1, 2] and all(e.finished for e in episodes)
    result = tool_turn_ids(tok, run_tool(CALL))
    assert tok.decode(result) == '<|tool|>{"result": 12}<|end|><|assistant|>'
    first = turn(tok, call_text(CALL)).token_ids
    assert episodes[1].response[: len(first) + len(result)] == first + result
    assert episodes[1].sampled == [1] * len(first) + [0] * len(result) + [1] * (
        len(episodes[1].sampled) - len(first) - len(result)
    )
    assert "not valid JSON" in episodes[2].turns[1]["content"]
    # the second turn continues from the whole episode so far: prompt, the call, the tool's answer
    assert asked[1][0] == prompts[1] + first + result


def test_an_episode_without_room_for_the_tool_turn_ends_with_its_call(policy_dir):
    tok = load_tokenizer(policy_dir)
    sample, _ = scripted(tok, {0: [call_text(CALL), "never sampled"]})
    [episode] = run_episodes(sample, tok, [[5]], SamplingParams(max_new_tokens=40), WORLD_TOOLS, 2, 70)
    assert episode.text == call_text(CALL) and episode.tool_calls == 0 and all(episode.sampled)


def test_credit_skips_tool_turns():
    # row 0 has a tool turn at positions 2-3; row 1 is the same episode without it
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0, 1.0, 0.0], [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]])
    logp = torch.tensor([[-1.0, -2.0, 9.0, 9.0, -3.0, 0.0], [-1.0, -2.0, -3.0, 0.0, 0.0, 0.0]])
    ref = torch.full_like(logp, -1.5)
    rewards, kl = per_token_rewards(logp, ref, torch.tensor([2.0, 2.0]), mask, beta=0.1)
    assert (
        rewards[0, 4] == rewards[1, 2] and rewards[0, 2:4].abs().sum() == 0
    )  # the score: last sampled token
    values = torch.tensor([[0.5, 0.3, 7.0, 7.0, 0.2, 0.0], [0.5, 0.3, 0.2, 0.0, 0.0, 0.0]])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    keep = mask[0].bool()
    assert torch.allclose(adv[0, keep], adv[1, :3]) and torch.allclose(ret[0, keep], ret[1, :3])
    assert adv[0, ~keep].abs().sum() == 0 and ret[0, ~keep].abs().sum() == 0


def test_stored_logprobs_equal_a_fresh_forward_and_the_mask_is_zero_exactly_on_tool_tokens(
    policy_dir, monkeypatch
):
    """The first turn is scripted (a random micro model makes no calls by itself); every later turn is sampled
    by the engine from the whole episode, so its sampling-time log-probs are checked too."""
    from transformers import AutoModelForCausalLM

    tok = load_tokenizer(policy_dir)
    policy = AutoModelForCausalLM.from_pretrained(str(policy_dir)).float()
    real = rollout_module.sample_responses
    sampled_logprobs: dict[tuple[int, ...], list[float]] = {}

    def sample_responses(policy, tokenizer, contexts, params, pad_id, batch_size, quantize="none"):
        if first_turn(tokenizer, contexts):  # the first turn makes a call (or a bad one)
            texts = [
                call_text(CALL),
                call_text(ToolCall("lookup", {"item": "nothing"})),
                '{"name": 3}',
                "cat",
            ]
            return [turn(tokenizer, texts[i % 4]) for i in range(len(contexts))]
        out = real(policy, tokenizer, contexts, params, pad_id, batch_size, quantize)
        for context, completion in zip(contexts, out):
            sampled_logprobs[tuple(context + completion.token_ids)] = completion.logprobs
        return out

    monkeypatch.setattr(rollout_module, "sample_responses", sample_responses)
    prompts = [
        tok(f"<|user|>cat or dog {i}?<|end|><|assistant|>", add_special_tokens=False)["input_ids"]
        for i in range(8)
    ]
    params = SamplingParams(
        max_new_tokens=12, temperature=1.0, stop_token_ids=end_of_turn_ids(tok, policy), seed=3
    )
    messages = [[{"role": "user", "content": f"cat or dog {i}?"}] for i in range(8)]
    ro = collect(
        policy,
        tok,
        prompts,
        messages,
        list(range(8)),
        lambda p, t, i: [0.0] * len(t),
        params,
        pad_id=tok.pad_token_id,
        device="cpu",
        tools=WORLD_TOOLS,
        max_tool_turns=2,
    )
    measure(ro, policy, policy, None, temperature=1.0)
    assert ro.mask.min() == 0
    with torch.no_grad():
        logits = policy(input_ids=ro.sequences).logits.float()
    fresh = torch.log_softmax(logits, -1)
    checked = 0
    for i in range(ro.size):
        p = int(ro.prompt_lens[i])
        response = ro.sequences[i, p : int(ro.lengths[i])].tolist()
        # the tool tokens: exactly the spans the environment appended after each call
        tool = torch.zeros(len(response))
        at = 0
        for message in ro.turns[i]:
            if message["role"] == "tool":
                ids = tool_turn_ids(tok, message["content"])
                at = next(j for j in range(at, len(response)) if response[j : j + len(ids)] == ids)
                tool[at : at + len(ids)] = 1
                at += len(ids)
        assert torch.equal(ro.mask[i, : len(response)], 1 - tool)
        assert ro.mask[i, len(response) :].sum() == 0 and int(tool.sum()) > 0 or not ro.turns[i]
        positions = torch.nonzero(1 - tool)[:, 0]
        expected = fresh[i, p - 1 + positions, torch.tensor(response)[positions]]
        torch.testing.assert_close(ro.logprobs[i, positions], expected, atol=1e-5, rtol=0)
        # and the engine's own log-probs of its later turns, sampled from the prefilled episode
        for key, logprobs in sampled_logprobs.items():
            row = ro.sequences[i, : len(key)].tolist()
            if row == list(key):
                start = len(key) - len(logprobs) - p
                got = ro.logprobs[i, start : start + len(logprobs)]
                torch.testing.assert_close(got, torch.tensor(logprobs), atol=1e-4, rtol=0)
                checked += 1
    # every episode whose call was answered had a second, sampled turn (the lookup's long error leaves the
    # micro model's 128 positions no room for one: those episodes end with their call)
    assert checked >= sum(bool(t) for t in ro.turns) >= 4


def forced_calls(monkeypatch):
    """Make every first turn a calculator call, then sample for real."""
    real = rollout_module.sample_responses

    def sample_responses(policy, tokenizer, contexts, params, pad_id, batch_size, quantize="none"):
        if first_turn(tokenizer, contexts):
            return [turn(tokenizer, call_text(CALL)) for _ in contexts]
        return real(policy, tokenizer, contexts, params, pad_id, batch_size, quantize)

    monkeypatch.setattr(rollout_module, "sample_responses", sample_responses)


@pytest.mark.parametrize("config", [PPOConfig, GRPOConfig, RLOOConfig])
def test_every_method_trains_on_tool_episodes(policy_dir, tmp_path, monkeypatch, config):
    forced_calls(monkeypatch)
    rows = [
        {"id": f"v{i}", "messages": [{"role": "user", "content": f"3 times 4, take {i}?"}], "answer": 12}
        for i in range(8)
    ]
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = config(
        policy=str(policy_dir),
        prompts=str(prompts),
        out=str(tmp_path / "out"),
        reward="verifier",
        steps=2,
        batch_size=8,
        samples_per_prompt=1 if config is PPOConfig else 4,
        epochs=1,
        minibatch_size=4,
        max_new_tokens=6,
        max_tool_turns=1,
        sample_every=2,
        device="cpu",
        value_model="head" if config is PPOConfig else "auto",
        loop=PPOLoopConfig(lr=1e-3, warmup_steps=1, save_every=100),
    )
    out = run(cfg)
    metrics = [json.loads(x) for x in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    assert [m["tool_calls"] for m in metrics] == [1.0, 1.0] and all("skipped" not in m for m in metrics)
    assert all(torch.isfinite(torch.tensor(m["policy_loss"])) for m in metrics)
    sample = json.loads((Path(out) / "samples.jsonl").read_text().splitlines()[0])
    assert sample["turns"][1] == {"role": "tool", "content": '{"result": 12}'}


def test_max_tool_turns_must_not_be_negative(policy_dir, tmp_path, capsys):
    from rlhfkit.cli import main

    code = main(
        [
            "grpo",
            "--policy",
            str(policy_dir),
            "--reward",
            "verifier",
            "--prompts",
            "x",
            "--max-tool-turns",
            "-1",
        ]
    )
    assert code == 1 and "--max-tool-turns: expected an integer >= 0" in capsys.readouterr().err


def test_a_reward_that_reads_turns_gets_each_episodes_tool_turns(policy_dir, monkeypatch):
    """`reads_turns` (the process reward): the rollout hands the reward every episode's calls and results."""
    from transformers import AutoModelForCausalLM

    tok = load_tokenizer(policy_dir)
    policy = AutoModelForCausalLM.from_pretrained(str(policy_dir)).float()

    def sample_responses(policy, tokenizer, contexts, params, pad_id, batch_size, quantize="none"):
        # episode 0 calls the calculator, then answers; episode 1 answers at once
        return [
            turn(tokenizer, "so 12" if not first_turn(tokenizer, [c]) or i else call_text(CALL))
            for i, c in enumerate(contexts)
        ]

    monkeypatch.setattr(rollout_module, "sample_responses", sample_responses)
    seen = {}

    def reward(prompts, texts, ids, turns):
        seen["turns"] = turns
        return [0.0] * len(texts)

    reward.reads_turns = True
    prompts = [
        tok(f"<|user|>q{i}<|end|><|assistant|>", add_special_tokens=False)["input_ids"] for i in range(2)
    ]
    params = SamplingParams(max_new_tokens=12, temperature=1.0, stop_token_ids=end_of_turn_ids(tok, policy))
    messages = [[{"role": "user", "content": f"q{i}"}] for i in range(2)]
    collect(
        policy,
        tok,
        prompts,
        messages,
        [0, 1],
        reward,
        params,
        pad_id=tok.pad_token_id,
        device="cpu",
        tools=WORLD_TOOLS,
        max_tool_turns=2,
    )
    assert [[m["role"] for m in t] for t in seen["turns"]] == [["assistant", "tool"], []]
    assert json.loads(seen["turns"][0][1]["content"]) == {"result": 12}
