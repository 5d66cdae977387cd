"""Rejection-sampling fine-tuning: best-of-n by the reward model, then SFT on the winners.

Best-of-n at inference time is the simplest use of a reward model and a strong one (its KL to the sampler is
at most log n - (n - 1) / n), but it costs n samples per answer. Rejection-sampling fine-tuning (Touvron et
al. 2023, "Llama 2", section 3.2.3; also RAFT and ReST) distills it into the policy: for each prompt sample
n responses, keep the one the reward model scores highest, and fine-tune on those winners with the ordinary
SFT loss. Repeating it (`rounds`) samples each round from the policy the previous round produced.

One round, in `out/rounds/<r>/`:

1. `samples.jsonl`: n responses to each of `prompts_per_round` prompts (a seeded draw per round), every
   response with its reward-model score and finish reason (kept for audit);
2. `winners.jsonl`: the best finished response of each prompt as a chat (`{"messages": [...]}`), only where it
   scores at least `min_score` (unfinished responses never win: the cut-off would be taught as an answer);
3. the policy: `rlhfkit sft` on the winners, starting from the previous round's policy. The last round writes
   straight into `out`, so `out` is the final Hugging Face checkpoint.

`objective = "dpo"` uses the same samples differently: the reward model's best and worst finished response of
each prompt become a preference pair (`pairs.jsonl`), and the update is DPO with the starting policy as the
reference: on-policy pairs labelled by the RM instead of off-policy pairs labelled by people (as in RSO and
the iterative DPO recipes).

Every step is resumable: a round whose files exist is not sampled again, and SFT continues from its checkpoint.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from rlhfkit.artifacts import read_manifest, write_manifest
from rlhfkit.config import require, require_at_least
from rlhfkit.data.jsonl import read_jsonl, write_jsonl
from rlhfkit.errors import RlhfkitError
from rlhfkit.generation.int8_linear import require_quantize
from rlhfkit.lora import LoraOptions
from rlhfkit.reward.judge_mark import refuse_judge
from rlhfkit.train.loop import LoopConfig


@dataclass
class RSConfig:
    policy: str = ""  # starting policy (the SFT checkpoint)
    reward: str = ""  # reward model folder that picks the winners
    prompts: str = ""  # prompts JSONL ({"messages": [...]}); a trailing assistant turn is dropped
    out: str = "runs/rs"  # the final policy; rounds/<r>/ hold each round's samples, winners and policy
    n: int = 8  # responses sampled per prompt; the reward model keeps the best
    rounds: int = 1  # sample -> pick -> fine-tune, each round from the previous round's policy
    prompts_per_round: int = 0  # prompts sampled each round (a seeded draw); 0: all
    temperature: float = 0.7  # sampling temperature; 0.7, the temperature the model answers at: winners of
    # T=1 samples taught noisier answers (docs/methods.md)
    max_new_tokens: int = 128  # response cap; a response cut off here is never kept
    min_score: float | None = None  # keep a winner only if its reward-model score is at least this
    keep_unfinished: bool = False  # let a response cut off at max_new_tokens win (for untrained test models)
    generation_batch_size: int = 64  # sequences decoded together
    generation_quantize: str = "none"  # int8: sample through weight-only int8 copies of the policy's weights
    # (CPU, Llama layout; `rlhfkit generate --quantize`); fine-tuning stays fp32
    rm_max_length: int | None = (
        None  # tokens the RM reads per prompt + response (default: its training length)
    )
    objective: str = (
        "sft"  # "sft": fine-tune on the winners; "dpo": DPO on each prompt's best vs worst sample
    )
    dpo_beta: float = 0.1  # objective dpo: the KL leash to the starting policy
    dpo_sft_coef: float = 1.0  # objective dpo: weight of the chosen responses' SFT loss (see `rlhfkit dpo`)
    sft_epochs: float = 1.0  # passes over each round's winners (or pairs)
    sft_batch_size: int = 32  # chats per optimizer step
    sft_max_len: int = 256  # tokens per chat in fine-tuning
    device: str = "auto"  # "auto" (CUDA when available), "cpu" or "cuda[:N]"
    dtype: str = "auto"  # compute dtype: auto (bf16 on a GPU that has it, else float32), float32, bfloat16,
    # float16; sampling and the reward model run in it, fine-tuning keeps fp32 weights under a CUDA autocast
    gradient_checkpointing: bool = False  # fine-tuning recomputes activations in the backward pass
    lora: LoraOptions = field(default_factory=LoraOptions)  # each round's fine-tuning trains LoRA adapters
    # LoopConfig's own values (lr 1e-3). It said lr 1e-4, warmup 5, no decay until 2026-12-05, but the config
    # builder ignored nested defaults, so every rejection-sampling run measured (docs/methods.md) used these.
    loop: LoopConfig = field(default_factory=LoopConfig)


def _check(cfg: RSConfig) -> None:
    require(cfg, policy="the SFT checkpoint", reward="a reward model", prompts="prompts")
    require_at_least(cfg, 1, "n", "rounds", "max_new_tokens")
    if cfg.objective not in ("sft", "dpo"):
        raise RlhfkitError(f"--objective: expected sft or dpo, got '{cfg.objective}'")
    if cfg.n < 2:
        raise RlhfkitError("--n: rejection sampling needs at least 2 responses per prompt to choose from")
    require_quantize(cfg.generation_quantize, "--generation-quantize")
    refuse_judge(cfg.reward)  # before any sampling: the scorer is loaded only after each round's samples


def run(cfg: RSConfig) -> Path:
    """Run (or resume) every round; return the final policy folder (`cfg.out`)."""
    from rlhfkit.data.chats import load_prompts

    _check(cfg)
    out = Path(cfg.out)
    records = load_prompts(cfg.prompts)
    policy = cfg.policy
    history = []
    for r in range(cfg.rounds):
        round_dir = out / "rounds" / str(r)
        round_dir.mkdir(parents=True, exist_ok=True)
        chosen = _draw_prompts(len(records), cfg.prompts_per_round, cfg.loop.seed, r)
        if not (round_dir / "winners.jsonl").exists():
            _sample_and_pick(
                cfg, policy, [records[i] for i in chosen], round_dir, seed=cfg.loop.seed * 1000 + r
            )
        stats = json.loads((round_dir / "round.json").read_text())
        target = out if r == cfg.rounds - 1 else round_dir / "policy"
        if cfg.objective == "dpo":
            _dpo(cfg, policy, round_dir / "pairs.jsonl", target)
        else:
            _finetune(cfg, policy, round_dir / "winners.jsonl", target)
        print(
            f"rs round {r + 1}/{cfg.rounds}: {stats['winners']} winners of {stats['prompts']} prompts, "
            f"mean reward {stats['mean_score']:+.3f} -> best-of-{cfg.n} {stats['mean_winner_score']:+.3f}"
        )
        history.append(stats)
        policy = str(target)
    sft_metrics = read_manifest(out).get("metrics", {})
    write_manifest(
        out,
        stage="rs",
        config=cfg,
        seed=cfg.loop.seed,
        parent=cfg.policy,
        metrics={
            **{f"sft_{k}": v for k, v in sft_metrics.items() if isinstance(v, int | float)},
            "mean_winner_score": history[-1]["mean_winner_score"],
            "mean_score": history[-1]["mean_score"],
        },
        extra={"reward_model": cfg.reward, "rounds": history},
    )
    return out


def _draw_prompts(n_records: int, per_round: int, seed: int, round_index: int) -> list[int]:
    if per_round <= 0 or per_round >= n_records:
        return list(range(n_records))
    return sorted(random.Random(f"rs:{seed}:{round_index}").sample(range(n_records), per_round))


def _sample_and_pick(cfg: RSConfig, policy: str, records: list[dict], round_dir: Path, seed: int) -> None:
    """Write samples.jsonl, winners.jsonl (last, atomically: it marks the round's sampling as done) and round.json."""
    from rlhfkit.device import pick_device
    from rlhfkit.generation import SamplingParams, generate_chat
    from rlhfkit.generation.engine import check_batch_quantize
    from rlhfkit.lora import load_frozen_lm
    from rlhfkit.reward.model import load_scorer, score_conversations
    from rlhfkit.tokenizer import load_tokenizer
    from rlhfkit.train.precision import Precision

    device = pick_device(cfg.device)
    precision = Precision.of(device, cfg.dtype)
    dtype = precision.dtype
    model = load_frozen_lm(policy, device, dtype)  # a previous LoRA round's adapters are merged in
    check_batch_quantize(model, cfg.generation_quantize, "--generation-quantize")
    tokenizer = load_tokenizer(policy)
    chats = [r["messages"] for r in records for _ in range(cfg.n)]  # prompt-major: n in a row
    params = SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, seed=seed)
    print(f"rs: sampling {cfg.n} responses to each of {len(records)} prompts from {policy}")
    completions = generate_chat(
        model,
        tokenizer,
        chats,
        params,
        batch_size=cfg.generation_batch_size,
        quantize=cfg.generation_quantize,
    )
    del model
    rm, rm_tokenizer, rm_length = load_scorer(
        cfg.reward, device, cfg.rm_max_length, dtype=dtype, optimize=True
    )
    items = [(chat, [{"role": "assistant", "content": c.text}]) for chat, c in zip(chats, completions)]
    bf16 = precision.say_scorer()  # a CPU with native bf16 matmuls: 2.5x (MiniLM)
    scores = score_conversations(rm, rm_tokenizer, items, rm_length, batch_size=32, bf16=bf16)
    samples, winners, winner_scores, pairs = [], [], [], []
    for i, record in enumerate(records):
        group = range(i * cfg.n, (i + 1) * cfg.n)
        finished = [
            j
            for j in group
            if (cfg.keep_unfinished or completions[j].finish_reason == "stop") and completions[j].text.strip()
        ]
        samples.append(
            {
                "id": record.get("id"),
                "prompt": record["messages"],
                "responses": [completions[j].text for j in group],
                "scores": [scores[j] for j in group],
                "finished": [completions[j].finish_reason == "stop" for j in group],
            }
        )
        if not finished:
            continue
        best = max(finished, key=lambda j: scores[j])
        worst = min(finished, key=lambda j: scores[j])
        if scores[best] > scores[worst]:
            pairs.append(
                {
                    "id": f"{record.get('id', i)}-pair",
                    "prompt": record["messages"],
                    "chosen": [{"role": "assistant", "content": completions[best].text}],
                    "rejected": [{"role": "assistant", "content": completions[worst].text}],
                    "category": record.get("category", ""),
                }
            )
        if cfg.min_score is not None and scores[best] < cfg.min_score:
            continue
        winners.append(
            {
                "id": f"{record.get('id', i)}-rs",
                "messages": [*record["messages"], {"role": "assistant", "content": completions[best].text}],
                "category": record.get("category", ""),
                "reward": scores[best],
            }
        )
        winner_scores.append(scores[best])
    if not winners:
        raise RlhfkitError(
            f"{round_dir}: no response finished (or reached --min-score); nothing to fine-tune on"
        )
    write_jsonl(round_dir / "samples.jsonl", samples)
    write_jsonl(round_dir / "pairs.jsonl", pairs)
    stats = {
        "prompts": len(records),
        "winners": len(winners),
        "mean_score": sum(scores) / len(scores),
        "mean_winner_score": sum(winner_scores) / len(winner_scores),
        "finished": sum(c.finish_reason == "stop" for c in completions) / len(completions),
    }
    (round_dir / "round.json").write_text(json.dumps(stats, indent=2) + "\n")
    tmp = round_dir / "winners.jsonl.tmp"
    write_jsonl(tmp, winners)
    tmp.replace(round_dir / "winners.jsonl")


