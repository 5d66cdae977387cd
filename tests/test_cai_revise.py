"""SL-CAI: the chain has N critique/revision steps built on each other, is recorded, and yields SFT chats."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from rlhfkit.artifacts import save_hf_checkpoint
from rlhfkit.cai import revise as revise_mod
from rlhfkit.cai.constitution import load_constitution
from rlhfkit.cai.prompts import critique_prompt, revision_prompt
from rlhfkit.cli import main
from rlhfkit.data.chats import load_chats
from rlhfkit.data.jsonl import read_jsonl, write_jsonl
from rlhfkit.generation import Completion, SamplingParams
from rlhfkit.models import build_model

PROMPTS = [
    {"id": "p0", "messages": [{"role": "user", "content": "Who bakes bread?"}], "category": "factual",
     "meta": {"task": "factual"}},
    {"id": "p1", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who sells soup?"}],
     "category": "persona"},
    {"id": "p2", "messages": [{"role": "user", "content": "Where is the boat?"}]},
]  # fmt: skip


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer_dir):
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    out = tmp_path_factory.mktemp("cai_policy")
    save_hf_checkpoint(build_model("micro", len(tok), 128, tok, seed=0), tok, out)
    return out


def _scripted_generate(calls: list):
    """A stand-in for `generate_chat` that records every request and answers with a traceable text."""

    def fake(model, tokenizer, chats, params, batch_size=64, **_):
        calls.append([c[-1]["content"] for c in chats])
        call = len(calls) - 1
        return [Completion([], [], "stop", text=f"call{call}-row{i}") for i in range(len(chats))]

    return fake


def test_chain_steps_use_the_current_response_critique_and_principle(monkeypatch):
    import rlhfkit.generation

    calls: list = []
    monkeypatch.setattr(rlhfkit.generation, "generate_chat", _scripted_generate(calls))
    rules = load_constitution()
    chains = revise_mod.revise_chains(
        None, None, PROMPTS, rules, revisions=3, params=SamplingParams(), seed=5
    )
    assert len(calls) == 1 + 2 * 3  # one batched call for responses, then critique + revision per step
    for i, chain in enumerate(chains):
        assert chain["id"] == PROMPTS[i]["id"] and chain["prompt"] == PROMPTS[i]["messages"]
        assert chain["initial"] == f"call0-row{i}"
        assert len(chain["steps"]) == 3
        schedule = revise_mod.principle_schedule(rules.principles, 3, 5, chain["id"])
        assert len({p.name for p in schedule}) == 3  # no repeats while principles remain
        current = chain["initial"]
        for k, step in enumerate(chain["steps"]):
            principle = schedule[k]
            assert step["principle"] == principle.name
            crit_call, rev_call = 1 + 2 * k, 2 + 2 * k
            # the critique request quotes the current response and the principle's critique request
            assert calls[crit_call][i] == critique_prompt(
                chain["prompt"], current, principle.critique_request
            )
            assert step["critique"] == f"call{crit_call}-row{i}"
            # the revision request quotes the same response plus that critique
            assert calls[rev_call][i] == revision_prompt(
                chain["prompt"], current, step["critique"], principle.revision_request
            )
            assert step["revision"] == f"call{rev_call}-row{i}" and not step["kept_previous"]
            current = step["revision"]
        assert chain["final"] == current == f"call6-row{i}"
    chats = revise_mod.sft_chats(chains, rules.name)
    assert [c["messages"][-1]["content"] for c in chats] == [c["final"] for c in chains]
    assert chats[0]["meta"]["task"] == "factual" and chats[0]["meta"]["cai"]["revisions"] == 3
    assert chats[1]["messages"][:-1] == PROMPTS[1]["messages"]


def test_empty_revision_keeps_the_previous_response(monkeypatch):
    import rlhfkit.generation

    def fake(model, tokenizer, chats, params, batch_size=64, **_):
        first = "Revision request" not in chats[0][-1]["content"]
        return [Completion([], [], "stop", text="draft" if first else "") for _ in chats]

    monkeypatch.setattr(rlhfkit.generation, "generate_chat", fake)
    chains = revise_mod.revise_chains(
        None, None, PROMPTS[:1], load_constitution(), revisions=2, params=SamplingParams()
    )
    assert chains[0]["final"] == "draft"
    assert all(s["kept_previous"] for s in chains[0]["steps"])


def test_revise_cli_writes_chains_and_valid_sft_chats(tmp_path, model_dir):
    prompts = tmp_path / "prompts.jsonl"
    write_jsonl(prompts, PROMPTS)
    out = tmp_path / "sl_cai.jsonl"
    argv = ["cai", "revise", "--model", str(model_dir), "--prompts", str(prompts), "--out", str(out),
            "--revisions", "2", "--max-new-tokens", "8", "--seed", "3"]  # fmt: skip
    assert main(argv) == 0
    chains_file = tmp_path / "sl_cai.chains.jsonl"
    chains = [rec for _, rec in read_jsonl(chains_file)]
    assert len(chains) == 3
    names = {p.name for p in load_constitution().principles}
    for chain in chains:
        assert len(chain["steps"]) == 2
        assert {s["principle"] for s in chain["steps"]} <= names
        assert set(chain["steps"][0]) == {"principle", "critique_request", "critique", "revision_request",
                                          "revision", "kept_previous"}  # fmt: skip
        expected = chain["initial"]
        for step in chain["steps"]:
            expected = expected if step["kept_previous"] else step["revision"]
        assert chain["final"] == expected
    chats = load_chats(out, require_assistant=True)
    assert len(chats) == sum(1 for c in chains if c["final"])
    by_id = {c["id"]: c for c in chains}
    for chat in chats:
        chain = by_id[chat["id"].removesuffix("-cai")]
        assert chat["messages"] == [*chain["prompt"], {"role": "assistant", "content": chain["final"]}]
    # same seed, same chains
    out2 = tmp_path / "again.jsonl"
    assert main([*argv[:7], str(out2), *argv[8:]]) == 0
    assert json.loads((tmp_path / "again.chains.jsonl").read_text().splitlines()[0]) == chains[0]


def test_critiques_use_their_own_sampling_params(monkeypatch):
    import rlhfkit.generation

    temperatures: list = []

    def fake(model, tokenizer, chats, params, batch_size=64, **_):
        temperatures.append((chats[0][-1]["content"].split("\n\n")[-1].split(":")[0], params.temperature))
        return [Completion([], [], "stop", text="text") for _ in chats]

    monkeypatch.setattr(rlhfkit.generation, "generate_chat", fake)
    revise_mod.revise_chains(
        None, None, PROMPTS[:1], load_constitution(), revisions=1,
        params=SamplingParams(temperature=0.7), critique_params=SamplingParams(temperature=0.0),
    )  # fmt: skip
    # the response and the revision are sampled; the critique, a verdict, is greedy
    assert [t for _, t in temperatures] == [0.7, 0.0, 0.7]
    assert temperatures[1][0] == "Critique request" and temperatures[2][0] == "Revision request"


def test_verifier_keeps_only_revisions_it_prefers(monkeypatch):
    import rlhfkit.generation
    from rlhfkit.cai.labelers import Choice

    def fake(model, tokenizer, chats, params, batch_size=64, **_):
        first = "Critique request" not in chats[0][-1]["content"]
        first = first and "Revision request" not in chats[0][-1]["content"]
        return [
            Completion([], [], "stop", text="draft" if first else f"better {i}") for i, _ in enumerate(chats)
        ]

    class Verifier:  # prefers the revision of row 0 in both orders, the original of row 1
        def __init__(self):
            self.asked = []

        def judge(self, texts):
            self.asked.extend(texts)
            return [Choice(prob_a=0.9 if ("(A) better 0" in t or "(B) better 1" in t) else 0.2, method="logprobs")
                    for t in texts]  # fmt: skip

    monkeypatch.setattr(rlhfkit.generation, "generate_chat", fake)
    verifier = Verifier()
    chains = revise_mod.revise_chains(
        None, None, PROMPTS[:2], load_constitution(), revisions=1, params=SamplingParams(), verifier=verifier
    )
    assert len(verifier.asked) == 4  # two questions (both orders) per revision
    step0, step1 = chains[0]["steps"][0], chains[1]["steps"][0]
    assert step0["verified"] == pytest.approx((0.9 + 1 - 0.2) / 2) and not step0["kept_previous"]
    assert step1["verified"] == pytest.approx((0.2 + 1 - 0.9) / 2) and step1["kept_previous"]
    assert chains[0]["final"] == "better 0" and chains[1]["final"] == "draft"


def test_critic_writes_critiques_and_revisions(monkeypatch):
    import rlhfkit.generation

    writers: list = []

    def fake(model, tokenizer, chats, params, batch_size=64, **_):
        writers.append((model, tokenizer))
        return [Completion([], [], "stop", text=f"{model} text") for _ in chats]

    monkeypatch.setattr(rlhfkit.generation, "generate_chat", fake)
    chains = revise_mod.revise_chains(
        "policy", "tok", PROMPTS[:1], load_constitution(), revisions=2, params=SamplingParams(),
        critic=("critic", "critic-tok"),
    )  # fmt: skip
    assert writers == [("policy", "tok")] + [("critic", "critic-tok")] * 4
    assert chains[0]["initial"] == "policy text" and chains[0]["final"] == "critic text"
