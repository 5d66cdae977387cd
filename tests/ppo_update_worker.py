"""One PPO update on a fixed synthetic rollout, run by tests/test_distributed.py under torchrun with 1 or 2 ranks.

Each rank measures its share of the episodes, `gather_rollout` rebuilds the global rollout and `update`
trains every minibatch under DDP; rank 0 writes the step's metrics and a fingerprint of the updated weights
to the JSON file named on the command line. Sampling is not involved (it is seeded per rank by design), so
equal outputs for 1 and 2 ranks mean the distributed update is the single-process update.

    python -m torch.distributed.run --nproc_per_node 2 tests/ppo_update_worker.py POLICY_DIR OUT.json
"""

from __future__ import annotations

import json
import sys

import torch

from rlhfkit.models import load_causal_lm
from rlhfkit.ppo import distributed as ranks
from rlhfkit.ppo.advantages import shape_scores
from rlhfkit.ppo.config import PPOConfig, PPOLoopConfig
from rlhfkit.ppo.rollout import Rollout, measure, pad_episodes
from rlhfkit.ppo.trainer import build_value
from rlhfkit.ppo.update import Learner, update
from rlhfkit.train.distributed import finish_distributed, init_distributed
from rlhfkit.train.loop import make_optimizer


def synthetic_episodes(n: int, vocab: int) -> tuple[list[list[int]], list[list[int]], list[float]]:
    """Prompts and responses of varied lengths and their scores: the same on every rank (fixed seed)."""
    g = torch.Generator().manual_seed(123)
    prompts = [torch.randint(5, vocab, (int(torch.randint(3, 8, (1,), generator=g)),), generator=g).tolist()
               for _ in range(n)]  # fmt: skip
    responses = [torch.randint(5, vocab, (int(torch.randint(1, 9, (1,), generator=g)),), generator=g).tolist()
                 for _ in range(n)]  # fmt: skip
    scores = torch.randn(n, generator=g).tolist()
    return prompts, responses, scores


def main(policy_dir: str, out_path: str, advantage: str = "gae") -> None:
    device = torch.device("cpu")
    info = init_distributed(device)
    torch.manual_seed(0)
    # rloo also stops its epochs early (a low approx-KL limit): every rank must take that branch together.
    kw = (
        {"value_model": "head", "max_approx_kl": 0.0}
        if advantage == "gae"
        else {"value_model": "none", "samples_per_prompt": 2, "max_approx_kl": 0.01}
    )
    cfg = PPOConfig(policy=policy_dir, prompts="-", advantage=advantage, batch_size=8, minibatch_size=4,
                    epochs=2, beta=0.05, loop=PPOLoopConfig(lr=1e-2), **kw)  # fmt: skip
    policy = load_causal_lm(policy_dir)
    ref = load_causal_lm(policy_dir).eval().requires_grad_(False)
    value_module, value_fn = build_value(cfg, policy, device, has_rm=False)
    modules = torch.nn.ModuleDict({"policy": policy, **({"value": value_module} if value_module else {})})
    learner = Learner(
        forward=ranks.training_forward(modules, value_fn, cfg.temperature, False, info),
        optimizer=make_optimizer(modules, cfg.loop),
        params=[p for p in modules.parameters() if p.requires_grad],
        policy=policy,
        ptx_stream=None,
        info=info,
    )

    prompts, responses, scores = synthetic_episodes(cfg.batch_size, policy.config.vocab_size)
    mine = ranks.episode_share(list(range(cfg.batch_size)), info)
    sequences, prompt_lens, response_ids, mask = pad_episodes(
        [prompts[i] for i in mine], [responses[i] for i in mine], 0, device
    )
    rollout = Rollout(
        sequences=sequences, prompt_lens=prompt_lens, response_ids=response_ids, mask=mask,
        finished=torch.ones(len(mine), dtype=torch.bool), raw_scores=torch.tensor([scores[i] for i in mine]),
        texts=[str(i) for i in mine], prompt_index=mine,
    )  # fmt: skip
    measure(rollout, policy, ref, value_fn, cfg.temperature, chunk=3)
    rollout, _ = ranks.gather_rollout(rollout, 0, info)
    scores = shape_scores(
        rollout.raw_scores, rollout.finished, 0.0, 1.0, cfg.reward_clip, cfg.missing_eot_penalty
    )
    metrics = update(cfg, learner, rollout, scores, cfg.beta, 0)
    if info.is_main:
        params = {name: float(p.detach().double().sum()) for name, p in modules.named_parameters()}
        first = next(iter(modules.parameters())).detach().flatten()[:16].tolist()
        result = {"metrics": metrics, "param_sums": params, "first": first, "episodes": rollout.texts}
        with open(out_path, "w") as fh:
            json.dump(result, fh)
    finish_distributed(info)


if __name__ == "__main__":
    main(*sys.argv[1:])
