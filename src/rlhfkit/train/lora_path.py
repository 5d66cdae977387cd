"""The lean training forward's projections: a (frozen or trained) weight plus peft's LoRA adapters as a
low-rank side path of the same matmul, `y = x W^T + b + sum_adapters s * (x A^T) B^T`.

Why: peft wraps each adapted `nn.Linear` in a `lora.Linear` whose forward calls the base layer and then the
adapters, one small module call each. The lean forward (`train.lean_forward`) instead fuses q/k/v and
gate/up into one matmul each; here the adapters of those layers are fused too: their A matrices stacked into
one `[sum r, in]` down-projection and their B matrices (times the scaling) into one block-diagonal
`[sum out, sum r]` up-projection, so a fused q/k/v costs one big matmul plus two thin ones. The frozen
weights take no weight gradient (autograd never asks for it: `requires_grad` is False), and may be stored in
bf16 (`train.precision`): `train.fast_linear` then multiplies in bf16 with fp32 accumulation and returns fp32.
Over a frozen base the side path and the frozen product are one autograd node (`fast_linear.frozen_lora`:
its thin matmuls in the base's dtype, the sums in fp32); over a trained base the side path runs in fp32.

`projection(modules)` returns None for anything this does not reproduce exactly (DoRA and other variants,
adapter biases, dropout while training, merged or transposed weights, other wrappers); the lean forward then
keeps the model's own forward. Numerics equal peft's up to float summation order (tests/test_lora_path.py).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch

from rlhfkit.train.fast_linear import frozen_lora, linear


@dataclass
class Projection:
    weight: torch.Tensor  # [out, in]: the base weights of the fused layers, stacked
    bias: torch.Tensor | None  # [out]
    down: torch.Tensor | None  # [R, in]: every active adapter's A, stacked (None: no adapters)
    up: torch.Tensor | None  # [out, R]: their B times the scaling, block-diagonal

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.down is None:
            return linear(x, self.weight, self.bias)
        if not self.weight.requires_grad and x.dtype == torch.float32:
            out = frozen_lora(x, self.weight, self.bias, self.down, self.up)
            if out is not None:
                return out
        return linear(x, self.weight, self.bias) + linear(linear(x, self.down), self.up)


def fusable(modules) -> bool:
    """Whether `projection(modules)` reproduces these layers (without building it)."""
    return all(_parts(m) is not None for m in modules)


def projection(modules) -> Projection | None:
    """The fused projection of `modules` (plain `nn.Linear` or peft `lora.Linear` layers that read the same
    input), or None when one of them is something the side path does not reproduce."""
    bases, adapters = [], []
    for module in modules:
        parts = _parts(module)
        if parts is None:
            return None
        bases.append(parts[0])
        adapters.append(parts[1])
    weight = _stacked_weight(bases)
    bias = None if bases[0].bias is None else _cat([b.bias for b in bases])
    if not any(adapters):
        return Projection(weight, bias, None, None)
    down = torch.cat([a for pairs in adapters for a, _ in pairs])
    # Each layer's outputs read only its own adapters' ranks: a block per layer (zeros for a plain one).
    blocks = [
        torch.cat([b for _, b in pairs], dim=1) if pairs else base.weight.new_zeros(base.out_features, 0)
        for base, pairs in zip(bases, adapters, strict=True)
    ]
    up = blocks[0] if len(blocks) == 1 else torch.block_diag(*blocks)
    return Projection(weight, bias, down, up)


def _cat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors)


# Frozen stacks, kept between steps: first layer -> (what they were built from, stacked weight).
_FROZEN_STACKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _stacked_weight(bases: list[torch.nn.Linear]) -> torch.Tensor:
    """The layers' weights as one matrix. Trained weights are concatenated inside autograd on every call
    (their gradients flow back to each); frozen ones once, and again only when a weight is replaced or
    changed in place (its storage or version counter moves), instead of copying them on every step."""
    weights = [b.weight for b in bases]
    if len(weights) == 1 or any(w.requires_grad for w in weights):
        return _cat(weights)
    key = tuple((id(w), w.data_ptr(), w._version, w.dtype) for w in weights)
    cached = _FROZEN_STACKS.get(bases[0])
    if cached is None or cached[0] != key:
        with torch.inference_mode(False):  # built under a rollout's inference mode, saved by a later backward
            cached = (key, torch.cat(weights))
        _FROZEN_STACKS[bases[0]] = cached
    return cached[1]


def _parts(module: torch.nn.Module):
    """(base nn.Linear, [(A [r, in], s * B [out, r]) per active adapter]) of a plain or LoRA linear layer."""
    if type(module) is torch.nn.Linear:
        return module, []
    lora_linear = _peft_lora_linear()
    if lora_linear is None or type(module) is not lora_linear:
        return None
    base = module.base_layer
    if type(base) is not torch.nn.Linear or module.merged or module.fan_in_fan_out:
        return None
    if module.disable_adapters:
        return base, []
    pairs = []
    for name in module.active_adapters:
        if name not in module.lora_A:
            continue  # peft skips an active adapter this layer does not have
        dropout = module.lora_dropout[name]
        if name in module.lora_variant or module.lora_bias.get(name, False):
            return None
        if not isinstance(dropout, torch.nn.Identity) and (dropout.p > 0 and dropout.training):
            return None
        a, b = module.lora_A[name], module.lora_B[name]
        if type(a) is not torch.nn.Linear or type(b) is not torch.nn.Linear or b.bias is not None:
            return None
        if a.weight.dtype != torch.float32 or b.weight.dtype != torch.float32:
            return None
        pairs.append((a.weight, b.weight * module.scaling[name]))
    return base, pairs


def _peft_lora_linear():
    try:
        from peft.tuners.lora.layer import Linear
    except ImportError:  # peft missing: no module can be a LoRA layer
        return None
    return Linear
