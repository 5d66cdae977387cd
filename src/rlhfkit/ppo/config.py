"""`PPOConfig` (and RLOO's and GRPO's defaults of it): what `rlhfkit ppo|rloo|grpo` and the pipeline set.

The shared loop's settings sit in `loop` (a `PPOLoopConfig`), flattened to `--lr`, `--seed`, ... like every
stage's; the loop settings PPO's own outer loop does not read get no flag. One precision option, `dtype`, as in
every training stage; the old `--bf16` switch still works and means `--dtype bfloat16`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from rlhfkit.errors import RlhfkitError
from rlhfkit.generation.int8_linear import QUANTIZE
from rlhfkit.lora import LoraOptions
from rlhfkit.train.loop import LoopConfig

VALUE_MODELS = ("auto", "critic", "head", "none")
ADVANTAGES = ("gae", "rloo", "grpo")
KL_PENALTIES = ("reward", "loss")


@dataclass
class PPOLoopConfig(LoopConfig):
    """The shared loop's settings as PPO's outer loop reads them: a PPO step is one rollout batch (`steps`,
    `save_every` and `warmup_steps` count them), the learning rate is constant after its linear warmup, and
    nothing is evaluated on the side (`sample_every` writes samples instead)."""

    UNUSED: ClassVar = ("max_steps", "min_lr_ratio", "beta1", "beta2", "eval_every", "log_every")

    lr: float = 5e-5  # constant after warmup (tiny models tolerate more than the 1e-6..3e-6 of 1B models)
    warmup_steps: int = 3  # optimizer steps of linear warmup
    weight_decay: float = 0.0  # AdamW weight decay
    grad_clip: float = 1.0  # clip the global gradient norm to this
    save_every: int = 10  # checkpoint every N steps (and at the end); a rerun resumes from it
    seed: int = 0  # seeds sampling, minibatch order and initialization
    shard: str = (
        "auto"  # under torchrun: auto or ddp (policy and critic under DDP; reference and RM replicated)
    )


@dataclass
class PPOConfig:
    DEPRECATED: ClassVar = {"bf16": ("dtype", "bfloat16")}  # --bf16 was the bf16 switch before --dtype

    policy: str = ""  # SFT checkpoint: the policy starts here and it is the frozen reference
    reward: str = ""  # reward model folder (AutoModelForSequenceClassification, num_labels=1); several,
    # comma-separated, for an ensemble (see --ensemble-penalty); or "verifier" (1 for the prompt's known answer,
    # else 0; "+format[=W]" adds W for any one answer, "+process[=W]" W times the share of the task's steps
    # its tool calls did: verifier+process)
    process_model: str = (
        ""  # a process reward model (`rlhfkit prm train`): with +process, its P(right) of the
    )
    # episode's weakest tool call replaces the world's step check (prompts then need no `meta.steps`)
    ensemble_penalty: float = 1.0  # with several reward models: reward = their mean - this * their std (each
    # model's scores divided by its own std first): less reward where the models disagree
    watch_reward: str = ""  # reward models (comma-separated) trained on the same labels but NOT optimized
    # against: their score of each step's responses is logged (watch_score), a stand-in for a gold judge
    stop_patience: int = (
        0  # with --watch-reward or --audit-prompts: stop when the watch score's (the audit win rate's)
    )
    # moving average has not reached a new best for this many steps, and keep the policy of its best step
    # (ppo/stop_rule.py); 0: only log
    audit_prompts: str = ""  # held-out demo-world prompts: every --audit-every steps simulated annotators
    # compare the policy's answers to the first --audit-size of them with the reference's (ppo/audit.py);
    # the stop rule then follows the policy's win rate. The --prompts file itself: its first --audit-size
    # prompts are held out of training
    audit_every: int = 5  # audit after every this many steps (and before the first)
    audit_size: int = 64  # pairs labelled per audit
    audit_smoothing: float = 0.5  # the stop rule's EMA weight of the past, per audit
    audit_keep: bool = False  # save the policy of every audit to out/audits/step-N (to pick another later)
    prompts: str = (
        ""  # prompts JSONL ({"messages": [...], "meta": ...}); a trailing assistant turn is dropped
    )
    out: str = (
        "runs/ppo"  # output folder: the policy (Hugging Face checkpoint), value model, metrics, samples
    )
    ref: str | None = None  # reference model (default: the policy checkpoint)
    value_model: str = "auto"  # "critic": separate model (init from value_init); "head": head on the policy;
    # "none": no value function (rloo, grpo); "auto": a critic for gae, none otherwise
    advantage: str = "gae"  # "gae" (PPO: critic + GAE), "rloo" (leave-one-out), "grpo" (group-normalized)
    samples_per_prompt: int = 1  # k responses to each prompt per rollout (rloo/grpo need >= 2)
    kl_penalty: str = (
        "reward"  # the KL leash: "reward" (-beta*KL in the return) or "loss" (beta*k3 in the loss)
    )
    value_init: str | None = None  # critic's starting checkpoint (default: the reward model, else the policy)
    steps: int = 100  # PPO steps (rollout batches)
    batch_size: int = 64  # episodes (responses) per rollout: batch_size / samples_per_prompt prompts
    epochs: int = 4  # passes over each rollout
    minibatch_size: int = 16  # episodes per gradient step
    group_by_length: bool = True  # minibatches of similar-length episodes (less padding); order still random
    max_new_tokens: int = 64  # response cap; longer responses are cut (and pay missing_eot_penalty); with
    # tools, the cap of each turn
    max_tool_turns: int = 0  # tool calls an episode may make (the demo world's lookup and calculator, run
    # between turns; their outputs are masked out of the loss, the KL and the advantages); 0: no tools
    temperature: float = 1.0  # sampling temperature (log-probs are taken at the same temperature)
    max_prompt_tokens: int = 192  # longer prompts lose their beginning
    beta: float = 0.05  # initial KL coefficient
    kl_target: float = 6.0  # adaptive KL target in nats per response; 0: beta stays fixed
    kl_horizon: int = 10_000  # adaptive controller horizon, in episodes
    gamma: float = 1.0  # discount per token in the return
    lam: float = 1.0  # every token sees the final score (the first pick the kind of answer); TRL: 0.95
    clip: float = 0.2  # policy ratio clip
    value_clip: float = 0.2  # value-prediction clip around the rollout's values
    vf_coef: float = 0.1  # weight of the value loss (value head on the policy)
    ent_coef: float = 0.0  # entropy bonus (entropy is always logged)
    whiten_advantages: bool = True  # normalize advantages to mean 0, std 1 per rollout
    normalize_reward: bool = True  # divide RM scores by their std (from the RM's rlhfkit.json, else step 1)
    reward_clip: float = 10.0  # clip normalized scores to +-this; 0: off
    missing_eot_penalty: float = 1.0  # subtracted from the score of responses cut off without end of turn
    max_approx_kl: float = 0.5  # stop this rollout's epochs when a minibatch's approx KL exceeds it; 0: off
    ptx_coef: float = 0.0  # PPO-ptx (InstructGPT): weight of a pretraining loss on ptx_data
    ptx_data: str | None = None  # corpus (.txt / JSONL {"text"} / folder) for PPO-ptx
    ptx_seq_len: int = 128  # tokens per PPO-ptx corpus window
    ptx_batch_size: int = 8  # corpus windows per minibatch
    gold_judge: bool = (
        True  # score responses with the demo world's gold judge when every prompt is a world task
    )
    rm_max_length: int | None = (
        None  # tokens the reward model reads per prompt + response (default: its training length)
    )
    sample_every: int = 10  # write responses to samples.jsonl (and show a few) every N steps; 0: never
    num_samples: int = 3  # responses shown on the console at each sampling
    generation_batch_size: int = 64  # sequences decoded together in a rollout
    generation_quantize: str = "none"  # int8: rollouts decode with weight-only int8 copies of the policy's
    # weights, made afresh for each rollout (CPU, Llama layout, no LoRA); the update and its log-probs are
    # computed as without it
    forward_batch_size: int = 16  # rows per no-grad forward (rollout measuring, RM scoring), longest first
    device: str = "auto"  # auto (CUDA when available), cpu or cuda
    dtype: str = "auto"  # compute dtype: auto (bf16 on a GPU that has it, else float32), float32, bfloat16,
    # float16; trained weights stay fp32 under a CUDA autocast; frozen models (reward, reference, a LoRA
    # run's base) are loaded in it
    gradient_checkpointing: bool = False  # recompute activations in the backward pass: less memory,
    # about a third slower
    lora: LoraOptions = field(default_factory=LoraOptions)  # LoRA policy: the reference is the same
    # weights with the adapters disabled (no second copy)
    critic_lora: bool = True  # with --lora-r: the critic trains LoRA adapters (and its whole head) too;
    # --no-critic-lora trains every critic weight (a second full model plus its AdamW state)
    loop: PPOLoopConfig = field(default_factory=PPOLoopConfig)


@dataclass
class RLOOConfig(PPOConfig):
    """`rlhfkit rloo`: PPO's loop without a critic; each response is compared with the other k - 1 to its prompt."""

    advantage: str = "rloo"
    samples_per_prompt: int = 4
    whiten_advantages: bool = False  # the leave-one-out baseline already centres them


