"""The models behind the API: each alias the user chose, its checkpoint, tokenizer, context size and batcher.

Aliases are free names (`--model gpt-4o=runs/demo/ppo`) so scripts written for hosted models run with only
the base URL changed. Two aliases of one folder share one loaded model and one batcher.

Prompts are tokenized exactly as the generation engine does (`generate_text` / `generate_chat`), so a
served answer equals what `rlhfkit generate` or `rlhfkit chat` produce for the same prompt and seed.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from rlhfkit.artifacts import read_manifest
from rlhfkit.errors import RlhfkitError
from rlhfkit.generation import end_of_turn_ids, pad_id, render_chat
from rlhfkit.generation.engine import check_quantize, lean_or_notice
from rlhfkit.serve.admission import longest_token_chars
from rlhfkit.serve.batching import Batcher, decode_batch
from rlhfkit.serve.continuous import ContinuousBatcher, SlotRows
from rlhfkit.serve.errors import bad_request, context_length_exceeded
from rlhfkit.tokenizer import ENDOFTEXT

DEFAULT_CONTEXT = 2048  # when neither the config nor the tokenizer says
BATCHING = ("continuous", "static")  # `--batching`: see `serve.continuous` and `serve.batching`


@dataclass
class ServedModel:
    name: str
    path: str
    model: torch.nn.Module
    tokenizer: object
    batcher: Batcher | ContinuousBatcher
    context_length: int
    stop_token_ids: tuple[int, ...]  # end of turn, eos, end of document: a response ends at any of them
    stage: str | None = None
    created: int = 0
    fingerprint: str = ""
    longest_token_chars: int = 1  # no token spells more characters (`admission.longest_token_chars`)
    reranker: object | None = None  # `serve.best_of.Reranker` (--reranker): picks best-of-n chat replies
    best_of: int = 1  # chat replies sampled per reply returned unless the request says (--best-of NAME=N)

    @property
    def max_prompt_chars(self) -> int:
        """Longest text that could fit in the context: anything longer is refused before tokenizing."""
        return self.context_length * self.longest_token_chars

    def encode_text(self, text: str) -> list[int]:
        """A completion prompt's tokens; the empty prompt becomes the start of a document (as OpenAI does)."""
        ids = self.tokenizer(text)["input_ids"]
        return ids or [self._document_start_id()]

    def encode_chat(self, messages: list[dict]) -> list[int]:
        try:
            rendered = render_chat(self.tokenizer, messages)
        except ValueError as exc:  # transformers raises ValueError when there is no chat template
            raise bad_request(
                f"Model '{self.name}' has no chat template; use /v1/completions, or start the server with "
                f"--chat-template {self.name}=FILE ({exc}).",
                param="messages",
            ) from None
        return self.tokenizer(rendered, add_special_tokens=False)["input_ids"]

    def check_context(self, prompt_tokens: int, max_tokens: int, param: str) -> None:
        if prompt_tokens + max_tokens > self.context_length:
            raise context_length_exceeded(self.context_length, prompt_tokens, max_tokens, param)

    def score_prompt(self, ids: list[int], top: int) -> tuple[list[float | None], list]:
        """Log-prob of each prompt token given those before it (None for the first), with top alternatives."""
        with self.batcher.lock, torch.inference_mode():
            device = next(self.model.parameters()).device
            logits = self.model(input_ids=torch.tensor([ids], device=device)).logits[0].float()
            logprobs = torch.log_softmax(logits[:-1], dim=-1)
            chosen = logprobs.gather(-1, torch.tensor(ids[1:], device=device)[:, None])[:, 0].tolist()
            tops: list = [None]
            if top:
                values, indices = logprobs.topk(top, dim=-1)
                tops += [tuple(zip(i, v)) for i, v in zip(indices.tolist(), values.tolist())]
            else:
                tops += [() for _ in chosen]
        return [None, *chosen], tops

    def _document_start_id(self) -> int:
        token_id = self.tokenizer.convert_tokens_to_ids(ENDOFTEXT)
        if isinstance(token_id, int) and token_id != self.tokenizer.unk_token_id:
            return token_id
        for candidate in (self.tokenizer.bos_token_id, self.tokenizer.eos_token_id):
            if candidate is not None:
                return int(candidate)
        raise bad_request("The prompt is empty and the model has no start-of-document token.", param="prompt")

    def close(self) -> None:
        self.batcher.close()


def parse_model_spec(spec: str) -> tuple[str, str]:
    """`NAME=SOURCE` -> (NAME, SOURCE); a bare `SOURCE` is served under its last path part (a `.gguf` file's
    stem)."""
    name, sep, path = spec.partition("=")
    if not sep:
        name, path = (Path(spec).stem if spec.endswith(".gguf") else Path(spec).name), spec
    if not name or not path:
        raise RlhfkitError(f"--model '{spec}': expected NAME=DIR (e.g. --model gpt-4o=runs/demo/ppo)")
    return name.strip(), path.strip()


