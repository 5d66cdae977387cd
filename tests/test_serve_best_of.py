"""`serve --reranker DIR --best-of NAME=N`: chat replies picked by a reward model among several samples."""

from __future__ import annotations

from types import SimpleNamespace

import openai
import pytest

from conftest import saved_reward_model
from rlhfkit.errors import RlhfkitError
from rlhfkit.generation.best_of import ranked
from rlhfkit.serve.best_of import attach_reranker, best_of_for, parse_best_of
from serve_helpers import build_checkpoints, running_server

QUESTION = [{"role": "user", "content": "What does the cat do?"}]
SAMPLING = dict(temperature=1.0, max_tokens=10, seed=11)


@pytest.fixture(scope="module")
def served(tokenizer_dir, tmp_path_factory):
    checkpoints = build_checkpoints(tokenizer_dir, tmp_path_factory.mktemp("serve_models"))
    # The chat model twice: as itself, and answering as best-of-4. The reranker is the base checkpoint with
    # a random scalar head, saved (the real scoring path, arbitrary but fixed scores).
    folders = {"chat": checkpoints["chat"], "chat-bo4": checkpoints["chat"]}
    reranker = saved_reward_model(checkpoints["base"], tmp_path_factory.mktemp("reranker"))
    with running_server(folders) as (url, models):
        attach_reranker(models, str(reranker), {"chat-bo4": 4})
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=60)
        yield client, reranker


def _reranker_order(rm_dir, texts: list[str], finished: list[bool]) -> list[int]:
    import torch

    from rlhfkit.reward.model import load_reward_model, score_conversations
    from rlhfkit.train.precision import Precision

    rm, tok = load_reward_model(rm_dir)
    # the precision `evaluate --best-of` scores in (bf16 on a CPU with native bf16): the server must match it
    bf16 = Precision.of(torch.device("cpu"), "auto").scorer_bf16
    items = [(QUESTION, [{"role": "assistant", "content": t}]) for t in texts]
    scores = score_conversations(rm, tok, items, 128, bf16=bf16)
    return ranked(scores, finished)


def test_a_best_of_model_answers_with_the_reranker_s_favourite_of_its_samples(served):
    client, rm_dir = served
    # The plain model's n=4 choices are sampled with seeds 11..14: the same four rows best-of-4 samples.
    four = client.chat.completions.create(model="chat", messages=QUESTION, n=4, **SAMPLING)
    texts = [c.message.content for c in four.choices]
    assert len(set(texts)) > 1  # the samples differ, so the pick means something
    order = _reranker_order(rm_dir, texts, [c.finish_reason == "stop" for c in four.choices])

    best = client.chat.completions.create(model="chat-bo4", messages=QUESTION, **SAMPLING)
    assert [c.message.content for c in best.choices] == [texts[order[0]]]
    assert best.usage.completion_tokens == four.usage.completion_tokens  # every sampled token is counted

    two = client.chat.completions.create(
        model="chat", messages=QUESTION, n=2, extra_body={"best_of": 4}, **SAMPLING
    )
    assert [c.message.content for c in two.choices] == [texts[i] for i in order[:2]]
    assert [c.index for c in two.choices] == [0, 1]


def test_best_of_requests_the_server_cannot_do_get_a_400(served):
    client, _ = served
    with pytest.raises(openai.BadRequestError, match="greater than or equal to 'n'"):
        client.chat.completions.create(model="chat", messages=QUESTION, n=3, extra_body={"best_of": 2})
    with pytest.raises(openai.BadRequestError, match="integer from 1 to 20"):
        client.chat.completions.create(model="chat", messages=QUESTION, extra_body={"best_of": 21})
    # The same model without best-of still streams token by token.
    stream = client.chat.completions.create(model="chat", messages=QUESTION, stream=True, max_tokens=4)
    assert any(chunk.choices and chunk.choices[0].finish_reason for chunk in stream)


def test_a_streamed_best_of_reply_is_the_picked_one_sent_whole(served):
    client, _ = served
    whole = client.chat.completions.create(model="chat-bo4", messages=QUESTION, **SAMPLING)
    chunks = list(
        client.chat.completions.create(
            model="chat-bo4",
            messages=QUESTION,
            stream=True,
            stream_options={"include_usage": True},
            **SAMPLING,
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert text == whole.choices[0].message.content and finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_best_of_needs_a_reranker_and_a_served_name():
    no_reranker = SimpleNamespace(name="m", reranker=None, best_of=1)
    request = SimpleNamespace(model_extra={"best_of": 4}, stream=False)
    with pytest.raises(Exception, match="--reranker"):
        best_of_for(no_reranker, request, 1)
    assert best_of_for(no_reranker, SimpleNamespace(model_extra={}, stream=True), 2) == 2
    with pytest.raises(RlhfkitError, match="no --model is served as 'rs'"):
        parse_best_of(["rs=8"], ["sft"], "runs/demo/reward")
    with pytest.raises(RlhfkitError, match="needs --reranker"):
        parse_best_of(["sft=8"], ["sft"], None)
    assert parse_best_of(["sft=8"], ["sft"], "rm") == {"sft": 8}
