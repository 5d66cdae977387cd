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
    if generated[first].get("best_of", 1) > 1:
        why = f"'{first}' answers as best-of-n, which has no log-probs to compare against: list another first"
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
    prompts = generated[first]["prompt_ids"]
    responses = {name: generated[name]["token_ids"] for name in todo}
    ref = reference_logprobs(model, prompts, responses, cfg.temperature, cfg.batch_size, pad_id(tokenizer))
    for name in todo:
        g = generated[name]
        diffs = [sum(own) - r for own, r in zip(g["logprobs"], ref[name])]
        tokens = sum(len(t) for t in g["token_ids"])
        out["models"][name] = _stats(diffs, tokens)
        if g.get("best_of", 1) > 1:  # best-of-n has no log-probs of its own: bound its part, say so
            out["models"][name] = _best_of_bound(out["models"][name], g["best_of"], tokens)
    return out


def _best_of_bound(sampled: dict, n: int, tokens: int) -> dict:
    """KL(best-of-n || first) = E[log bo_n - log sampler] + E[log sampler - log first], both over the picked
    answers. The second is measured like any model's; the first is at most log n - (n - 1) / n
    (`generation.best_of.kl_bound`), so their sum is an upper bound."""
    from rlhfkit.generation.best_of import kl_bound

    kl = sampled["kl"] + kl_bound(n)
    return {
        **sampled,
        "kl": round(kl, 6),
        "kl_per_token": round(kl * sampled["n"] / tokens, 6) if tokens else 0.0,
        "upper_bound": True,
        "kl_sampler_on_picked": sampled["kl"],
        "best_of_bound": round(kl_bound(n), 6),
    }


@torch.no_grad()
def reference_logprobs(
    model,
    prompt_ids: list[list[int]],
    responses: dict[str, list[list[int]]],
    temperature: float,
    batch_size: int,
    pad: int,
) -> dict[str, list[float]]:
    """{model name: summed log-probs of its response to each prompt under `model` at `temperature`} (0 for an
    empty response), in batches of `batch_size` rows, longest prompts first.

    Every model answered the same prompts, so the responses to one prompt are scored side by side over their
    common prompt, computed once where the lean forward applies (`train.shared_prefix`): the SmolLM2
    recipe's 200 HH-RLHF prompts average 126 tokens (up to 880) against responses of at most 128, and three
    policies answer each. Elsewhere each response is its own row."""
    from rlhfkit.train.chat_tokens import IGNORE
    from rlhfkit.train.sft import collate
    from rlhfkit.train.shared_prefix import shared_prefix_logprobs

    device = next(model.parameters()).device
    names = list(responses)
    out = {name: [0.0] * len(prompt_ids) for name in names}
    order = sorted(range(len(prompt_ids)), key=lambda i: -len(prompt_ids[i]))
    cells = [(i, name) for i in order for name in names if responses[name][i]]
    for chunk in _whole_groups(cells, max(1, batch_size)):
        prompts = [prompt_ids[i] for i, _ in chunk]
        answers = [responses[name][i] for i, name in chunk]
        rows = [(p + a, [IGNORE] * len(p) + a) for p, a in zip(prompts, answers)]
        batch = collate(rows, pad, device)
        totals = shared_prefix_logprobs(model, batch, [i for i, _ in chunk], temperature)
        if totals is None:
            totals = _row_logprobs(model, prompts, answers, temperature, pad, device)
        for (i, name), total in zip(chunk, totals.double().cpu().tolist()):
            out[name][i] = total
    return out


def _whole_groups(cells: list[tuple[int, str]], size: int) -> list[list[tuple[int, str]]]:
    """`cells` (prompt, model) cut into chunks of about `size`, never splitting one prompt's cells."""
    chunks: list[list[tuple[int, str]]] = []
    for cell in cells:
        if chunks and (len(chunks[-1]) < size or chunks[-1][-1][0] == cell[0]):
            chunks[-1].append(cell)
        else:
            chunks.append([cell])
    return chunks


def _row_logprobs(model, prompts, answers, temperature: float, pad: int, device) -> torch.Tensor:
    """[rows] summed log-probs of each answer after its prompt, one row each (any causal LM)."""
    from rlhfkit.ppo.rollout import pad_episodes, token_logprobs

    sequences, prompt_lens, response_ids, mask = pad_episodes(prompts, answers, pad, device)
    batch = {"sequences": sequences, "prompt_lens": prompt_lens, "response_ids": response_ids, "mask": mask}
    return (token_logprobs(model, batch, temperature)[0] * mask).sum(-1)


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
