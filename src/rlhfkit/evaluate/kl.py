"""KL of each evaluated model to the first one (`--model` order: list the original first), on the
evaluation's own samples.

    KL(pi || pi_0) = E_{y ~ pi(.|x)} [ log pi(y|x) - log pi_0(y|x) ]

estimated, per prompt x, by the one response y the model sampled there: its summed token log-probs under the
model (which the sampler returns: `Completion.logprobs`) minus those under the first model (one no-grad
forward of the first model over every other model's responses, through PPO's `token_logprobs`). Both are
taken with the logits divided by the sampling temperature, so at temperature T this is the KL between the two
temperature-T distributions, the one the samples come from (as PPO's KL penalty measures it); top-p
truncation is ignored, as in PPO. The mean over prompts is reported with its standard error, and per token.

It needs what makes it defined: sampling (greedy decoding has no distribution to compare, `--temperature 0`
gives none) and one tokenization (the prompts must render to the same token ids under both models'
tokenizers and chat templates, as they do for a policy and its SFT or base model).
"""

from __future__ import annotations

import math

import torch


def kl_to_first(generated: dict[str, dict], cfg) -> dict:
    """{"reference", "temperature", "models": {name: {"kl", "kl_stderr", "kl_per_token", "n"} or
    {"unavailable": why}}}. `generated[name]` holds `prompt_ids`, `token_ids` and `logprobs` per prompt."""
    names = list(generated)
    first = names[0]
    out: dict = {"reference": first, "temperature": cfg.temperature, "models": {first: _stats([0.0], 0)}}
    if cfg.temperature <= 0:
        why = "greedy decoding (--temperature 0) samples from no distribution"
        out["models"].update({name: {"unavailable": why} for name in names[1:]})
        return out
    todo = []
    for name in names[1:]:
        if generated[name]["prompt_ids"] != generated[first]["prompt_ids"]:
            why = (
                f"the prompts tokenize differently for '{name}' and '{first}' (another tokenizer or template)"
            )
            out["models"][name] = {"unavailable": why}
        else:
            todo.append(name)
    if not todo:
        return out
    from rlhfkit.generation.loading import load_for_generation, template_for
    from rlhfkit.generation.text import pad_id

    model, tokenizer = load_for_generation(
        cfg.models[first],
        device=cfg.device,
        dtype=cfg.dtype,
        chat_template=template_for(first, cfg.chat_template),
    )
    pad = pad_id(tokenizer)
    for name in todo:
        g = generated[name]
        ref = reference_logprobs(model, g["prompt_ids"], g["token_ids"], cfg.temperature, cfg.batch_size, pad)
        diffs = [sum(own) - r for own, r in zip(g["logprobs"], ref)]
        out["models"][name] = _stats(diffs, sum(len(t) for t in g["token_ids"]))
    return out


@torch.no_grad()
def reference_logprobs(
    model,
    prompt_ids: list[list[int]],
    response_ids: list[list[int]],
    temperature: float,
    batch_size: int,
    pad: int,
) -> list[float]:
    """Summed log-probs of each response under `model` at `temperature`, in batches of similar length."""
    from rlhfkit.ppo.rollout import pad_episodes, token_logprobs

    device = next(model.parameters()).device
    out = [0.0] * len(prompt_ids)
    order = sorted(
        (i for i in range(len(prompt_ids)) if response_ids[i]),
        key=lambda i: len(prompt_ids[i]) + len(response_ids[i]),
    )
    for start in range(0, len(order), max(1, batch_size)):
        idx = order[start : start + batch_size]
        sequences, prompt_lens, responses, mask = pad_episodes(
            [prompt_ids[i] for i in idx], [response_ids[i] for i in idx], pad, device
        )
        batch = {"sequences": sequences, "prompt_lens": prompt_lens, "response_ids": responses, "mask": mask}
        logp = token_logprobs(model, batch, temperature)[0]
        for i, total in zip(idx, (logp * mask).sum(-1).double().cpu().tolist()):
            out[i] = total
    return out


def _stats(diffs: list[float], tokens: int) -> dict:
    n = len(diffs)
    mean = sum(diffs) / n
    var = sum((d - mean) ** 2 for d in diffs) / (n - 1) if n > 1 else 0.0
    return {
        "kl": round(mean, 6),
        "kl_stderr": round(math.sqrt(var / n), 6),
        "kl_per_token": round(sum(diffs) / tokens, 6) if tokens else 0.0,
        "n": n,
    }
