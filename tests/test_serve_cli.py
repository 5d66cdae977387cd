"""`rlhfkit serve` as a real process, its argument errors, and examples/try_it_yourself.py end to end."""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
from pathlib import Path

import openai
import pytest

from rlhfkit.cli import main
from serve_helpers import build_checkpoints, running_server, wait_until_healthy

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "try_it_yourself.py"


@pytest.fixture(scope="module")
def checkpoints(tokenizer_dir, tmp_path_factory):
    return build_checkpoints(tokenizer_dir, tmp_path_factory.mktemp("serve_models"))


def load_example():
    spec = importlib.util.spec_from_file_location("try_it_yourself", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_command_runs_a_real_server_with_aliases_and_a_key(checkpoints):
    port = free_port()
    command = [
        sys.executable, "-m", "rlhfkit.cli", "serve",
        "--model", f"gpt-3.5-turbo-instruct={checkpoints['base']}",
        "--model", f"gpt-4o={checkpoints['chat']}",
        "--model", f"gpt-4o-mini={checkpoints['chat']}",
        "--port", str(port), "--api-key", "sk-local",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until_healthy(process, port)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-local", max_retries=0)
        assert [m.id for m in client.models.list().data] == [
            "gpt-3.5-turbo-instruct",
            "gpt-4o",
            "gpt-4o-mini",
        ]
        messages = [{"role": "user", "content": "What does the cat do?"}]
        answers = [
            client.chat.completions.create(model=name, messages=messages, temperature=0)
            .choices[0]
            .message.content
            for name in ("gpt-4o", "gpt-4o-mini")
        ]
        assert answers[0] == answers[1] and answers[0]  # two aliases of one folder: one model
        completion = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="The cat", max_tokens=4)
        assert completion.usage.completion_tokens >= 1
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(
                base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-other", max_retries=0
            ).models.list()
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def test_serve_argument_errors_are_one_line(tmp_path, capsys):
    assert main(["serve", "--model", f"x={tmp_path / 'missing'}"]) == 1
    assert "model folder not found" in capsys.readouterr().err
    assert main(["serve", "--model", "=somewhere"]) == 1
    assert "expected NAME=DIR" in capsys.readouterr().err
    assert main(["serve", "--model", "x=somewhere", "--shutdown-grace", "-1"]) == 1
    assert "--shutdown-grace: expected a number of seconds >= 0, got -1" in capsys.readouterr().err
    assert main(["serve", "--model", "x=somewhere", "--max-waiting-per-client", "0"]) == 1
    assert "--max-waiting-per-client: expected an integer >= 1, got 0" in capsys.readouterr().err


def test_try_it_yourself_runs_end_to_end(checkpoints, capsys):
    example = load_example()
    with running_server(checkpoints) as (url, _):
        code = example.main(
            ["--base-url", url, "--base", "base", "--rlhf", "chat", "--max-tokens", "12", "--width", "200"]
        )
        out = capsys.readouterr().out
        assert code == 0, out
        for title in ("1. A bare topic", "2. Questions nobody can answer", "3. One question, two personas"):
            assert title in out
        assert "base (base)" in out and "RLHF (chat)" in out
        assert "Bouvet" in out and "terse expert" in out
        # The RLHF column shows the chat model's real answer.
        client = openai.OpenAI(base_url=url, api_key="x", max_retries=0)
        answer = client.chat.completions.create(
            model="chat",
            messages=[{"role": "user", "content": "Jupiter"}],
            max_tokens=12,
            temperature=0,
            seed=0,
        )
        assert answer.choices[0].message.content.split()[0] in out

        assert example.main(["--base-url", url, "--base", "base", "--rlhf", "gpt-4o"]) == 1
        assert "does not serve gpt-4o" in capsys.readouterr().out
    assert example.main(["--base-url", f"http://127.0.0.1:{free_port()}/v1"]) == 1
    assert "No server at" in capsys.readouterr().out
