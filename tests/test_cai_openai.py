"""The OpenAI-compatible endpoint labeler against a fake server: log-probs when given, sampled votes otherwise."""

from __future__ import annotations

import json
import math

import httpx
import pytest

from rlhfkit.cai.constitution import load_constitution
from rlhfkit.cai.label import LabelConfig, label_pairs, run_label
from rlhfkit.cai.labelers import OpenAILabeler, letter_probabilities, parse_openai_spec
from rlhfkit.data.comparisons import load_comparisons
from rlhfkit.data.jsonl import write_jsonl
from rlhfkit.errors import RlhfkitError

PROMPT = [{"role": "user", "content": "Who bakes bread?"}]
CANDIDATES = [
    {"id": "c0", "prompt": PROMPT, "category": "factual",
     "completions": [[{"role": "assistant", "content": "bad: a cat"}], [{"role": "assistant", "content": "good: the baker"}]]},
]  # fmt: skip
URL = "http://labeler.test/v1"


def _p_a(text: str) -> float:
    """The fake model: likes the 'good' response (0.8 when it is (A), 0.7 when it is (B): a bias toward A)."""
    return 0.8 if "(A) good" in text else 0.3


class FakeServer:
    def __init__(self, mode: str):
        self.mode = mode  # "chat", "completions", "no-logprobs", "reject-logprobs", "ignore-n"
        self.requests: list[dict] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.requests.append({"path": request.url.path, **body})
        text = body["messages"][-1]["content"] if "messages" in body else body["prompt"]
        p = _p_a(text)
        if body.get("temperature", 1.0) == 0:  # the log-prob request
            if self.mode == "reject-logprobs":
                return httpx.Response(400, json={"error": {"message": "logprobs is not supported"}})
            if self.mode == "completions":
                tops = [
                    {" (": -0.01},
                    {"A": math.log(p * 0.9), "B": math.log((1 - p) * 0.9), "C": math.log(0.1)},
                    {")": 0.0},
                ]
                lp = {"tokens": [" (", "A" if p > 0.5 else "B", ")"], "token_logprobs": [-0.01, math.log(max(p, 1 - p) * 0.9), 0.0],
                      "top_logprobs": tops}  # fmt: skip
                return httpx.Response(200, json={"choices": [{"text": " (A)", "index": 0, "logprobs": lp}]})
            if self.mode == "chat":
                letter = "A" if p > 0.5 else "B"
                content = [
                    {"token": "(", "logprob": -0.01, "top_logprobs": [{"token": "(", "logprob": -0.01}]},
                    {"token": letter, "logprob": math.log(max(p, 1 - p) * 0.9),
                     "top_logprobs": [{"token": "A", "logprob": math.log(p * 0.9)},
                                      {"token": "B", "logprob": math.log((1 - p) * 0.9)},
                                      {"token": "I", "logprob": math.log(0.1)}]},
                    {"token": ")", "logprob": 0.0, "top_logprobs": []},
                ]  # fmt: skip
                choice = {"index": 0, "message": {"role": "assistant", "content": f"({letter})"},
                          "logprobs": {"content": content}}  # fmt: skip
                return httpx.Response(200, json={"choices": [choice]})
            return httpx.Response(200, json={"choices": [{"index": 0, "message": {"role": "assistant", "content": "(A)"},
                                                          "logprobs": None}]})  # fmt: skip
        # sampled votes: a deterministic share of "(A)" among n replies (8 -> round(8p))
        n = 1 if self.mode == "ignore-n" else body.get("n", 1)
        already = sum(
            1
            for r in self.requests[:-1]
            if r.get("temperature") == 1.0 and r["messages"][-1]["content"] == text
        )
        replies = []
        for k in range(n):
            idx = already + k if self.mode == "ignore-n" else k
            replies.append("(A) I think" if idx < round(8 * p) else "B")
        return httpx.Response(200, json={"choices": [{"index": k, "message": {"role": "assistant", "content": r}}
                                                     for k, r in enumerate(replies)]})  # fmt: skip


def _labeler(server: FakeServer, **kw) -> OpenAILabeler:
    client = httpx.Client(transport=httpx.MockTransport(server))
    return OpenAILabeler(URL, "judge-model", client=client, concurrency=1, **kw)


def _label(labeler, k: int = 2) -> dict:
    comps, _ = label_pairs(CANDIDATES, labeler, load_constitution(), LabelConfig(principles_per_pair=k))
    return comps[0]


def test_chat_logprobs_give_normalized_soft_labels():
    server = FakeServer("chat")
    rec = _label(_labeler(server))
    # good as (A): P(A) = .8; good as (B): P(B) = .7 -> (.8 + .7) / 2 for every principle
    assert rec["label"] == pytest.approx(0.75, abs=1e-6)
    assert rec["chosen"][0]["content"].startswith("good")
    assert rec["meta"]["cai"]["method"] == ["logprobs"]
    assert rec["meta"]["cai"]["option_mass"] == pytest.approx(0.9, abs=1e-6)
    first = server.requests[0]
    assert first["path"] == "/v1/chat/completions" and first["model"] == "judge-model"
    assert first["logprobs"] is True and first["top_logprobs"] == 10 and first["temperature"] == 0
    assert len(server.requests) == 4  # 2 principles x 2 orders