@dataclass
class GRPOConfig(PPOConfig):
    """`rlhfkit grpo`: group-normalized advantages and the KL to the reference as a loss term (DeepSeekMath)."""

    advantage: str = "grpo"
    samples_per_prompt: int = 4
    kl_penalty: str = "loss"
    whiten_advantages: bool = False  # each group is already normalized


METHOD_NAMES = {"gae": "ppo", "rloo": "rloo", "grpo": "grpo"}


def check_config(cfg: PPOConfig, has_reward_fn: bool) -> None:
    """Bad options as one-line errors, before anything is loaded."""
    if not cfg.policy:
        raise RlhfkitError("--policy is required (the SFT checkpoint folder)")
    if not cfg.reward and not has_reward_fn:
        raise RlhfkitError("--reward is required (a reward model folder, or verifier)")
    if not cfg.prompts:
        raise RlhfkitError("--prompts is required (a prompts JSONL file)")
    for name, allowed in (
        ("generation_quantize", QUANTIZE),
        ("value_model", VALUE_MODELS),
        ("advantage", ADVANTAGES),
        ("kl_penalty", KL_PENALTIES),
    ):
        if getattr(cfg, name) not in allowed:
            raise RlhfkitError(
                f"--{name.replace('_', '-')}: expected one of {', '.join(allowed)}, got '{getattr(cfg, name)}'"
            )
    if cfg.stop_patience < 0 or (cfg.stop_patience > 0 and not (cfg.watch_reward or cfg.audit_prompts)):
        raise RlhfkitError(
            f"--stop-patience {cfg.stop_patience}: needs --watch-reward (reward models to watch) or "
            "--audit-prompts (prompts to audit) and must be >= 0"
        )
    if cfg.audit_prompts:
        if cfg.audit_every < 1 or cfg.audit_size < 1:
            raise RlhfkitError(
                f"--audit-every {cfg.audit_every}, --audit-size {cfg.audit_size}: expected integers >= 1"
            )
        if not 0 <= cfg.audit_smoothing < 1:
            raise RlhfkitError(f"--audit-smoothing: expected a number in [0, 1), got {cfg.audit_smoothing}")
        if cfg.max_tool_turns > 0:
            raise RlhfkitError("--audit-prompts: audits compare single answers; not with --max-tool-turns")
    if cfg.advantage != "gae" and cfg.samples_per_prompt < 2:
        raise RlhfkitError(
            f"--advantage {cfg.advantage} compares responses to the same prompt: --samples-per-prompt must be "
            f">= 2, got {cfg.samples_per_prompt}"
        )
    if cfg.advantage != "gae" and cfg.value_model in ("critic", "head"):
        raise RlhfkitError(
            f"--advantage {cfg.advantage} needs no value model: use --value-model none or auto"
        )
    if cfg.advantage == "gae" and cfg.value_model == "none":
        raise RlhfkitError("--advantage gae needs a value model (critic or head)")
    if cfg.samples_per_prompt < 1 or cfg.batch_size % cfg.samples_per_prompt:
        raise RlhfkitError(
            f"--batch-size {cfg.batch_size} must be a multiple of --samples-per-prompt {cfg.samples_per_prompt}"
        )
    for name in ("steps", "batch_size", "epochs", "minibatch_size", "max_new_tokens"):
        if getattr(cfg, name) < 1:
            raise RlhfkitError(
                f"--{name.replace('_', '-')}: expected an integer >= 1, got {getattr(cfg, name)}"
            )
    if cfg.max_tool_turns < 0:
        raise RlhfkitError(f"--max-tool-turns: expected an integer >= 0, got {cfg.max_tool_turns}")
    if "+process" in (cfg.reward or "") and cfg.max_tool_turns == 0:
        raise RlhfkitError(
            f"--reward {cfg.reward}: the process term reads tool calls; add --max-tool-turns N"
        )
    if cfg.process_model and "+process" not in (cfg.reward or ""):
        raise RlhfkitError(
            f"--process-model {cfg.process_model}: it scores the process term; use --reward verifier+process"
        )
    if cfg.temperature <= 0:
        raise RlhfkitError(f"--temperature: expected a number > 0 (PPO samples), got {cfg.temperature}")
    if cfg.ptx_coef > 0 and not cfg.ptx_data:
        raise RlhfkitError("--ptx-coef > 0 needs --ptx-data (a pretraining corpus)")
