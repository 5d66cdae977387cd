"""Text and chat front ends: chat template, end-of-turn stop, stop strings, text without special tokens."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from rlhfkit.generation import SamplingParams, end_of_turn_ids, generate_chat, generate_text, render_chat

CHAT = [{"role": "user", "content": "Who bakes bread?"}]
ANSWER = "The baker bakes bread near the river."


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    return AutoTokenizer.from_pretrained(str(tokenizer_dir))


@pytest.fixture(scope="module")
def assistant(tokenizer):
    """A micro Llama overfit on one exchange, so it answers ANSWER and then ends its turn."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=128,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    text = tokenizer.apply_chat_template([*CHAT, {"role": "assistant", "content": ANSWER}], tokenize=False)
    ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(80):
        loss = model(input_ids=ids, labels=ids).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.1
    return model.eval()


def test_chat_reply_ends_at_end_of_turn(assistant, tokenizer):
    end = tokenizer.convert_tokens_to_ids("<|end|>")
    assert end in end_of_turn_ids(tokenizer)
    [reply] = generate_chat(assistant, tokenizer, [CHAT], SamplingParams(max_new_tokens=40, temperature=0))
    assert reply.text == ANSWER
    assert reply.finish_reason == "stop"
    assert reply.token_ids[-1] == end  # the end-of-turn token is kept: it is the action that ended the turn
    assert len(reply.logprobs) == len(reply.token_ids)
    assert reply.prompt_tokens == len(
        tokenizer(render_chat(tokenizer, CHAT), add_special_tokens=False)["input_ids"]
    )


def test_without_end_of_turn_the_reply_runs_to_the_length_limit(assistant, tokenizer):
    from rlhfkit.generation import generate

    prompt = tokenizer(render_chat(tokenizer, CHAT), add_special_tokens=False)["input_ids"]
    params = SamplingParams(max_new_tokens=30, temperature=0)
    [raw] = generate(assistant, [prompt], params, pad_token_id=tokenizer.pad_token_id, tokenizer=tokenizer)
    assert raw.finish_reason == "length" and len(raw.token_ids) == 30
    assert raw.text.startswith(ANSWER)


def test_stop_string_cuts_the_text(assistant, tokenizer):
    params = SamplingParams(max_new_tokens=40, temperature=0, stop_strings=("near", "zebra"))
    [reply] = generate_chat(assistant, tokenizer, [CHAT], params)
    assert reply.finish_reason == "stop"
    assert reply.text == "The baker bakes bread "
    decoded = tokenizer.decode(reply.token_ids)
    assert decoded.startswith("The baker bakes bread") and "near" in decoded  # stopped right after the match
    assert "river" not in decoded


def test_stop_string_spanning_tokens_and_a_batch_of_chats(assistant, tokenizer):
    chats = [CHAT, [{"role": "system", "content": "Be brief."}, *CHAT], CHAT]
    params = SamplingParams(max_new_tokens=40, temperature=0, stop_strings=("bread near",))
    replies = generate_chat(assistant, tokenizer, chats, params, batch_size=2)
    assert replies[0].text == replies[2].text == "The baker bakes "
    assert all(r.finish_reason in ("stop", "length") for r in replies)


def test_generate_text_continues_plain_text(assistant, tokenizer):
    prompt = render_chat(tokenizer, CHAT)
    [completion] = generate_text(
        assistant, tokenizer, [prompt], SamplingParams(max_new_tokens=5, temperature=0)
    )
    assert completion.finish_reason == "length" and len(completion.token_ids) == 5
    assert ANSWER.startswith(completion.text)


def test_generate_command_writes_k_candidates_per_prompt(assistant, tokenizer, tmp_path):
    import json

    from rlhfkit.cli import main

    model_dir = tmp_path / "model"
    assistant.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    prompts = tmp_path / "prompts.jsonl"
    records = [
        {"id": "a", "category": "bakery", "meta": {"source": "test"}, "messages": CHAT},
        {"messages": [*CHAT, {"role": "assistant", "content": "dropped: a prompt has no final answer"}]},
    ]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in records))

    def run(out, n="3"):
        return main(
            ["generate", "--model", str(model_dir), "--prompts", str(prompts), "--out", str(out), "--n", n,
             "--temperature", "0.8", "--max-new-tokens", "12", "--batch-size", "4"]
        )  # fmt: skip

    out = tmp_path / "candidates.jsonl"
    assert run(out) == 0
    first, second = [json.loads(line) for line in out.read_text().splitlines()]
    assert first["id"] == "a" and first["category"] == "bakery" and first["meta"]["source"] == "test"
    assert first["prompt"] == CHAT and second["prompt"] == CHAT and second["id"] == "prompts-1"
    for record in (first, second):
        assert len(record["completions"]) == 3
        assert all(c == [{"role": "assistant", "content": c[0]["content"]}] for c in record["completions"])
        assert len(record["meta"]["generation"]["finish_reasons"]) == 3
    texts = [c[0]["content"] for r in (first, second) for c in r["completions"]]
    assert any(ANSWER.startswith(t) for t in texts)  # the overfit answer shows up among the samples
    again = tmp_path / "again.jsonl"
    assert run(again) == 0
    assert again.read_text() == out.read_text()  # same seed, same file
    assert run(tmp_path / "none.jsonl", n="0") == 1  # refused with a one-line error


def test_generate_command_reports_a_bad_prompt_file(tmp_path, capsys):
    from rlhfkit.cli import main

    prompts = tmp_path / "bad.jsonl"
    prompts.write_text('{"messages": "hello"}\n')
    assert (
        main(["generate", "--model", str(tmp_path), "--prompts", str(prompts), "--out", str(tmp_path / "o")])
        == 1
    )
    assert "bad.jsonl:1" in capsys.readouterr().err
