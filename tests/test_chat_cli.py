"""`rlhfkit chat` driven through a pseudo-terminal, as a person would use it; exits cleanly on EOF."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time

from transformers import AutoTokenizer

from rlhfkit.artifacts import save_hf_checkpoint
from rlhfkit.models import build_model


def _read_until(fd: int, needle: bytes, timeout: float = 60) -> bytes:
    buf = b""
    end = time.time() + timeout
    while needle not in buf:
        if time.time() > end:
            raise AssertionError(f"timed out waiting for {needle!r}; got {buf[-500:]!r}")
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
    return buf


def type_lines(monkeypatch, typed: list[str]) -> None:
    """`input()` answers with these lines, one per call, then EOF (Ctrl-D), echoing its prompt as a terminal would."""
    lines = iter(typed)

    def answer(prompt=""):
        print(prompt, end="")
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    monkeypatch.setattr("builtins.input", answer)


def test_chat_in_a_pty_answers_resets_and_exits_on_eof(tmp_path, tokenizer_dir):
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    save_hf_checkpoint(build_model("micro", len(tok), 128, tok), tok, tmp_path / "m")
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "rlhfkit.cli", "chat", "--model", str(tmp_path / "m"), "--system", "Be brief.",
         "--max-new-tokens", "5"],
        stdin=follower, stdout=follower, stderr=follower, close_fds=True,
    )  # fmt: skip
    os.close(follower)
    try:
        assert b"chat mode" in _read_until(leader, b"you> ")
        os.write(leader, b"Who sells bread?\n")
        assert b"assistant> " in _read_until(leader, b"you> ")
        os.write(leader, b"/reset\n")
        assert b"conversation cleared" in _read_until(leader, b"you> ")
        os.write(leader, b"\x04")  # Ctrl-D: EOF at an empty prompt
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(leader)


def test_chat_answers_as_best_of_n_with_a_reranker(tmp_path, tokenizer_dir, monkeypatch, capsys):
    from conftest import saved_reward_model
    from rlhfkit.cli import main
    from rlhfkit.generation import SamplingParams, generate_chat
    from rlhfkit.generation.best_of import pick_best_of
    from rlhfkit.generation.loading import load_for_generation

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    save_hf_checkpoint(build_model("micro", len(tok), 128, tok), tok, tmp_path / "m")
    rm = saved_reward_model(tmp_path / "m", tmp_path / "rm")
    command = ["chat", "--model", str(tmp_path / "m"), "--max-new-tokens", "5", "--best-of", "4"]
    assert main(command) != 0
    assert "needs --reranker" in capsys.readouterr().err
    type_lines(monkeypatch, ["Who sells bread?"])
    # In this process, so that the replies below are sampled with the same kernels and threads as the chat's.
    assert main([*command, "--reranker", str(rm)]) == 0
    said = capsys.readouterr().out

    # What it must have said: 4 replies drawn as chat draws its first turn, the reward model's favourite kept.
    model, tokenizer = load_for_generation(str(tmp_path / "m"))
    history = [{"role": "user", "content": "Who sells bread?"}]
    params = SamplingParams(max_new_tokens=5, temperature=0.7, top_p=0.95, seed=0)
    drawn = generate_chat(model, tokenizer, [history] * 4, params)
    best = pick_best_of(drawn, [history], 4, str(rm))[0][0]
    assert f"assistant> {best.text}\n" in said
    assert len({d.text for d in drawn}) > 1  # the samples differ, so the pick means something


def test_chat_with_tools_runs_the_models_calls_and_keeps_them_in_the_conversation(
    tmp_path, monkeypatch, capsys
):
    """The sampler is scripted (a random micro model makes no calls): the first turn of each reply looks up a
    product, the next answers. The lookup is run by the world's tool, shown, and seen by the next turn; the
    second question's context holds the first reply's call and result."""
    import json

    from conftest import WORDS
    from rlhfkit.cli import main
    from rlhfkit.data.tool_calls import ToolCall, call_text
    from rlhfkit.evaluate import tool_episodes
    from rlhfkit.generation import Completion
    from rlhfkit.tokenizer import train_tokenizer
    from rlhfkit.world.tools import lookup

    corpus = tmp_path / "corpus.txt"
    corpus.write_text((" ".join(WORDS) + ".\n") * 40)
    tok = train_tokenizer(corpus, 300, tmp_path / "m")
    save_hf_checkpoint(build_model("micro", len(tok), 2048, tok), tok, tmp_path / "m")
    price = json.loads(lookup({"item": "Lomar K3 phone"}))["price"]
    contexts: list[str] = []

    def generate(model, ids, params, **_kw):
        out = []
        for row in ids:
            text = tok.decode(row)
            contexts.append(text)
            called = text.rfind("<|tool|>") > text.rfind("<|user|>")  # this reply has made its call
            reply = (
                f"It costs ${price}." if called else call_text(ToolCall("lookup", {"item": "Lomar K3 phone"}))
            )
            out.append(
                Completion(
                    tok(reply, add_special_tokens=False)["input_ids"]
                    + [tok.convert_tokens_to_ids("<|end|>")],
                    [],
                    "stop",
                    reply,
                )
            )
        return out

    monkeypatch.setattr(tool_episodes, "generate", generate)
    type_lines(monkeypatch, ["How much is a Lomar K3 phone?", "Why?"])
    assert main(["chat", "--model", str(tmp_path / "m"), "--tools", "--raw"]) != 0
    assert "--tools: chat mode" in capsys.readouterr().err
    assert main(["chat", "--model", str(tmp_path / "m"), "--tools"]) == 0
    said = capsys.readouterr().out
    assert said.count('call> {"name": "lookup", "arguments": {"item": "Lomar K3 phone"}}') == 2
    assert said.count(f'tool> {{"item": "Lomar K3 phone", "price": {price}}}') == 2
    assert said.count(f"assistant> It costs ${price}.") == 2
    second = [c for c in contexts if "Why?" in c][
        0
    ]  # the second reply's first turn sees the first's tool use
    assert "Lomar K3 phone" in second and f'"price": {price}' in second and "It costs" in second
