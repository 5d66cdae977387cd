"""Audits: fresh on-policy comparisons judged by people, a stop signal that does not come from the labels.

The watch rule (`stop_rule.py`, reward models the policy never optimizes) failed on the demo world: every reward
model trained on the same rankings shares their blind spot, and approves of where PPO goes (docs/methods.md).
What a user has besides those labels is more judgments: every `--audit-every K` steps, the policy answers
`--audit-size N` held-out prompts, beside the reference's answers to the same prompts, and annotators say which
of each pair is better. The share of pairs the policy wins (a tie counts half) is the audit score, and the stop
rule (`--stop-patience`) follows its moving average.

- The annotators are the demo world's simulated pool (`world.annotators`: noisy, fond of longer answers and of
  the first of two, tiring), a stand-in for people labelling N pairs per audit; each pair is shown in a random
  order. So audits need demo-world prompts (their `meta`); with real people, `rlhfkit online` or the annotation
  app label samples of saved policies instead.
- The labelled pairs are written to `audit_labels.jsonl` in the shared comparison format: ordinary labels
  afterwards (for the next reward model). `audits.jsonl` has one line per audit.
- Logged beside the score, never read by the rule: how often the optimized reward model agrees with the
  annotators on the pairs (`audit_rm_agree`: its accuracy on fresh on-policy comparisons), and the demo world's
  answer key, the gold judge's win rate on the same pairs (`audit_gold_win`).
- Answers are sampled as the evaluation samples them (temperature 0.7), each audit with the same seed, so two
  audits differ by the policy, not by the dice; the reference answers once (`audit_reference.jsonl`, reused on
  resume) with another seed.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch

from rlhfkit.data.chats import load_prompts
from rlhfkit.errors import RlhfkitError
from rlhfkit.generation import SamplingParams, pad_id
from rlhfkit.ppo.rollout import RewardFn, sample_responses

AUDIT_TEMPERATURE = 0.7  # the evaluation's


def load_audit_prompts(path: str, size: int) -> list[dict]:
    """The first `size` prompts of `path`; each must be a demo-world task (the simulated annotators judge those)."""
    from rlhfkit.world.tasks import is_world_meta

    records = load_prompts(path)
    if len(records) < size:
        raise RlhfkitError(f"--audit-prompts {path}: {len(records)} prompts, fewer than --audit-size {size}")
    for line, record in enumerate(records[:size], 1):
        if not is_world_meta(record.get("meta")):
            raise RlhfkitError(
                f"--audit-prompts {path}, line {line}: field 'meta' is not a demo-world task; the simulated "
                "annotators judge demo-world prompts only"
            )
    return records[:size]


def _labels(records: list[dict], policy: list[str], reference: list[str], seed: int, step: int) -> list[dict]:
    """The annotators' verdict on each (policy, reference) pair, shown in a random order."""
    from rlhfkit.world.annotators import label_candidates

    order = random.Random(f"audit-order:{seed}:{step}")
    shown = []
    for i, (record, mine, theirs) in enumerate(zip(records, policy, reference)):
        first = order.random() < 0.5  # position bias falls on either side alike
        pair = [mine, theirs] if first else [theirs, mine]
        shown.append(
            {
                "id": f"audit-{step}-{record.get('id', i)}",
                "prompt": record["messages"],
                "completions": [[{"role": "assistant", "content": t}] for t in pair],
                "category": record.get("category", ""),
                "meta": {**(record.get("meta") or {}), "audit_step": step, "policy_index": 0 if first else 1},
            }
        )
    return label_candidates(shown, seed=seed, session=f":audit:{step}")


def _policy_share(label: dict) -> float:
    """1 if the annotator preferred the policy's answer, 0 if the reference's, 0.5 for a tie."""
    if label["ties"]:
        return 0.5
    return 1.0 if label["ranking"][0] == label["meta"]["policy_index"] else 0.0


def _share(mine: float, theirs: float) -> float:
    """The policy's share of one pair by a score: 1 if its answer scores higher, 0.5 for a tie."""
    return 1.0 if mine > theirs else 0.5 if mine == theirs else 0.0


