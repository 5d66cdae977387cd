"""Pretraining data: a corpus tokenized once into a packed stream, split, and sampled as fixed windows.

Documents are joined with the `<|endoftext|>` separator into one token stream (packing: no padding is ever
computed). A corpus of many documents is split by document (a seeded shuffle, so validation text is never
seen in training); a single long text (tinyshakespeare) keeps its last `val_fraction` for validation, as
nanoGPT does, so numbers compare with its published ones.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rlhfkit.errors import RlhfkitError
from rlhfkit.tokenizer import corpus_files, document_separator_id, iter_corpus_texts


@dataclass
class TokenStreams:
    train: np.ndarray
    val: np.ndarray
    val_bytes: int  # UTF-8 bytes of the validation text, for bits per byte
    fingerprint: str
    num_documents: int


def corpus_fingerprint(data: str | Path, tokenizer_dir: str | Path | None = None) -> str:
    """sha256 over the corpus files' bytes (and the tokenizer), so a changed corpus is never mistaken for a cached one."""
    h = hashlib.sha256()
    for path in corpus_files(data):
        h.update(path.name.encode())
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    if tokenizer_dir is not None:
        tj = Path(tokenizer_dir) / "tokenizer.json"
        if tj.exists():
            h.update(tj.read_bytes())
    return h.hexdigest()[:16]


def build_streams(
    data: str | Path, tokenizer, val_fraction: float, cache_dir: Path | None, tokenizer_dir=None
) -> TokenStreams:
    fingerprint = corpus_fingerprint(data, tokenizer_dir)
    cache = Path(cache_dir) / f"tokens-{fingerprint}-{val_fraction}.npz" if cache_dir else None
    if cache is not None and cache.exists():
        z = np.load(cache)
        meta = json.loads(str(z["meta"]))
        return TokenStreams(z["train"], z["val"], meta["val_bytes"], fingerprint, meta["num_documents"])

    docs = [text for _, text in iter_corpus_texts(data) if text.strip()]
    if not docs:
        raise RlhfkitError(f"{data}: corpus holds no text")
    sep = document_separator_id(tokenizer)
    if len(docs) == 1:
        text = docs[0]
        cut = int(len(text) * (1 - val_fraction))
        train_docs, val_docs = [text[:cut]], [text[cut:]]
    else:
        order = list(range(len(docs)))
        random.Random(0).shuffle(order)  # fixed split seed: the split does not move with the training seed
        n_val = max(1, int(round(len(docs) * val_fraction)))
        val_docs = [docs[i] for i in sorted(order[:n_val])]
        train_docs = [docs[i] for i in sorted(order[n_val:])]

    train = _pack(train_docs, tokenizer, sep)
    val = _pack(val_docs, tokenizer, sep)
    val_bytes = sum(len(d.encode("utf-8")) for d in val_docs)
    streams = TokenStreams(train, val, val_bytes, fingerprint, len(docs))
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        # Per-process temporary name: under torchrun every rank builds the same cache; the atomic replace
        # lets whichever finishes last win without one rank renaming another's half-written file.
        tmp = cache.with_name(f"{cache.stem}.{os.getpid()}.tmp.npz")
        meta = json.dumps({"val_bytes": val_bytes, "num_documents": len(docs)})
        np.savez(tmp, train=train, val=val, meta=np.array(meta))
        tmp.replace(cache)
    return streams


def _pack(docs: list[str], tokenizer, sep: int) -> np.ndarray:
    # The fast tokenizer encodes a list in parallel (Rust); batches bound memory for large corpora.
    pieces = []
    for i in range(0, len(docs), 1024):
        enc = tokenizer(docs[i : i + 1024], add_special_tokens=False)["input_ids"]
        for ids in enc:
            pieces.append(np.asarray(ids, dtype=np.int32))
            pieces.append(np.asarray([sep], dtype=np.int32))
    stream = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int32)
    return stream


def sample_windows(stream: np.ndarray, seq_len: int, n: int, seed: int, step: int) -> np.ndarray:
    """`n` random windows of `seq_len + 1` tokens, a pure function of (seed, step) — what makes resume exact."""
    rng = np.random.default_rng([seed, step])
    starts = rng.integers(0, len(stream) - seq_len - 1, size=n)
    return np.stack([stream[s : s + seq_len + 1] for s in starts])


def eval_windows(stream: np.ndarray, seq_len: int, max_tokens: int) -> np.ndarray:
    """Non-overlapping windows covering the start of the validation stream (the same ones at every eval)."""
    n = min((len(stream) - 1) // seq_len, max(1, max_tokens // seq_len))
    if n < 1:
        raise RlhfkitError(
            f"validation split has {len(stream)} tokens, fewer than one window of {seq_len + 1}"
        )
    return np.stack([stream[i * seq_len : i * seq_len + seq_len + 1] for i in range(n)])