def serve_model(
    name: str,
    model: torch.nn.Module,
    tokenizer,
    path: str = "",
    *,
    max_batch_rows: int = 32,
    gather_s: float = 0.005,
    max_active_batches: int = 4,
    batching: str = "continuous",
    quantize: str = "none",
    threads: int | None = None,
) -> ServedModel:
    """Wrap a loaded model and tokenizer for serving (starts its batcher thread).

    `batching`: "continuous" (rows join and leave the decode batch at every step; at most `max_batch_rows`
    rows of one request and `max_batch_rows` x `max_active_batches` in all hold a slot; models the lean decoder
    runs) or "static" (batches of up to `max_batch_rows` rows run to completion, `max_active_batches` of them
    interleaved). A model the lean decoder does not run is batched statically.
    `quantize="int8"`: decode with weight-only int8 copies of the weights (`generation.int8_linear`).
    `threads`: CPU threads of the batcher's worker, which runs all of this model's torch work (`BatchWorker`
    says why the calling thread should then stay at one: `rlhfkit serve` does that)."""
    if batching not in BATCHING:
        raise RlhfkitError(f"--batching: expected one of {', '.join(BATCHING)}, got '{batching}'")
    check_quantize(model, quantize, "--quantize")
    model.eval()
    pad = pad_id(tokenizer)
    if batching == "continuous" and lean_or_notice(model):
        slots = max_batch_rows * max_active_batches
        rows = SlotRows(model, tokenizer, pad, slots, batch_hint=max_batch_rows, quantize=quantize)
        batcher = ContinuousBatcher(rows, per_job=max_batch_rows, gather_s=gather_s, threads=threads)
    else:
        batcher = Batcher(
            lambda pieces: decode_batch(model, tokenizer, pieces, pad, quantize, max_batch_rows),
            max_batch_rows,
            gather_s,
            max_active_batches,
            threads,
        )
    return ServedModel(
        name=name,
        path=path,
        model=model,
        tokenizer=tokenizer,
        batcher=batcher,
        context_length=_context_length(model, tokenizer),
        stop_token_ids=_stop_token_ids(model, tokenizer),
        stage=read_manifest(path).get("stage") if path else None,
        created=int(time.time()),
        fingerprint=_fingerprint(model, path),
        longest_token_chars=longest_token_chars(tokenizer),
    )


def load_served_models(
    specs: list[str],
    *,
    device: str = "auto",
    dtype: str = "auto",
    chat_templates: list[str] | None = None,
    **options,
) -> dict[str, ServedModel]:
    """Load every `NAME=SOURCE` once per source, on `device` in `dtype`; `chat_templates` are `--chat-template`
    values (`FILE` for every model, `NAME=FILE` for one); `options` go to `serve_model`.

    A source is anything `load_causal_lm` takes: a folder, a `.gguf` file, a Hub name, a PEFT adapter folder.
    Each model keeps its own tokenizer, chat template and stop ids. A model without a chat template is served
    for /v1/completions only (its chat requests get a 400 that says so)."""
    from rlhfkit.generation.loading import check_template_targets, load_for_generation, template_for

    parsed = [parse_model_spec(spec) for spec in specs]
    check_template_targets(chat_templates, [name for name, _ in parsed])
    served: dict[str, ServedModel] = {}
    by_source: dict[tuple, ServedModel] = {}
    for (name, path), spec in zip(parsed, specs):
        if name in served:
            raise RlhfkitError(f"--model '{spec}': the name '{name}' is given twice")
        template = template_for(name, chat_templates)
        local = Path(path).expanduser()
        source = str(local.resolve()) if local.exists() else path
        key = (source, template)
        if key in by_source:
            first = by_source[key]
            served[name] = ServedModel(**{**first.__dict__, "name": name})
            continue
        model, tokenizer = load_for_generation(
            source, device=device, dtype=dtype, chat_template=template, need_chat_template=False
        )
        served[name] = by_source[key] = serve_model(name, model, tokenizer, source, **options)
    return served


def _context_length(model: torch.nn.Module, tokenizer) -> int:
    limit = getattr(model.config, "max_position_embeddings", None)
    if isinstance(limit, int) and limit > 0:
        return limit
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and 0 < limit < 1_000_000 else DEFAULT_CONTEXT


def _stop_token_ids(model: torch.nn.Module, tokenizer) -> tuple[int, ...]:
    """The model's end of turn (`generation.end_of_turn_ids`), plus the end of a document for completions."""
    ids = list(end_of_turn_ids(tokenizer, model))
    document_end = tokenizer.convert_tokens_to_ids(ENDOFTEXT)
    if isinstance(document_end, int) and document_end != tokenizer.unk_token_id:
        ids.append(document_end)
    return tuple(dict.fromkeys(int(i) for i in ids))


def _fingerprint(model: torch.nn.Module, path: str) -> str:
    digest = hashlib.sha256(model.config.to_json_string().encode())
    candidates = [Path(path), Path(path) / "model.safetensors", Path(path) / "adapter_model.safetensors"]
    weights = next((c for c in candidates if c.is_file()), None) if path else None
    if weights is not None:
        stat = weights.stat()
        digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
    return f"fp_{digest.hexdigest()[:10]}"