@dataclass
class Audit:
    records: list[dict]  # the audit prompts
    every: int  # audit after every this many updates (and before the first)
    seed: int
    max_new_tokens: int
    out: Path
    prompt_ids: list[list[int]] = field(default_factory=list)  # rendered as PPO renders its prompts
    reference: list[str] | None = None  # the reference's answers, sampled once
    reference_scores: list[float] | None = None  # their reward-model and gold scores, computed once
    reference_gold: list[float] | None = None

    def due(self, done: int) -> bool:
        return done % self.every == 0

    def _sample(self, model, tokenizer, stop_ids, batch_size: int, seed: int) -> list[str]:
        params = SamplingParams(
            max_new_tokens=self.max_new_tokens,
            temperature=AUDIT_TEMPERATURE,
            stop_token_ids=stop_ids,
            seed=seed,
        )
        done = sample_responses(model, tokenizer, self.prompt_ids, params, pad_id(tokenizer), batch_size)
        return [(c.text or "").strip() for c in done]

    def prepare(self, ref, policy, tokenizer, stop_ids, batch_size: int) -> None:
        """The reference's answers: read back on resume, else sampled (`ref` None: the LoRA policy's adapters off)."""
        path = self.out / "audit_reference.jsonl"
        if path.exists():
            rows = [
                json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
            ]
            if [r["id"] for r in rows] == [r.get("id") for r in self.records]:
                self.reference = [r["response"] for r in rows]
                return
        seed = self.seed * 1_000_003 + 2
        if ref is None:
            with policy.disable_adapter():
                self.reference = self._sample(policy, tokenizer, stop_ids, batch_size, seed)
        else:
            self.reference = self._sample(ref, tokenizer, stop_ids, batch_size, seed)
        rows = [{"id": r.get("id"), "response": t} for r, t in zip(self.records, self.reference)]
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")

    def run(
        self, step: int, policy, tokenizer, stop_ids, batch_size: int, reward_fn: RewardFn
    ) -> tuple[dict, list[dict]]:
        """Audit the policy after `step` updates: (summary, the labelled pairs)."""
        from rlhfkit.world import judge_score

        texts = self._sample(policy, tokenizer, stop_ids, batch_size, self.seed * 1_000_003 + 1)
        labels = _labels(self.records, texts, self.reference, self.seed, step)
        wins = [_policy_share(label) for label in labels]
        prompts = [r["messages"] for r in self.records]

        def rm_scores(answers: list[str]) -> list[float]:
            with torch.no_grad():
                return [float(x) for x in reward_fn(prompts, answers, [[] for _ in answers])]

        def gold_scores(answers: list[str]) -> list[float]:
            return [judge_score(p, a, r.get("meta")).total for p, a, r in zip(prompts, answers, self.records)]

        if self.reference_scores is None:  # the reference's answers never change
            self.reference_scores, self.reference_gold = (
                rm_scores(self.reference),
                gold_scores(self.reference),
            )
        mine = rm_scores(texts)
        decided = [(_share(a, b), w) for a, b, w in zip(mine, self.reference_scores, wins) if w != 0.5]
        agree = [1.0 - abs(rm - w) for rm, w in decided]  # a reward-model tie agrees half
        gold = [_share(a, b) for a, b in zip(gold_scores(texts), self.reference_gold)]
        summary = {
            "step": step,
            "audit_win": sum(wins) / len(wins),
            "audit_rm_agree": sum(agree) / len(agree) if agree else 0.5,
            "audit_gold_win": sum(gold) / len(gold),
            "audit_length": sum(len(t.split()) for t in texts) / len(texts),
            "audit_seconds": round(sum(label["seconds"] for label in labels), 1),  # the annotators' time
        }
        return summary, labels

    def write(self, summary: dict, labels: list[dict]) -> None:
        """Append one audit's labelled pairs and its summary line."""
        with (self.out / "audit_labels.jsonl").open("a", encoding="utf-8") as fh:
            fh.writelines(json.dumps(label, ensure_ascii=False) + "\n" for label in labels)
        with (self.out / "audits.jsonl").open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(summary) + "\n")


def trim_audits(out: Path, keep_through: int) -> None:
    """Keep what audits of steps <= `keep_through` wrote (a fresh run: nothing), so a resume does not repeat them."""
    for name, step_of in (
        ("audits.jsonl", lambda r: r["step"]),
        ("audit_labels.jsonl", lambda r: r["meta"]["audit_step"]),
    ):
        path = out / name
        if path.exists():
            kept = [
                ln
                for ln in path.read_text(encoding="utf-8").splitlines()
                if ln.strip() and step_of(json.loads(ln)) <= keep_through
            ]
            path.write_text("".join(ln + "\n" for ln in kept), encoding="utf-8")
    if keep_through < 0:
        (out / "audit_reference.jsonl").unlink(missing_ok=True)
