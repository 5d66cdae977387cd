"""`rlhfkit evaluate --judge openai:URL#MODEL`: a pairwise LLM judge through the CAI labeler machinery, against a
fake OpenAI-compatible server on loopback. Both orders cancel position bias; a judge that prefers one model's
answers makes it win; the prompt template file is what the judge is asked."""

from __future__ import annotations

import importlib
import json
import math
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from rlhfkit.cli import main
from rlhfkit.data.jsonl import write_jsonl
from rlhfkit.errors import RlhfkitError
from rlhfkit.evaluate import EvalConfig, run
from rlhfkit.evaluate.judges import fill_judge_prompt, load_judge_prompt

run_module = importlib.import_module("rlhfkit.evaluate.run")  # the module (the package exports its `run`)
PROMPTS = [
    {
        "id": f"q{i}",
        "category": "cat" if i % 2 else "dog",
        "messages": [{"role": "user", "content": f"Question {i}?"}],
    }
    for i in range(6)
]


class FakeJudge:
    """An OpenAI-compatible /v1/chat/completions on 127.0.0.1 that answers "(A)" or "(B)" with log-probs:
    `p_a(request text)` is its P("(A)")."""

    def __init__(self, p_a: Callable[[str], float]):
        self.p_a = p_a
        self.requests: list[dict] = []
        judge = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                judge.requests.append({"path": self.path, **body})
                p = judge.p_a(body["messages"][-1]["content"])
                letter = "A" if p >= 0.5 else "B"
                top = [
                    {"token": "A", "logprob": math.log(max(p, 1e-9))},
                    {"token": "B", "logprob": math.log(max(1 - p, 1e-9))},
                ]
                content = [{"token": letter, "logprob": math.log(max(p, 1 - p)), "top_logprobs": top}]
                reply = {"choices": [{"index": 0, "message": {"role": "assistant", "content": f"({letter})"},
                                      "logprobs": {"content": content}}]}  # fmt: skip
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.spec = f"openai:http://127.0.0.1:{self.server.server_address[1]}/v1#judge"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_judge():
    servers = []

    def start(p_a):
        servers.append(FakeJudge(p_a))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def shown_as_a(text: str) -> str:
    """The response the judge's request shows as (A) (the default template puts it on a line of its own)."""
    return text.split("\n(A) ", 1)[1].split("\n", 1)[0]


@pytest.fixture
def canned(monkeypatch):
    """Models whose answers are fixed texts: the model named "good" answers "good answer N", and so on."""

    def fake_generate(name, folder, prompts, cfg, progress=None):
        texts = [f"{name} answer {i}" for i in range(len(prompts))]
        stats = {
            "seconds": 0.0,
            "tokens": 3 * len(texts),
            "tokens_per_s": 0.0,
            "mean_tokens": 3.0,
            "truncated": 0.0,
        }
        return {"texts": texts, "finish": ["stop"] * len(texts), "tokens": [3] * len(texts), "stats": stats}

    monkeypatch.setattr(run_module, "generate_responses", fake_generate)


def _models(tmp_path: Path, *names: str) -> dict[str, str]:
    out = {}
    for name in names:  # _check wants checkpoint folders; the canned generator never loads them
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
        (tmp_path / name / "model.safetensors").write_bytes(b"")  # a complete save has weights beside it
        out[name] = str(tmp_path / name)
    return out


def _config(tmp_path: Path, models: dict[str, str], judge: str, **kw) -> EvalConfig:
    prompts = tmp_path / "prompts.jsonl"
    write_jsonl(prompts, PROMPTS)
    # kl=False: the canned models have no weights to take the KL to the first one with
    return EvalConfig(models=models, prompts=str(prompts), out=str(tmp_path / "eval"), judge=judge,
                      bootstrap=50, quiet=True, kl=False, **kw)  # fmt: skip


def test_an_always_a_judge_gives_ties_and_one_half(tmp_path, canned, fake_judge):
    server = fake_judge(lambda text: 1.0)
    results = run(_config(tmp_path, _models(tmp_path, "base", "sft"), server.spec))
    assert results["pair_counts"]["sft"]["base"] == {"wins": 0, "ties": 6, "losses": 0, "win_rate": 0.5}
    assert results["win_rates"]["base"]["sft"] == 0.5
    assert len(server.requests) == 12  # 6 prompts x both orders
    shown_first = [shown_as_a(r["messages"][-1]["content"]).split()[0] for r in server.requests]
    assert shown_first.count("base") == 6 and shown_first.count("sft") == 6
    line = json.loads((tmp_path / "eval" / "responses.jsonl").read_text().splitlines()[0])
    assert line["judgements"]["base vs sft"] == {
        "p": 0.5,
        "outcome": 0.5,
        "as_a": 1.0,
        "as_b": 0.0,
        "method": "logprobs",
    }