def _dpo(cfg: RSConfig, policy: str, pairs: Path, out: Path) -> None:
    from rlhfkit.dpo.trainer import DPOConfig, DPOLoopConfig
    from rlhfkit.dpo.trainer import run as dpo_run

    loop = DPOLoopConfig(**{**vars(cfg.loop), "min_lr_ratio": DPOLoopConfig.min_lr_ratio})
    dpo_run(
        DPOConfig(
            policy=policy,
            ref=cfg.policy,
            data=str(pairs),
            out=str(out),
            beta=cfg.dpo_beta,
            sft_coef=cfg.dpo_sft_coef,
            epochs=cfg.sft_epochs,
            max_length=cfg.sft_max_len + cfg.max_new_tokens,
            device=cfg.device,
            dtype=cfg.dtype,
            gradient_checkpointing=cfg.gradient_checkpointing,
            lora=cfg.lora,
            loop=loop,
        )
    )


def _finetune(cfg: RSConfig, policy: str, winners: Path, out: Path) -> None:
    from rlhfkit.train.sft import SFTConfig
    from rlhfkit.train.sft import run as sft_run

    n = sum(1 for _ in read_jsonl(winners))
    sft_run(
        SFTConfig(
            model=policy,
            data=str(winners),
            out=str(out),
            max_len=cfg.sft_max_len,
            batch_size=cfg.sft_batch_size,
            micro_batch_size=cfg.sft_batch_size,
            epochs=cfg.sft_epochs,
            val_fraction=min(0.05, 32 / max(n, 1)),
            device=cfg.device,
            dtype=cfg.dtype,
            gradient_checkpointing=cfg.gradient_checkpointing,
            lora=cfg.lora,
            loop=cfg.loop,
        )
    )
