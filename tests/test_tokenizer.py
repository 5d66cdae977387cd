import pytest
from transformers import AutoTokenizer

from rlhfkit.cli import main
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
