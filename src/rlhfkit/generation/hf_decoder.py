"""The general decoder: any Hugging Face causal LM, driven step by step through its own forward and cache.

Used for models the lean Llama path does not cover (other architectures, dynamic RoPE). It is what
`transformers` `generate` does minus its per-step logits-processor and stopping-criteria machinery, so it
is about as fast as `generate`, and exactly as correct as the model's own forward.
"""

from __future__ import annotations

import inspect

import torch


class HFDecoder:
    """Same interface as `LeanLlama`: `prefill`, then `step` per token, `keep` to drop finished rows."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        # A PEFT wrapper's forward passes its **kwargs to the wrapped model: read what that one accepts (without
        # position_ids, left-padded rows would get positions counted from the padding).
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        accepted = set(inspect.signature(inner.forward).parameters)
        # transformers 5 renamed `past_key_values` to `cache`; accept either spelling.
        self.cache_arg = "cache" if "cache" in accepted else "past_key_values"
        self.takes_positions = "position_ids" in accepted
        self.takes_logits_to_keep = "logits_to_keep" in accepted
        self.device = next(model.parameters()).device

    def prefill(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int
    ) -> torch.Tensor:
        self.attention_mask = attention_mask.long()
        positions = (self.attention_mask.cumsum(-1) - 1).clamp(min=0)
        self.next_position = self.attention_mask.sum(-1)
        self.cache = None
        return self._forward(input_ids, positions)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        ones = self.attention_mask.new_ones(self.attention_mask.shape[0], 1)
        self.attention_mask = torch.cat([self.attention_mask, ones], dim=1)
        logits = self._forward(tokens[:, None], self.next_position[:, None])
        self.next_position = self.next_position + 1
        return logits

    def keep(self, rows: torch.Tensor) -> bool:
        select = getattr(self.cache, "batch_select_indices", None)
        if select is None:
            return False
        select(rows)
        self.attention_mask = self.attention_mask.index_select(0, rows)
        self.next_position = self.next_position.index_select(0, rows)
        return True

    def _forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        kwargs = {"input_ids": input_ids, "attention_mask": self.attention_mask, "use_cache": True}
        if self.cache is not None:
            kwargs[self.cache_arg] = self.cache
        if self.takes_positions:
            kwargs["position_ids"] = positions
        if self.takes_logits_to_keep:
            kwargs["logits_to_keep"] = 1
        out = self.model(**kwargs)
        cache = getattr(out, "cache", None)
        self.cache = cache if cache is not None else getattr(out, "past_key_values", None)
        return out.logits[:, -1].float()
