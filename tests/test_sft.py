"""Stage 2: the loss mask covers assistant tokens only, and SFT lowers held-out loss."""

from __future__ import annotations

import json
import random

import pytest
import torch
from transformers import AutoTokenizer

from rlhfkit.artifacts import save_hf_checkpoint
from rlhfkit.cli import main
from rlhfkit.models import build_model
from rlhfkit.train.chat_tokens import IGNORE, tokenize_chat

ITEMS = {
    "bread": "the baker",
    "apples": "the farmer",
    "boats": "the sailor",
    "letters": "the teacher",
    "soup": "the cook",
}


def _chats(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        thing, who = rng.choice(list(ITEMS.items()))
        msgs = [
            {"role": "user", "content": f"Who sells {thing}?"},
            {"role": "assistant", "content": f"It is {who}."},
        ]
        if i % 3 == 0:
            msgs.insert(0, {"role": "system", "content": "Answer briefly."})
        out.append({"messages": msgs, "id": f"c{i}", "category": "factual"})
    return out


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory, tokenizer_dir):
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    out = tmp_path_factory.mktemp("base")
    save_hf_checkpoint(build_model("micro", len(tok), 128, tok, seed=0), tok, out)
    return out


def test_mask_covers_exactly_the_assistant_turns(tokenizer_dir):
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    chat = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Who sells bread?"},
        {"role": "assistant", "content": "The baker."},
        {"role": "user", "content": "And soup?"},
        {"role": "assistant", "content": "The cook."},
    ]
    ids, labels = tokenize_chat(tok, chat, 512)
    assert len(ids) == len(labels)
    trained = tok.decode([t for t, lab in zip(ids, labels) if lab != IGNORE])
    assert trained == "The baker.<|end|>The cook.<|end|>"
    # Token by token: every supervised token equals its input token, every other one is masked.
    end = tok.convert_tokens_to_ids("<|end|>")
    in_turn = False
    for t, lab in zip(ids, labels):
        if t == tok.convert_tokens_to_ids("<|assistant|>"):
            assert lab == IGNORE
            in_turn = True
            continue
        assert lab == (t if in_turn else IGNORE)
        if t == end:
            in_turn = False


def test_sft_lowers_held_out_loss(tmp_path, base_dir):
    train, val = tmp_path / "train.jsonl", tmp_path / "val.jsonl"
    train.write_text("".join(json.dumps(c) + "\n" for c in _chats(200, 0)))
    val.write_text("".join(json.dumps(c) + "\n" for c in _chats(40, 1)))
    out = tmp_path / "sft"
    code = main(["sft", "--model", str(base_dir), "--data", str(train), "--val-data", str(val), "--out", str(out),
                 "--epochs", "0", "--max-steps", "40", "--eval-every", "20", "--batch-size", "16", "--lr", "5e-3",
                 "--warmup-steps", "2", "--log-every", "5", "--sample-every-eval", "1"])  # fmt: skip
    assert code == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r["val_loss"] for r in rows if "val_loss" in r]
    assert len(evals) == 2 and evals[-1] < evals[0]
    # Compare with the untrained base on the same held-out chats: SFT must be far better.
    from rlhfkit.models import load_causal_lm
    from rlhfkit.train.chat_tokens import tokenize_chats
    from rlhfkit.train.loop import lm_loss
    from rlhfkit.train.sft import collate

    tok = AutoTokenizer.from_pretrained(str(out))
    batch = collate(tokenize_chats(tok, _chats(40, 1), 128), tok.pad_token_id, "cpu")
    losses = {}
    for name, path in (("base", base_dir), ("sft", out)):
        with torch.no_grad():
            loss_sum, n, _ = lm_loss(load_causal_lm(path).eval(), batch)
        losses[name] = float(loss_sum) / int(n)
    assert losses["sft"] < 0.5 * losses["base"], losses
    manifest = json.loads((out / "rlhfkit.json").read_text())
    assert manifest["stage"] == "sft" and manifest["parent"] == str(base_dir)


def test_sft_bad_chat_names_line_and_field(tmp_path, base_dir, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps(_chats(1, 0)[0])
        + "\n"
        + json.dumps({"messages": [{"role": "robot", "content": "x"}]})
        + "\n"
    )
    assert main(["sft", "--model", str(base_dir), "--data", str(bad), "--out", str(tmp_path / "o")]) == 1
    assert "bad.jsonl:2: field 'messages[0].role'" in capsys.readouterr().err
