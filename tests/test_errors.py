"""Bad input gives a one-line message naming the problem, a non-zero exit and no traceback."""

from __future__ import annotations

import pytest

from rlhfkit.cli import main


@pytest.fixture
def run_cli(capsys):
    def run(*argv):
        code = main([str(a) for a in argv])
        err = capsys.readouterr().err
        return code, err

    return run


def _pretrain(corpus, tok, out, *extra):
    return (
        "pretrain",
        "--data",
        corpus,
        "--tokenizer",
        tok,
        "--out",
        out,
        "--preset",
        "micro",
        "--max-steps",
        "1",
        *extra,
    )


def test_missing_corpus(run_cli, tokenizer_dir, tmp_path):
    code, err = run_cli(*_pretrain(tmp_path / "nope.txt", tokenizer_dir, tmp_path / "o"))
    assert code == 1 and "nope.txt: corpus not found" in err and "Traceback" not in err


def test_empty_corpus(run_cli, tokenizer_dir, tmp_path):
    (tmp_path / "empty.txt").write_text("  \n")
    code, err = run_cli(*_pretrain(tmp_path / "empty.txt", tokenizer_dir, tmp_path / "o"))
    assert code == 1 and "empty.txt: corpus file is empty" in err


def test_binary_corpus(run_cli, tokenizer_dir, tmp_path):
    (tmp_path / "blob.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" * 50)
    code, err = run_cli(*_pretrain(tmp_path / "blob.txt", tokenizer_dir, tmp_path / "o"))
    assert code == 1 and "blob.txt: looks like a binary file" in err


def test_malformed_jsonl_corpus_names_line_and_field(run_cli, tokenizer_dir, tmp_path):
    (tmp_path / "c.jsonl").write_text('{"text": "fine"}\n{"txt": "oops"}\n')
    code, err = run_cli(*_pretrain(tmp_path / "c.jsonl", tokenizer_dir, tmp_path / "o"))
    assert code == 1 and "c.jsonl:2: field 'text': expected a string" in err


def test_unknown_preset(run_cli, corpus_file, tokenizer_dir, tmp_path):
    code, err = run_cli(*_pretrain(corpus_file, tokenizer_dir, tmp_path / "o"), "--preset", "gigantic")
    assert code == 1 and "unknown preset 'gigantic'" in err and "micro" in err


def test_checkpoint_dir_that_is_not_a_model(run_cli, corpus_file, tokenizer_dir, tmp_path):
    (tmp_path / "notamodel").mkdir()
    code, err = run_cli(
        *_pretrain(corpus_file, tokenizer_dir, tmp_path / "o"), "--init-from", tmp_path / "notamodel"
    )
    assert code == 1 and "notamodel: not a model checkpoint" in err


def test_tokenizer_dir_that_is_not_a_tokenizer(run_cli, corpus_file, tmp_path):
    code, err = run_cli(*_pretrain(corpus_file, tmp_path, tmp_path / "o"))
    assert code == 1 and "not a tokenizer folder" in err


def test_vocab_smaller_than_special_tokens(run_cli, corpus_file, tmp_path):
    code, err = run_cli(
        "tokenizer", "train", "--data", corpus_file, "--vocab-size", "100", "--out", tmp_path / "t"
    )
    assert code == 1 and "--vocab-size 100 is smaller than" in err


def test_bad_toml_config(run_cli, corpus_file, tokenizer_dir, tmp_path):
    (tmp_path / "c.toml").write_text("max_stepz = 3\n")
    code, err = run_cli(
        *_pretrain(corpus_file, tokenizer_dir, tmp_path / "o"), "--config", tmp_path / "c.toml"
    )
    assert code == 1 and "unknown option(s)" in err and "max_stepz" in err


def test_non_utf8_jsonl_names_line_column_and_file_offset(tmp_path):
    """Issue #18: the offset was into a decode buffer, and no line was named."""
    from rlhfkit.data.jsonl import read_jsonl
    from rlhfkit.errors import RlhfkitError

    path = tmp_path / "d.jsonl"
    first = b'{"text": "fine"}\n'
    second = b'{"text": "caf\xe9"}\n'  # Latin-1, not UTF-8
    path.write_bytes(first * 3000 + second)
    with pytest.raises(RlhfkitError) as error:
        list(read_jsonl(path))
    message = str(error.value)
    assert message.startswith(f"{path}:3001: not UTF-8 text")
    assert "byte 0xe9 at column 14" in message
    assert f"byte offset {len(first) * 3000 + 13} in the file" in message


def test_a_directory_given_as_a_jsonl_file_says_so(tmp_path):
    from rlhfkit.data.jsonl import read_jsonl
    from rlhfkit.errors import RlhfkitError

    with pytest.raises(RlhfkitError, match="is a directory, expected a JSONL file"):
        list(read_jsonl(tmp_path))
    with pytest.raises(RlhfkitError, match="file not found"):
        list(read_jsonl(tmp_path / "missing.jsonl"))


def test_a_command_module_that_fails_to_import_is_an_error(monkeypatch):
    from rlhfkit import cli

    monkeypatch.setattr(cli, "COMMAND_MODULES", [*cli.COMMAND_MODULES, "rlhfkit.no_such_stage.commands"])
    with pytest.raises(ModuleNotFoundError, match="no_such_stage"):
        cli.build_parser()  # before: the subcommand vanished silently from `rlhfkit --help`


def test_label_has_no_annotators_choice_in_its_help(capsys):
    with pytest.raises(SystemExit):
        main(["label", "--help"])
    assert "--annotators" not in capsys.readouterr().out


def test_command_modules_lists_every_stage_commands_module():
    from pathlib import Path

    from rlhfkit import cli

    root = Path(cli.__file__).parent
    found = {
        "rlhfkit." + ".".join(p.relative_to(root).with_suffix("").parts) for p in root.rglob("commands.py")
    }
    assert found == set(cli.COMMAND_MODULES)


TORCH_OOM = (
    "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 139.81 GiB of which "
    "1.02 GiB is free.\nOf the allocated memory 130.2 GiB is allocated by PyTorch."
)


@pytest.mark.parametrize(
    ("argv", "target", "flags", "absent"),
    [
        (
            ["ppo", "--policy", "p", "--reward", "r", "--prompts", "x.jsonl"],
            "rlhfkit.ppo.trainer.run",
            [
                "--minibatch-size",
                "--forward-batch-size",
                "--gradient-checkpointing",
                "--lora-r 16",
                "--dtype bfloat16",
            ],
            "--micro-batch-size",
        ),
        (
            ["reward", "train", "--model", "m", "--data", "pairs.jsonl"],
            "rlhfkit.reward.train.run",
            ["--micro-batch-size", "--gradient-checkpointing", "--lora-r 16", "--dtype bfloat16"],
            "--minibatch-size",
        ),
    ],
)
def test_cuda_out_of_memory_is_one_line_naming_the_command_and_how_to_fit(
    run_cli, monkeypatch, argv, target, flags, absent
):
    import torch

    def run_out_of_memory(config):
        raise torch.cuda.OutOfMemoryError(TORCH_OOM)

    monkeypatch.setattr(target, run_out_of_memory)
    code, err = run_cli(*argv)
    assert code == 1
    assert "Traceback" not in err and err.count("\n") == 1, err
    command = " ".join(argv[: 2 if argv[0] == "reward" else 1])
    assert err.startswith(f"rlhfkit: error: `rlhfkit {command}` ran out of GPU memory (CUDA out of memory.")
    assert "Tried to allocate 2.00 GiB" in err
    for flag in flags:  # only flags the command has
        assert flag in err, (flag, err)
    assert absent not in err