def test_completions_api_logprobs():
    server = FakeServer("completions")
    rec = _label(_labeler(server, api="completions"), k=1)
    assert rec["label"] == pytest.approx(0.75, abs=1e-6)
    assert server.requests[0]["path"] == "/v1/completions" and server.requests[0]["logprobs"] == 10
    assert server.requests[0]["prompt"].endswith("Answer with (A) or (B).\n\nAnswer:")


@pytest.mark.parametrize("mode", ["no-logprobs", "reject-logprobs", "ignore-n"])
def test_sampled_votes_when_the_server_has_no_logprobs(mode):
    server = FakeServer("no-logprobs" if mode == "ignore-n" else mode)
    labeler = _labeler(server, votes=8)
    if mode == "ignore-n":
        server.mode = "ignore-n"
        labeler.logprobs_supported = False
    rec = _label(labeler, k=1)
    # good as (A): round(8 * .8) = 6 of 8 votes; good as (B): 8 - round(8 * .3) = 6 of 8 -> 0.75
    assert rec["label"] == pytest.approx(0.75)
    assert rec["meta"]["cai"]["method"] == ["votes"]
    assert labeler.logprobs_supported is False
    votes = [r for r in server.requests if r.get("temperature") == 1.0]
    if mode == "ignore-n":
        assert len(votes) == 16  # one reply per request: 8 requests per question
    else:
        assert len(votes) == 2 and all(r["n"] == 8 for r in votes)
        assert len([r for r in server.requests if r.get("temperature") == 0]) == 1  # learned after one try


def test_always_a_endpoint_cancels_to_one_half():
    def always_a(request: httpx.Request) -> httpx.Response:
        content = [{"token": "(A)", "logprob": -0.1, "top_logprobs": [{"token": "(A)", "logprob": -0.1},
                                                                      {"token": "(B)", "logprob": -5.0}]}]  # fmt: skip
        return httpx.Response(
            200, json={"choices": [{"message": {"content": "(A)"}, "logprobs": {"content": content}}]}
        )

    labeler = OpenAILabeler(URL, "m", client=httpx.Client(transport=httpx.MockTransport(always_a)))
    assert _label(labeler, k=3)["label"] == pytest.approx(0.5)


def test_run_label_with_endpoint_writes_loadable_comparisons(tmp_path):
    cands = tmp_path / "cands.jsonl"
    write_jsonl(cands, CANDIDATES)
    out = tmp_path / "out.jsonl"
    result = run_label(
        LabelConfig(candidates=str(cands), out=str(out), principles_per_pair=2), _labeler(FakeServer("chat"))
    )
    assert result["pairs"] == 1
    (group,) = load_comparisons(out)
    assert group.pairs[0].target == pytest.approx(0.75, abs=1e-6)
    assert group.annotator == f"ai:openai:{URL}#judge-model"


def test_http_errors_are_clear():
    def broken(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, text="boom")

    with pytest.raises(RlhfkitError, match="answered HTTP 500: boom"):
        _label(OpenAILabeler(URL, "m", client=httpx.Client(transport=httpx.MockTransport(broken))))

    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    with pytest.raises(RlhfkitError, match="could not reach the labeler endpoint"):
        _label(OpenAILabeler(URL, "m", client=httpx.Client(transport=httpx.MockTransport(unreachable))))


def test_spec_parsing():
    assert parse_openai_spec("openai:http://127.0.0.1:8000/v1/#sft") == ("http://127.0.0.1:8000/v1", "sft")
    assert parse_openai_spec("openai:https://h/v1#org/model#2") == ("https://h/v1#org/model", "2")
    for bad in ("openai:http://h/v1", "openai:#m", "openai:ftp://h#m"):
        with pytest.raises(RlhfkitError, match="--labeler"):
            parse_openai_spec(bad)


def test_letter_probabilities_reads_the_deciding_position():
    ln = math.log
    # a leading blank and "(" before the letter; alternatives spelled in several ways
    positions = [
        (" (", {" (": ln(0.9), " I": ln(0.1)}),
        ("A", {"A": ln(0.5), "A)": ln(0.1), "B": ln(0.3)}),
        (")", {")": 0.0}),
    ]
    assert letter_probabilities(positions) == pytest.approx((0.6, 0.3))
    assert letter_probabilities([("(A", {"(A": ln(0.6), "(B": ln(0.2)})]) == pytest.approx((0.6, 0.2))
    assert letter_probabilities([("I", {"I": ln(0.9)}), (" think", {" think": 0.0})]) is None
