"""Write a GGUF file from a tiny Llama checkpoint with the `gguf` package, as llama.cpp's converter lays it out.

Only what the real-model tests need: Llama tensors in float32 (q/k rows permuted into llama.cpp's rotary
layout, which transformers' GGUF loader undoes), the byte-level BPE tokenizer ("gpt2" model: tokens, merges,
special-token types and ids) and the chat template. `architecture` may be set to another name to make a file
that is not a Llama (for the error tests).
"""

from __future__ import annotations

import json
from pathlib import Path


def write_gguf(model_dir: Path, out: Path, architecture: str = "llama") -> Path:
    import gguf
    import numpy as np
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    config = model.config
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    writer = gguf.GGUFWriter(str(out), architecture)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(config.hidden_size // heads)
    writer.add_rope_freq_base(float((config.rope_parameters or {}).get("rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)

    state = json.loads(tok.backend_tokenizer.to_str())
    tokens = [""] * len(tok)
    for text, index in state["model"]["vocab"].items():
        tokens[index] = text
    special = {added["id"]: added["content"] for added in state["added_tokens"]}
    for index, text in special.items():
        tokens[index] = text
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if i in special else 1 for i in range(len(tokens))])  # 3: control token
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in state["model"]["merges"]])
    writer.add_bos_token_id(tok.bos_token_id)
    writer.add_eos_token_id(tok.eos_token_id)
    writer.add_pad_token_id(tok.pad_token_id)
    writer.add_chat_template(tok.chat_template)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)

    def rotary_rows(weight, n_heads):  # each head's rows as llama.cpp orders them for its RoPE kernel
        return weight.reshape(n_heads, 2, weight.shape[0] // n_heads // 2, *weight.shape[1:]).swapaxes(1, 2)

    for name, param in model.state_dict().items():
        if name == "lm_head.weight" and config.tie_word_embeddings:
            continue  # a tied model stores no output matrix (the loader ties it back)
        module, kind = name.rsplit(".", 1)
        array = param.detach().float().numpy()
        if module.endswith(("q_proj", "k_proj")):
            array = rotary_rows(array, heads if module.endswith("q_proj") else kv_heads).reshape(array.shape)
        writer.add_tensor(f"{names.get_name(module)}.{kind}", np.ascontiguousarray(array))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out
