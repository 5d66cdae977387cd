"""A lean training forward for Llama-layout bodies: final hidden states at chosen positions, with autograd.

Why (profiled: PPO's update on the `small` preset, 1 CPU thread): a training step is ~80% matmuls that
already run at the CPU's GEMM peak, so what is left to win is work that is not needed and ops around the
matmuls. This forward computes exactly the transformer's math (same weights, same fp32 ops, different
summation order: ~1e-6 relative) on only what the loss reads:

- **No padding in the matmuls.** Right-padded rows are packed into one `[tokens, hidden]` matrix of their
  real tokens; every projection, norm and MLP runs on it. Only attention sees the padded `[batch, length]`
  layout (causal SDPA, so a real token never attends to the pads after it; pads get zero q/k/v).
- **Tokens nobody reads are not computed.** A row's tokens after its last needed position are dropped (in
  PPO the last response token: its state would predict the token after the response), and in the last layer
  the attention output, MLP and final norm run only at the positions asked for; the other positions only
  contributed their keys and values.
- **Fewer, larger ops.** q/k/v and gate/up are one matmul each (`torch.cat` of the weights inside autograd,
  so their gradients flow back to the separate HF parameters), `F.rms_norm`, RoPE cos/sin from the model's
  own rotary module evaluated once, SDPA with `is_causal` (no mask tensor built).

The HF modules and their parameters are used as they are (checkpoints stay HF-format; optimizers, DDP and
`state_dict` see nothing different). peft LoRA layers are a low-rank side path of the same fused matmuls
(`train.lora_path`). Frozen weights may be bf16 (a LoRA base, `train.precision`): they are multiplied in
bf16 with fp32 accumulation where the CPU has native bf16 (`fast_linear.bf16_usable`), and so are
attention's two products (the softmax between them computes in fp32 on their bf16 numbers), while the
hidden states, norms and residual sums stay fp32.
`lean_supported` lists what is reproduced; everything else (DoRA and other adapter variants, gradient
checkpointing, an autocast, trained bf16 weights, other families) keeps the model's own forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.distributed.fsdp import FSDPModule

from rlhfkit.generation.lean_llama import DYNAMIC_ROPE_TYPES, apply_rope, rope_tables
from rlhfkit.train.fast_linear import bf16_usable
from rlhfkit.train.lora_path import fusable, projection

_MATMUL_ATTENTION_MAX = 1 << 24  # attention probabilities per layer, above which SDPA's kernel is used

# Bodies whose layer is exactly: x += o(attn(rope(q), rope(k), v)) after RMSNorm; x += down(silu(gate) * up)
# after RMSNorm; final RMSNorm. Qwen2 adds q/k/v biases, which the concatenated projection carries.
LEAN_BODY_CLASSES = ("LlamaModel", "Qwen2Model")


def lean_supported(body: torch.nn.Module) -> bool:
    """Whether `lean_hidden_at` reproduces `body(input_ids).last_hidden_state` (a transformers body module)."""
    import transformers

    classes = tuple(getattr(transformers, n) for n in LEAN_BODY_CLASSES if hasattr(transformers, n))
    if type(body) not in classes or getattr(body, "gradient_checkpointing", False):
        return False
    # FSDP2 gathers a sharded module's weights in that module's own forward, which this path never calls.
    if any(isinstance(m, FSDPModule) for m in (body, *body.layers)):
        return False
    config = body.config
    if type(body.embed_tokens) is not torch.nn.Embedding:  # e.g. a LoRA-wrapped embedding
        return False
    weight = body.embed_tokens.weight
    # Tuned and tested for CPU fp32 training (a GPU keeps the HF forward and its fused attention kernels);
    # bf16 only for frozen weights and where the CPU multiplies bf16 natively.
    if weight.device.type != "cpu" or torch.is_autocast_enabled("cpu"):
        return False
    for p in body.parameters():
        if p.dtype != torch.float32 and (p.dtype != torch.bfloat16 or p.requires_grad or not bf16_usable()):
            return False
    if getattr(config, "hidden_act", "silu") != "silu" or getattr(config, "pretraining_tp", 1) not in (
        None,
        1,
    ):
        return False
    if body.training and getattr(config, "attention_dropout", 0.0):
        return False
    if any(kind != "full_attention" for kind in getattr(config, "layer_types", None) or ()):
        return False
    if getattr(body.rotary_emb, "rope_type", "default") in DYNAMIC_ROPE_TYPES:
        return False
    for layer in body.layers:  # plain or plain-LoRA Linear projections only (not quantized, not DoRA)
        attn, mlp = layer.self_attn, layer.mlp
        linears = (
            attn.q_proj,
            attn.k_proj,
            attn.v_proj,
            attn.o_proj,
            mlp.gate_proj,
            mlp.up_proj,
            mlp.down_proj,
        )
        if not fusable(linears):
            return False
    return True


def lean_hidden_at(
    body: torch.nn.Module,
    input_ids: torch.Tensor,
    select: torch.Tensor,
    branches: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Final hidden states `[N, H]` at the N positions where `select` `[B, L]` is True, in row-major order.

    Rows are right-padded; each row's tokens after its last selected position are not computed (they cannot
    influence an earlier position). Equals `body(input_ids).last_hidden_state[select]` (see the module doc).

    `branches` = (positions, branch) `[B, L]` each packs several sequences that share a prefix into one row
    (`train.shared_prefix`): a token at branch b > 0 attends to the earlier tokens of branch 0 (the shared
    prefix) and of its own branch only, and RoPE reads `positions` instead of the column.
    """
    config = body.config
    batch, length = input_ids.shape
    device = input_ids.device
    columns = torch.arange(length, device=device)
    # A row needs its tokens up to its last selected position; the width is the longest such row.
    last = torch.where(select, columns, -1).amax(1)
    width = max(int(last.max()) + 1, 1)
    needed = columns[None, :width] <= last[:, None]  # [B, W]
    flat = needed.flatten().nonzero()[:, 0]  # packed row t is padded position flat[t] of [B * W]
    packed_of = torch.full((batch * width,), -1, dtype=torch.long, device=device)
    packed_of[flat] = torch.arange(flat.numel(), device=device)
    chosen = packed_of[select[:, :width].flatten().nonzero()[:, 0]]  # packed rows of the selected positions
    # No padding (pretraining): the packed rows are the padded layout itself, so no copies in between.
    packing = None if flat.numel() == batch * width else flat
    every = chosen.numel() == flat.numel()  # every computed position is read: nothing to trim at the end

    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    eps = config.rms_norm_eps
    fp32 = torch.empty(0, device=device)  # the tables in fp32 also over a bf16 base
    if branches is None:
        cos, sin_signed = rope_tables(body.rotary_emb, columns[:width], fp32)  # [W, D] each
        cos, sin_signed = cos[flat % width][:, None], sin_signed[flat % width][:, None]  # [T, 1, D]
        mask = None
    else:
        positions = branches[0][:, :width].flatten()[flat]
        cos, sin_signed = rope_tables(
            body.rotary_emb, torch.arange(int(positions.max()) + 1, device=device), fp32
        )
        cos, sin_signed = cos[positions][:, None], sin_signed[positions][:, None]
        mask = _branch_mask(branches[1][:, :width])

    # padding_idx as nn.Embedding has it: a real token equal to the pad id (often the eos) gets no embedding gradient.
    embed = body.embed_tokens
    hidden = F.embedding(input_ids[:, :width].flatten()[flat], embed.weight, embed.padding_idx).float()
    # Attention as two batched matmuls around a softmax (`_matmul_attention`) where measured faster
    # than SDPA's CPU kernel: over a bf16 frozen base (only where the CPU multiplies bf16 natively,
    # `lean_supported`; the products in bf16 too, as the frozen projections around them already round their
    # inputs to bf16), and where the embeddings are frozen and something else trains (LoRA). Other runs keep
    # SDPA (their shapes were not timed).
    bf16_base = embed.weight.dtype == torch.bfloat16
    partly_trained = torch.is_grad_enabled() and not embed.weight.requires_grad
    partly_trained = partly_trained and any(p.requires_grad for p in body.parameters())
    # It keeps the `[B, heads, W, W]` probabilities for the backward where SDPA keeps O(W) per row: only while
    # they are small (2**24 numbers a layer: SmolLM2 at batch 4 x 680 tokens), so long contexts keep SDPA.
    small = batch * heads * width * width <= _MATMUL_ATTENTION_MAX
    matmul_attention = (bf16_base or partly_trained) and small
    if mask is not None and matmul_attention:
        mask = mask.to(embed.weight.dtype)  # once, not in every layer
    n_layers = len(body.layers)
    for i, layer in enumerate(body.layers):
        attn, mlp = layer.self_attn, layer.mlp
        x = _rms_norm(hidden, layer.input_layernorm.weight, eps)
        qkv = projection((attn.q_proj, attn.k_proj, attn.v_proj))(x)
        qkv = qkv.view(-1, heads + 2 * kv_heads, dim)
        # Attention in the padded layout [B, heads + 2 kv, W, D], zeros at pads; RoPE on q and k only.
        qk = apply_rope(qkv[:, : heads + kv_heads], cos, sin_signed)
        qk = _padded(qk, packing, batch, width)
        q, k = qk.split((heads, kv_heads), dim=1)
        v = _padded(qkv[:, heads + kv_heads :], packing, batch, width)
        if matmul_attention:
            out = _matmul_attention(q, k, v, attn.scaling, embed.weight.dtype, mask)
        else:  # grouped-query attention inside SDPA (no repeated k/v copies; ~10% faster fwd+bwd than repeats)
            gqa = kv_heads != heads
            causal = dict(is_causal=True) if mask is None else dict(attn_mask=mask[:, None] == 0)
            out = F.scaled_dot_product_attention(q, k, v, scale=attn.scaling, enable_gqa=gqa, **causal)
        out = out.transpose(1, 2).reshape(batch * width, heads * dim)
        # The last layer's output is read only at the selected positions.
        # (index_select: its backward is an index_add, ~5x faster here than indexing's accumulating index_put)
        if i == n_layers - 1 and not every:
            out, hidden = out.index_select(0, flat[chosen]), hidden.index_select(0, chosen)
        elif packing is not None:
            out = out.index_select(0, packing)
        hidden = hidden + projection((attn.o_proj,))(out)
        x = _rms_norm(hidden, layer.post_attention_layernorm.weight, eps)
        gate, up = projection((mlp.gate_proj, mlp.up_proj))(x).chunk(2, dim=-1)
        hidden = hidden + projection((mlp.down_proj,))(F.silu(gate) * up)
    if n_layers == 0 and not every:
        hidden = hidden.index_select(0, chosen)
    return _rms_norm(hidden, body.norm.weight, eps)


