"""An OpenAI-compatible HTTP API over rlhfkit checkpoints (and any local Hugging Face causal LM).

    import torch
    from rlhfkit.serve import create_app, load_served_models
    torch.set_num_threads(1)  # this thread loads and answers HTTP; each model's worker decodes with `threads`
    app = create_app(load_served_models(["base=runs/demo/pretrain", "ppo=runs/demo/ppo"], threads=2))

(Why one thread here: `batching.BatchWorker`. A thread that already ran torch with several threads keeps its
OpenMP team, and the workers then decode about 2x slower on a CPU with few cores.)

Pieces, one job each:
- `schemas`: request validation (OpenAI's limits, 400 naming the parameter) and response objects.
- `errors`: OpenAI-shaped errors with OpenAI's status codes.
- `served`: the model behind each alias (tokenizer, context size, stop tokens, prompt scoring).
- `continuous` (the default): rows join and leave the decode batch at every step, over a slotted KV cache
  pool; `batching`: static batches that run to completion (`--batching static`), and each row's own seeded
  sampler, which both use.
- `choices`: a choice's text and log-probs from its tokens, identical streamed or whole.
- `limits`: what one request may ask for; `admission`: prompts refused on length before tokenizing, and the
  bounded, per-client fair queue for parsing and tokenizing; `disconnect`: work cancelled when its client
  leaves. Bodies are bounded by `rlhfkit.body_limit.BodyLimit` (shared with the annotation app).
- `rows`, `completions`, `chat`: the two generation endpoints; `app`: routes and API key.
- `server`: uvicorn in the foreground (CLI, with a shutdown grace period) or on a background thread (tests);
  `commands`: `rlhfkit serve`.
"""

from rlhfkit.serve.app import create_app
from rlhfkit.serve.served import ServedModel, load_served_models, serve_model

__all__ = ["ServedModel", "create_app", "load_served_models", "serve_model"]
