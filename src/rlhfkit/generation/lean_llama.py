"""A lean decode-only twin of a Hugging Face `LlamaForCausalLM`, built from its weights for one generation call.

Why (profiled on the `small` preset, batch 64, CPU): a decode step is matmuls on a 64-row activation,
attention rereading the KV cache, and many small ops. transformers' forward adds a growing cache that is
re-concatenated (copied) every step, mask construction, separate q/k/v and gate/up projections, and
PyTorch's default GEMM, which is slow for such shapes on this CPU. This module does the same math with
fewer, faster ops:

- q/k/v are one matmul and gate/up are one matmul (the weights are concatenated once per call);
- the KV cache is preallocated (see `kv_cache`), so a step writes one position in place; with left padding
  every row writes the same position;
- RoPE cos/sin come from the model's own rotary module, evaluated once for all positions (any non-dynamic
  RoPE type is therefore reproduced exactly);
- decode attention (one query per row) is two fused weighted sums of cache rows (`kv_cache`), not 512
  tiny matmuls per layer; grouped-query attention needs no `repeat_kv` copy;
- the residual additions ride on the output and down projections' matmuls (oneDNN epilogue);
- the last layer runs its output projection and MLP on the last prompt position only (the only one whose
  output is used), and a prefill runs in slices of ~256 tokens' worth of rows without their shared left
  padding, so its activations stay in cache and in the allocator's warm memory (64 x 32 tokens of `small`:
  138 -> 108 ms, same logits);
- only the last position goes through the LM head;
- matmuls use oneDNN-prepacked weights (see `packed_linear`), about 2x faster than `F.linear` here.

Numerics: the same fp32 math as transformers, in a different summation order (fused matmuls, oneDNN,
weighted-sum attention), so logits differ by ~1e-6 relative. Greedy decoding matches `transformers`
`generate` token for token in the tests (tests/test_generation.py) and in `benchmarks/generation.py`; an
exact tie between the top two logits could in principle resolve differently.
The weights are read, never written. For a frozen model (no parameter requires grad: serving, evaluation,
a real 135M model whose repacking costs about a second) the fused and packed copies are cached and reused
while every parameter is the same tensor at the same version (`data_ptr`, `_version`; `load_state_dict` and
`copy_` bump it). A model that can train is repacked on every call: the fused AdamW kernel updates
parameters in place without bumping their version, so a cached copy would decode PPO's policy with stale
weights.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rlhfkit.generation.int8_linear import Int8Linear
from rlhfkit.generation.kv_cache import KVCache
from rlhfkit.generation.packed_linear import Linear, onednn_usable

# RoPE types whose cos/sin depend on the sequence length at run time; the lean path does not reproduce them.
DYNAMIC_ROPE_TYPES = {"dynamic", "longrope"}


def supports(model: torch.nn.Module) -> bool:
    """Whether `model` is a Llama the lean path reproduces exactly (else the caller uses the HF loop)."""
    return unsupported_reason(model) is None


# Families with exactly Llama's layer (pre-norm RMSNorm, RoPE, GQA attention with optional q/k/v biases,
# SwiGLU MLP, no logit soft-capping or scaling): Qwen2 is Llama plus q/k/v biases, which `_stacked` carries.
_LLAMA_LAYOUT = ("llama", "qwen2")


def unsupported_reason(model: torch.nn.Module) -> str | None:
    """None when the lean path reproduces `model` exactly; else a few words on what it cannot do."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if config is None or model_type not in _LLAMA_LAYOUT:
        return f"{model_type or type(model).__name__} is not a Llama-layout model"
    inner = getattr(model, "model", None)
    needed = ("embed_tokens", "layers", "norm", "rotary_emb")
    if inner is None or not all(hasattr(inner, name) for name in needed) or not hasattr(model, "lm_head"):
        return f"{type(model).__name__} does not have the plain Llama module layout (e.g. a PEFT wrapper)"
    weight = inner.embed_tokens.weight
    if weight.device.type != "cpu":
        return f"the model is on {weight.device}; the lean engine is tuned for the CPU"
    if weight.dtype not in (torch.float32, torch.bfloat16):
        return f"the weights are {str(weight.dtype).removeprefix('torch.')}; the lean engine runs float32 or bfloat16"
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"activation {config.hidden_act}"
    if getattr(config, "pretraining_tp", 1) not in (None, 1):
        return "pretraining_tp > 1"
    if any(kind != "full_attention" for kind in getattr(config, "layer_types", None) or ()):
        return "sliding-window attention layers"
    if getattr(config, "final_logit_softcapping", None) or getattr(config, "attn_logit_softcapping", None):
        return "logit soft-capping"
    if getattr(config, "logit_scale", None) not in (None, 1, 1.0):
        return "a logit scale"
    rope_type = getattr(inner.rotary_emb, "rope_type", "default")
    if rope_type in DYNAMIC_ROPE_TYPES:
        return f"RoPE type '{rope_type}' depends on the sequence length"
    return None