def _rms_norm(hidden: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm in fp32 (a bf16 frozen weight is widened; a no-op for fp32)."""
    return F.rms_norm(hidden, (hidden.size(-1),), weight.float(), eps)


def _branch_mask(branch: torch.Tensor) -> torch.Tensor:
    """Additive fp32 mask `[B, W, W]` for rows of shared-prefix branches: 0 where token i may attend to token
    j (j <= i, and j is in the prefix, branch 0, or in i's own branch), -inf elsewhere."""
    width = branch.size(1)
    causal = torch.ones(width, width, dtype=torch.bool, device=branch.device).tril_()
    allowed = causal & ((branch[:, None, :] == 0) | (branch[:, None, :] == branch[:, :, None]))
    return torch.zeros(allowed.shape, device=branch.device).masked_fill_(~allowed, float("-inf"))


def _matmul_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, dtype, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Causal attention `[B, heads, W, D]` (k, v: `[B, kv_heads, W, D]`; fp32) with q k^T and p v multiplied in
    `dtype` (bf16: fp32 accumulation), the softmax computed in fp32 over the product's rounded scores;
    returns fp32. `mask`: an additive `[B, W, W]` mask to use instead of the causal one (`_branch_mask`).

    Why (SmolLM2-135M's shapes, batch 4 x 191, 9 heads over 3 kv heads, 2 threads, AMD Zen 4): PyTorch's CPU
    flash-attention kernel takes ~9 ms forward + backward per layer in fp32, and more in bf16. These two plain
    batched matmuls take ~6.3 ms in fp32 (also under the AVX2 emulation) and ~3 ms in bf16, where attention
    was 20% of a LoRA step. The query heads that share a kv head are stacked as rows of one matmul, so k and
    v are never repeated. The cost is memory: the `[B, heads, W, W]` probabilities are kept for the backward.
    """
    batch, heads, width, dim = q.shape
    kv_heads = k.size(1)
    group = heads // kv_heads
    q = (q * scale).to(dtype).reshape(batch, kv_heads, group * width, dim)  # head h reads kv head h // group
    scores = torch.matmul(q, k.to(dtype).transpose(-1, -2)).view(batch, kv_heads, group, width, width)
    if mask is None:
        mask = torch.full((width, width), float("-inf"), device=q.device, dtype=dtype).triu_(1)
    else:
        mask = mask.to(dtype)[:, None, None]  # the same for every kv head and the query heads of its group
    # The mask (0 or -inf) adds exactly in bf16, and softmax widens bf16 scores to fp32 inside its kernel and
    # rounds only its output, which the product with v rounds to bf16 anyway: the same numbers as widening
    # the scores first, without two `[B, heads, W, W]` conversions each way (~3% of a SmolLM2 LoRA step).
    probs = torch.softmax(scores + mask, dim=-1)
    out = torch.matmul(probs.view(batch, kv_heads, group * width, width), v.to(dtype))
    return out.view(batch, heads, width, dim).float()


def _padded(x: torch.Tensor, packing: torch.Tensor | None, batch: int, width: int) -> torch.Tensor:
    """Packed `[T, heads, D]` -> padded `[B, heads, W, D]` with zeros at the pads (differentiable);
    `packing` None: no pads, a view."""
    out = x if packing is None else x.new_zeros(batch * width, *x.shape[1:]).index_put((packing,), x)
    return out.view(batch, width, *x.shape[1:]).transpose(1, 2)