def test_a_judge_that_prefers_one_models_answers_makes_it_win(tmp_path, canned, fake_judge):
    # likes "good" answers, with a bias toward (A): P(A) = .8 when good is (A), .3 when it is (B)
    server = fake_judge(lambda text: 0.8 if shown_as_a(text).startswith("good") else 0.3)
    cfg = _config(tmp_path, _models(tmp_path, "bad", "good", "meh"), server.spec)
    results = run(cfg)
    assert results["pair_counts"]["good"]["bad"] == {"wins": 6, "ties": 0, "losses": 0, "win_rate": 1.0}
    assert results["win_rates"]["good"]["meh"] == 1.0
    # neither bad nor meh is "good": the judge's P(A) is .3 in both orders, which cancels to a tie
    assert results["pair_counts"]["bad"]["meh"]["ties"] == 6
    ranking = results["ranking"]
    assert (
        ranking[0]["model"] == "good"
        and ranking[0]["elo_low"] > max(r["elo_high"] for r in ranking[1:]) - 1e-9
    )
    assert results["mean_score"]["good"] == pytest.approx(0.75)  # P(good better) = (.8 + .7) / 2 per opponent
    assert results["by_category"]["cat"]["win_rates"]["good"]["bad"] == 1.0
    line = json.loads((tmp_path / "eval" / "responses.jsonl").read_text().splitlines()[0])
    assert line["judgements"]["bad vs good"]["p"] == pytest.approx(0.25)
    assert results["judge_template"] == load_judge_prompt()


def test_the_prompt_file_is_what_the_judge_is_asked(tmp_path, canned, fake_judge):
    template = tmp_path / "judge.txt"
    template.write_text(
        "Pick the reply that is SHORTER.\n{conversation}\nFirst: {response_a}\nSecond: {response_b}\nAnswer (A) or (B)."
    )

    # this judge reads the custom layout, and prefers whichever reply is shorter
    def p_a(text: str) -> float:
        assert text.startswith("Pick the reply that is SHORTER.\nUser: Question")
        a, b = text.split("First: ")[1].split("\nSecond: ")
        b = b.split("\nAnswer")[0]
        return 0.9 if len(a) < len(b) else 0.1

    server = fake_judge(p_a)
    models = _models(tmp_path, "ab", "abcdef")  # "ab answer N" is the shorter text
    assert main(["evaluate", "--model", f"ab={models['ab']}", "--model", f"abcdef={models['abcdef']}",
                 "--prompts", _prompts(tmp_path),
                 "--out", str(tmp_path / "eval"), "--judge", server.spec, "--judge-prompt", str(template),
                 "--bootstrap", "20", "--quiet", "--no-kl", "--report"]) == 0  # fmt: skip
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["win_rates"]["ab"]["abcdef"] == 1.0
    assert results["config"]["judge_prompt"] == str(template)
    assert all(
        r["messages"][-1]["content"].startswith("Pick the reply that is SHORTER.") for r in server.requests
    )
    assert (tmp_path / "eval" / "report.html").is_file()


def _prompts(tmp_path: Path) -> str:
    write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    return str(tmp_path / "prompts.jsonl")


def test_fill_keeps_responses_verbatim_and_bad_templates_are_clear_errors(tmp_path, canned):
    text = fill_judge_prompt(
        [{"role": "user", "content": "hi"}], "{conversation}|{response_a}|{response_b}", "{response_b}", "x"
    )
    assert text == "User: hi|{response_b}|x"
    bad = tmp_path / "bad.txt"
    bad.write_text("Compare {response_a} with {response_b}.")
    with pytest.raises(RlhfkitError, match=r"--judge-prompt: .*bad.txt: the template lacks \{conversation\}"):
        load_judge_prompt(bad)
    with pytest.raises(RlhfkitError, match="--judge-prompt: .*missing.txt: file not found"):
        load_judge_prompt(tmp_path / "missing.txt")
    with pytest.raises(RlhfkitError, match=r"--judge 'openai:http://h/v1': expected openai:URL#MODEL"):
        run(_config(tmp_path, _models(tmp_path, "a", "b"), "openai:http://h/v1"))
    with pytest.raises(RlhfkitError, match="a pairwise judge needs at least two --model"):
        run(_config(tmp_path, {"a": str(tmp_path / "a")}, "openai:http://h/v1#m"))
