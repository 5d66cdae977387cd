"""Tiny random checkpoints of real architectures, built from configs (no download), for the real-model tests.

Each is a Hugging Face folder (model + tokenizer + generation_config) shaped like a family people bring:
- `llama`: SmolLM2's layout (tied embeddings, grouped-query attention), ChatML turns ending in `<|im_end|>`;
- `qwen2`: untied, GQA, q/k/v biases; ChatML; generation_config lists two eos ids;
- `gemma2`: attention and final-logit soft-capping; turns end with `<end_of_turn>`, which is *not* the eos;
- `gpt_neox`: a non-Llama family with no chat template (callers must give one).
"""

from __future__ import annotations

from pathlib import Path

ARCHS = ("llama", "qwen2", "gemma2", "gpt_neox")

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
GEMMA = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
    "{{ m['content'] }}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
SPECIALS = {
    "llama": (["<|im_start|>", "<|im_end|>", "<|endoftext|>"], "<|im_end|>", CHATML),
    "qwen2": (["<|im_start|>", "<|im_end|>", "<|endoftext|>"], "<|im_end|>", CHATML),
    "gemma2": (["<bos>", "<eos>", "<pad>", "<start_of_turn>", "<end_of_turn>"], "<eos>", GEMMA),
    "gpt_neox": (["<|endoftext|>"], "<|endoftext|>", None),
}


def _tokenizer(arch: str, corpus: Path, out: Path):
    from rlhfkit.tokenizer import load_tokenizer, train_tokenizer

    train_tokenizer(corpus, vocab_size=300, out_dir=out / "_tok")
    tok = load_tokenizer(out / "_tok")
    specials, eos, template = SPECIALS[arch]
    tok.add_special_tokens({"additional_special_tokens": specials})
    tok.eos_token = eos
    tok.pad_token = "<pad>" if arch == "gemma2" else eos
    if arch == "gemma2":
        tok.bos_token = "<bos>"
    tok.chat_template = template
    return tok


def _config(arch: str, vocab: int, tok):
    import transformers as tf

    common = dict(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=256,
    )
    ids = dict(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id)
    if arch == "llama":
        return tf.LlamaConfig(**common, **ids, num_key_value_heads=2, tie_word_embeddings=True)
    if arch == "qwen2":
        eos = [tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")]
        return tf.Qwen2Config(
            **common, **{**ids, "eos_token_id": eos}, num_key_value_heads=2, tie_word_embeddings=False
        )
    if arch == "gemma2":
        return tf.Gemma2Config(
            **common,
            **ids,
            num_key_value_heads=2,
            head_dim=8,
            sliding_window=64,
            final_logit_softcapping=5.0,
            attn_logit_softcapping=10.0,
            query_pre_attn_scalar=8,
        )
    if arch == "gpt_neox":
        return tf.GPTNeoXConfig(**common, **ids, rotary_pct=0.5, tie_word_embeddings=False)
    raise ValueError(arch)


def build_tiny(arch: str, corpus: Path, out: Path, seed: int = 0) -> Path:
    """Save a random tiny `arch` model with its tokenizer and generation_config under `out`; return `out`."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    tok = _tokenizer(arch, corpus, out)
    config = _config(arch, len(tok), tok)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    # Larger-than-default weights so the random model's distribution is far from uniform (log-prob checks
    # then compare meaningful numbers).
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0, 0.2)
    model.generation_config = GenerationConfig(
        eos_token_id=config.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        do_sample=True,
        temperature=0.7,
    )
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
