"""Batched sampling with a KV cache: the engine every stage that samples (SFT eval, candidates, PPO) uses.

    from rlhfkit.generation import SamplingParams, generate, generate_chat
    completions = generate_chat(model, tokenizer, chats, SamplingParams(temperature=0.7, seed=0))

Pieces, one job each:
- `params`: `SamplingParams` (what to sample) and `Completion` (tokens, log-probs, finish reason, text).
- `engine`: the decode loop (length-sorted chunks, left padding, stops, dropping finished rows).
- `lean_llama`: a lean decode-only twin of Hugging Face `LlamaForCausalLM` (fused projections,
  preallocated KV cache, oneDNN-prepacked weights) used automatically for Llama models.
- `hf_decoder`: the general path for any other Hugging Face causal LM (announced once per model).
- `sampling`: temperature / top-k / top-p / greedy choice and the chosen token's log-prob.
- `stopping`: stop-string matching on a short decoded tail.
- `text`: text and chat front ends (chat template, end-of-turn stops).
- `turns`: the model's chat template and `end_of_turn_ids`, the one source of stop ids.
- `loading`: `load_for_generation` (any model source, `--device`/`--dtype`, `--chat-template FILE`).
"""

from rlhfkit.generation.engine import generate
from rlhfkit.generation.params import Completion, SamplingParams
from rlhfkit.generation.text import end_of_turn_ids, generate_chat, generate_text, pad_id, render_chat

__all__ = [
    "Completion",
    "SamplingParams",
    "end_of_turn_ids",
    "generate",
    "generate_chat",
    "generate_text",
    "pad_id",
    "render_chat",
]