_PREFILL_TOKENS = 256  # tokens per slice of rows in a prefill (see `LeanLlama.prefill`)


def _prefill_slices(lengths: list[int]) -> list[tuple[int, int, int]]:
    """(first row, rows, width) slices of consecutive rows with `lengths` real (right-aligned) tokens: a row
    joins the slice while rows x the slice's longest length stays within `_PREFILL_TOKENS` (one row at least)."""
    slices, first = [], 0
    while first < len(lengths):
        rows, width = 1, max(lengths[first], 1)
        while first + rows < len(lengths):
            wider = max(width, lengths[first + rows])
            if (rows + 1) * wider > _PREFILL_TOKENS:
                break
            rows, width = rows + 1, wider
        slices.append((first, rows, width))
        first += rows
    return slices


def rope_tables(rotary_emb: torch.nn.Module, positions: torch.Tensor, like: torch.Tensor):
    """(cos, sin_signed) `[len(positions), head_dim]` from the model's own rotary module (so any non-dynamic
    RoPE type is reproduced), with rotate_half's signs folded into sin: [-sin_lo, sin_hi]. `like`: a tensor
    of the dtype and device wanted."""
    cos, sin = rotary_emb(like[:0], positions[None])
    half = cos.size(-1) // 2
    return cos[0], torch.cat((-sin[0, :, :half], sin[0, :, half:]), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor) -> torch.Tensor:
    """HF's x * cos + rotate_half(x) * sin, with rotate_half(x) * sin == (x's halves swapped) * sin_signed:
    one roll instead of slice/neg/cat (roll: ~4x faster than flip on a decode step's [64, 1, 16, 32])."""
    return x * cos + x.roll(x.size(-1) // 2, dims=-1) * sin_signed


@dataclass
class _Layer:
    attn_norm: torch.Tensor
    qkv: Linear | Int8Linear  # q, k and v projections stacked: one matmul
    out: Linear | Int8Linear
    mlp_norm: torch.Tensor
    gate_up: Linear | Int8Linear  # gate and up projections stacked: one matmul
    down: Linear | Int8Linear


def _linear(weight: torch.Tensor, bias: torch.Tensor | None, batch_hint: int, fast: bool, quantize: str):
    if quantize == "int8":
        return Int8Linear(weight, bias)
    return Linear(weight, bias, batch_hint, fast)


def _stacked(linears: list[torch.nn.Linear], batch_hint: int, fast: bool, quantize: str):
    weight = torch.cat([lin.weight.detach() for lin in linears])
    bias = None if linears[0].bias is None else torch.cat([lin.bias.detach() for lin in linears])
    return _linear(weight, bias, batch_hint, fast, quantize)


# model -> (key, (lm_head, layers)): the last packing of each live model (see the module docstring), one
# table per `quantize` mode, so fp32 and int8 decoding of one model do not evict each other.
_PACKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_PACKED_BY_MODE = {"none": _PACKED, "int8": weakref.WeakKeyDictionary()}


def _packed_weights(
    model: torch.nn.Module, batch_hint: int, fast: bool, quantize: str = "none"
) -> tuple[Linear, list[_Layer]]:
    frozen = not any(p.requires_grad for p in model.parameters())
    versions = tuple((p.data_ptr(), p._version) for p in model.parameters())
    # int8 weights have one layout whatever the batch; oneDNN's depend on the batch hint.
    key = (None if quantize == "int8" else batch_hint, fast, versions) if frozen else None
    cached = _PACKED_BY_MODE[quantize].get(model) if frozen else None
    if cached is not None and cached[0] == key:
        return cached[1]
    config, inner = model.config, model.model
    lm_head = _linear(model.lm_head.weight, model.lm_head.bias, batch_hint, fast, quantize)
    layers = []
    for layer in inner.layers[: config.num_hidden_layers]:
        attn, mlp = layer.self_attn, layer.mlp
        layers.append(
            _Layer(
                attn_norm=layer.input_layernorm.weight.detach(),
                qkv=_stacked([attn.q_proj, attn.k_proj, attn.v_proj], batch_hint, fast, quantize),
                out=_linear(attn.o_proj.weight, attn.o_proj.bias, batch_hint, fast, quantize),
                mlp_norm=layer.post_attention_layernorm.weight.detach(),
                gate_up=_stacked([mlp.gate_proj, mlp.up_proj], batch_hint, fast, quantize),
                down=_linear(mlp.down_proj.weight, mlp.down_proj.bias, batch_hint, fast, quantize),
            )
        )
    if frozen:
        _PACKED_BY_MODE[quantize][model] = (key, (lm_head, layers))
    return lm_head, layers


class LeanLlama:
    """Prefill once, then decode one token per row per `step`; rows can be dropped with `keep`.

    `batch_hint` (the expected number of rows) only tunes the oneDNN weight layout. `quantize="int8"`
    decodes with weight-only int8 copies of the linear layers (`int8_linear`); the model is not changed.
    """

    def __init__(self, model: torch.nn.Module, batch_hint: int = 64, quantize: str = "none"):
        config = model.config
        inner = model.model
        self.model = model
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.num_heads
        self.eps = config.rms_norm_eps
        self.scale = self.head_dim**-0.5
        self.embed = inner.embed_tokens.weight.detach()
        self.dtype = self.embed.dtype
        self.device = self.embed.device
        self.final_norm = inner.norm.weight.detach()
        fast = onednn_usable(self.device, self.dtype)
        self.lm_head, self.layers = _packed_weights(model, batch_hint, fast, quantize)
        self.intermediate = config.intermediate_size

    # -- public interface shared with the Hugging Face fallback --------------------------------------------

    def prefill(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int
    ) -> torch.Tensor:
        """Run the left-padded prompts, fill the cache; returns fp32 logits of each row's last position."""
        batch, prompt_len = input_ids.shape
        total = prompt_len + max_new_tokens
        mask = attention_mask.to(torch.bool)
        # Keys: prompt padding is invalid forever; every generated column is valid once written.
        key_valid = torch.ones(batch, total, dtype=torch.bool, device=self.device)
        key_valid[:, :prompt_len] = mask
        # Decode attention adds this bias to the scores: 0 for a valid key, -inf for padding.
        bias = torch.zeros(batch, total, dtype=self.dtype, device=self.device).masked_fill(
            ~key_valid, -torch.inf
        )
        self.cache = KVCache(
            len(self.layers),
            batch,
            self.num_kv_heads,
            self.num_heads,
            self.head_dim,
            total,
            bias,
            self.dtype,
            self.device,
        )
        self.cos, self.sin_signed = rope_tables(
            self.model.model.rotary_emb, torch.arange(total, device=self.device), self.embed
        )
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        self.next_position = mask.sum(-1)  # position of each row's first generated token
        self.length = prompt_len
        causal = torch.ones(prompt_len, prompt_len, dtype=torch.bool, device=self.device).tril()
        # A padding query may see no valid key at all; let it see itself so no row of the softmax is empty
        # (an all-masked row gives NaN, which would leak through 0 * NaN into later layers' padded keys).
        eye = torch.eye(prompt_len, dtype=torch.bool, device=self.device)
        attn_mask = (causal & (mask[:, None, :] | eye))[:, None]
        # Rows are independent sequences: a prefill in slices of rows keeps its activations (up to
        # [tokens, 2 * intermediate]) small enough to stay in cache and in the allocator's warm memory.
        # A slice skips the left padding all its rows share: padding is masked out of every real token's
        # attention, so computing it changes nothing but the time (46% of the tokens of 200 HH-RLHF prompts
        # in chunks of 32: their lengths run from 20 to 880 tokens).
        last = []
        for first, rows, width in _prefill_slices(mask.sum(-1).tolist()):
            skip, cut = prompt_len - width, slice(first, first + rows)
            self.cache.zero_values(first, rows, skip)  # never read (masked keys), but must be finite
            out = self._forward(
                input_ids[cut, skip:],
                positions[cut, skip:],
                attn_mask[cut, :, skip:, skip:],
                start=skip,
                decode=False,
                first_row=first,
            )
            last.append(out[:, -1])
        return self._logits(torch.cat(last))

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per row; returns fp32 next-token logits `[rows, vocab]`."""
        t = self.length
        hidden = self._forward(tokens[:, None], self.next_position[:, None], None, start=t, decode=True)
        self.next_position = self.next_position + 1
        self.length = t + 1
        return self._logits(hidden[:, -1])

    def step_rows(self, tokens: torch.Tensor, positions: torch.Tensor, cache, rope) -> torch.Tensor:
        """Feed one token per row at that row's own `positions` into `cache` (a `SlotKVCache` whose
        `begin_step` named the rows), with `rope` (cos, sin_signed) covering every position; fp32 logits."""
        hidden = self._forward(
            tokens[:, None], positions[:, None], None, start=0, decode=True, cache=cache, rope=rope
        )
        return self._logits(hidden[:, -1])

    def keep(self, rows: torch.Tensor) -> bool:
        """Drop every row not in `rows` (a 1-D index tensor) from the cache and the bookkeeping."""
        self.cache.keep(rows)
        self.next_position = self.next_position.index_select(0, rows)
        return True

    # -- internals --------------------------------------------------------------------------------------------

    def _rms_norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:
            return F.rms_norm(x, weight.shape, weight, self.eps)
        # As transformers does for half-precision weights: normalize in fp32, round, then scale.
        return weight * F.rms_norm(x.float(), weight.shape, None, self.eps).to(x.dtype)

    def _forward(
        self,
        tokens: torch.Tensor,
        positions: torch.Tensor,
        attn_mask: torch.Tensor | None,
        start: int,
        decode: bool,
        first_row: int = 0,
        cache=None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """`decode`: one new token per row against the cache (`attn_mask` unused: the cache holds the key
        bias); otherwise a prefill with the 4-D boolean mask `[batch, 1, seq, seq]`.
        The mask's kind, not the sequence length, picks the path: a one-token prompt is still a prefill.
        `cache` and `rope` (cos, sin_signed) replace this call's own (a slot pool's decode step)."""
        batch, seq = tokens.shape
        heads, kv_heads, dim = self.num_heads, self.num_kv_heads, self.head_dim
        cache = self.cache if cache is None else cache
        cos_table, sin_table = rope or (self.cos, self.sin_signed)
        cos = cos_table[positions][:, :, None]  # [batch, seq, 1, dim]: broadcast over heads
        sin_signed = sin_table[positions][:, :, None]
        hidden = F.embedding(tokens, self.embed)
        for i, w in enumerate(self.layers):
            x = self._rms_norm(hidden, w.attn_norm)
            qkv = w.qkv(x).view(batch, seq, heads + 2 * kv_heads, dim)
            qk = apply_rope(qkv[:, :, : heads + kv_heads], cos, sin_signed)
            k, v = qk[:, :, heads:], qkv[:, :, heads + kv_heads :]  # [batch, seq, kv_heads, dim]
            cache.write(i, start, k, v, first_row)
            if decode:
                attn = cache.attend(i, qk[:, 0, :heads], start + 1, self.scale)
            else:
                q, k, v = qk[:, :, :heads].transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
                if kv_heads != heads:
                    k = k.repeat_interleave(heads // kv_heads, dim=1)
                    v = v.repeat_interleave(heads // kv_heads, dim=1)
                attn = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=self.scale)
                attn = attn.transpose(1, 2).flatten(2)  # [batch, seq, heads * dim]
                if i == len(self.layers) - 1:
                    # Only the last position's output is used (its logits): the other positions' output
                    # projection and MLP would be thrown away. (Attention still runs for every query:
                    # SDPA on the last query alone rounds differently.)
                    attn, hidden = attn[:, -1:], hidden[:, -1:]
            hidden = w.out.plus(attn, hidden)
            x = self._rms_norm(hidden, w.mlp_norm)
            gate, up = w.gate_up(x).split(self.intermediate, dim=-1)
            hidden = w.down.plus(F.silu(gate) * up, hidden)
        return hidden

    def _logits(self, last_hidden: torch.Tensor) -> torch.Tensor:
        x = self._rms_norm(last_hidden, self.final_norm)
        return self.lm_head(x).float()
