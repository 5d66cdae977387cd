import json

import pytest
from transformers import AutoTokenizer

from rlhfkit.cli import main
from rlhfkit.data.tool_calls import ToolCall, call_text
from rlhfkit.errors import RlhfkitError
from rlhfkit.tokenizer import MIN_VOCAB, SPECIAL_TOKENS, train_tokenizer


def test_round_trips_text_including_unseen_characters(tokenizer_dir):
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    for text in ["The cat sees bread.", "  leading spaces\nnew lines\ttabs", "Ünïcödé ☃ 日本語 and emoji 🚀"]:
        ids = tok.encode(text, add_special_tokens=False)
        assert tok.decode(ids) == text


def test_special_tokens_are_single_ids(tokenizer_dir):
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    for special in SPECIAL_TOKENS:
        ids = tok.encode(special, add_special_tokens=False)
        assert len(ids) == 1, special
    assert tok.pad_token == "<|pad|>" and tok.eos_token == "<|end|>"


def test_chat_template_renders_turns_and_generation_prompt(tokenizer_dir):
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    chat = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Who bakes bread?"},
        {"role": "assistant", "content": "The baker."},
    ]
    text = tok.apply_chat_template(chat, tokenize=False)
    assert text == "<|system|>Be brief.<|end|><|user|>Who bakes bread?<|end|><|assistant|>The baker.<|end|>"
    prompt = tok.apply_chat_template(chat[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|user|>Who bakes bread?<|end|><|assistant|>")
    ids = tok.apply_chat_template(chat, tokenize=True, return_dict=True)["input_ids"]
    assert tok.decode(ids) == text


def test_vocab_smaller_than_special_tokens_is_refused(corpus_file, tmp_path):
    with pytest.raises(RlhfkitError, match="smaller than"):
        train_tokenizer(corpus_file, MIN_VOCAB - 1, tmp_path / "t")


def test_cli_trains_tokenizer(corpus_file, tmp_path, capsys):
    assert (
        main(
            [
                "tokenizer",
                "train",
                "--data",
                str(corpus_file),
                "--vocab-size",
                "300",
                "--out",
                str(tmp_path / "t"),
            ]
        )
        == 0
    )
    assert (tmp_path / "t" / "tokenizer.json").exists()
    assert (
        main(["tokenizer", "train", "--data", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "u")])
        == 1
    )
    err = capsys.readouterr().err
    assert "missing.txt: corpus not found" in err and "Traceback" not in err


def test_chats_teach_the_tokenizer_the_tool_call_format(corpus_file, tmp_path, capsys):
    """--chats: the tokenizer also learns from the SFT chats rendered with the template, so a tool call and its
    result take fewer tokens; the special tokens stay single ids; a bad chat names its file, line and field."""
    chats = tmp_path / "chats.jsonl"
    rows = []
    for i in range(200):
        item = f"Lomar K{i % 9} phone"
        call = {"type": "function", "function": {"name": "lookup", "arguments": {"item": item}}}
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": f"How much is the {item}?"},
                    {"role": "assistant", "content": "", "tool_calls": [call]},
                    {"role": "tool", "content": json.dumps({"item": item, "price": 100 + i})},
                    {"role": "assistant", "content": f"It costs ${100 + i}."},
                ]
            }
        )
    chats.write_text("".join(json.dumps(r) + "\n" for r in rows))
    argv = ["tokenizer", "train", "--data", str(corpus_file), "--vocab-size", "400"]
    assert main([*argv, "--out", str(tmp_path / "prose")]) == 0
    assert main([*argv, "--chats", str(chats), "--out", str(tmp_path / "tools")]) == 0
    prose, tools = (AutoTokenizer.from_pretrained(str(tmp_path / n)) for n in ("prose", "tools"))
    episode = (
        call_text(ToolCall("lookup", {"item": "Lomar K3 phone"})) + '{"item": "Lomar K3 phone", "price": 749}'
    )
    assert len(tools.encode(episode)) < 0.7 * len(prose.encode(episode))
    for special in SPECIAL_TOKENS:
        assert len(tools.encode(special, add_special_tokens=False)) == 1
    assert tools.decode(tools.encode(episode)) == episode

    chats.write_text(
        json.dumps(rows[0]) + "\n" + json.dumps({"messages": [{"role": "robot", "content": "x"}]})
    )
    capsys.readouterr()
    assert main([*argv, "--chats", str(chats), "--out", str(tmp_path / "bad")]) == 1
    assert f"{chats}:2" in (err := capsys.readouterr().err) and "messages[0].role" in err


def test_split_digits_gives_a_number_the_same_tokens_wherever_it_stands(corpus_file, tmp_path):
    numbers = "".join(f"It costs ${n}. min({n}, {n + 7}) = {n}\n" for n in range(100, 2000, 7))
    (tmp_path / "corpus.txt").write_text(corpus_file.read_text() + numbers)
    merged = train_tokenizer(tmp_path / "corpus.txt", 400, tmp_path / "merged")
    split = train_tokenizer(tmp_path / "corpus.txt", 400, tmp_path / "split", split_digits=True)

    def digits(tok, text: str) -> list[list[int]]:
        return [tok.encode(d, add_special_tokens=False) for d in text]

    for context in ("$1239", " 1239", "(1239", "x1239"):
        ids = split.encode(context, add_special_tokens=False)
        assert ids[-4:] == [i for d in digits(split, "1239") for i in d], context
        assert split.decode(ids) == context
    # without it the corpus's frequent numbers merge, and differently by context
    assert len(merged.encode(" 1239", add_special_tokens=False)) < 5
