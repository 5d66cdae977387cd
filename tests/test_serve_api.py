"""The OpenAI-compatible API, driven by the official `openai` client against a real server on loopback."""

from __future__ import annotations

import json
import threading

import httpx
import openai
import pytest
import torch

from rlhfkit.generation import SamplingParams, generate_text
from serve_helpers import build_checkpoints, running_server

QUESTION = [{"role": "user", "content": "What does the cat do?"}]


@pytest.fixture(scope="module")
def server(tokenizer_dir, tmp_path_factory):
    checkpoints = build_checkpoints(tokenizer_dir, tmp_path_factory.mktemp("serve_models"))
    with running_server(checkpoints) as (url, models):
        yield url, models


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server[0], api_key="unused", max_retries=0, timeout=60)


def test_lists_models_with_their_stage_and_context(client):
    models = client.models.list().data
    assert [m.id for m in models] == ["base", "chat"]
    assert all(m.object == "model" and m.owned_by == "rlhfkit" for m in models)
    card = client.models.retrieve("chat")
    assert card.id == "chat" and card.stage == "ppo" and card.max_model_len == 128
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-5")


def test_completion_equals_the_generation_engine_and_counts_usage(client, server):
    served = server[1]["base"]
    result = client.completions.create(
        model="base", prompt="The farmer", max_tokens=12, temperature=0.9, seed=7
    )
    params = SamplingParams(max_new_tokens=12, temperature=0.9, seed=7, stop_token_ids=served.stop_token_ids)
    expected = generate_text(served.model, served.tokenizer, ["The farmer"], params)[0]
    choice = result.choices[0]
    assert result.object == "text_completion" and result.model == "base"
    assert choice.text == expected.text
    assert choice.finish_reason == expected.finish_reason
    prompt_tokens = len(served.tokenizer("The farmer")["input_ids"])
    assert result.usage.prompt_tokens == prompt_tokens
    assert result.usage.completion_tokens == len(expected.token_ids)
    assert result.usage.total_tokens == prompt_tokens + len(expected.token_ids)


def test_finish_reason_length_and_stop(client):
    short = client.completions.create(model="base", prompt="The cat", max_tokens=3, temperature=0)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 3
    # The chat model was trained to end its turn with <|end|>: the turn ends by itself.
    reply = client.chat.completions.create(model="chat", messages=QUESTION, max_tokens=40, temperature=0)
    assert reply.choices[0].finish_reason == "stop"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content.strip()
    assert "<|end|>" not in reply.choices[0].message.content
    assert reply.usage.completion_tokens < 40


def test_stop_strings_cut_the_text_before_the_stop(client):
    full = client.completions.create(model="base", prompt="The baker", max_tokens=20, temperature=0)
    text = full.choices[0].text
    stop = text[4:7]
    assert stop.strip(), text
    cut = client.completions.create(
        model="base", prompt="The baker", max_tokens=20, temperature=0, stop=[stop]
    )
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].text == text[: text.index(stop)]
    chat_full = client.chat.completions.create(model="chat", messages=QUESTION, temperature=0)
    chat_cut = client.chat.completions.create(model="chat", messages=QUESTION, temperature=0, stop=" ")
    assert chat_cut.choices[0].message.content == chat_full.choices[0].message.content.split(" ")[0]
    assert chat_cut.choices[0].finish_reason == "stop"


def test_streamed_chunks_reassemble_to_the_whole_answer(client):
    for temperature, seed in ((0.0, None), (1.0, 3)):
        whole = client.completions.create(
            model="base",
            prompt="My sister",
            max_tokens=24,
            temperature=temperature,
            seed=seed,
            stop=["river"],
        )
        chunks = list(
            client.completions.create(
                model="base",
                prompt="My sister",
                max_tokens=24,
                temperature=temperature,
                seed=seed,
                stop=["river"],
                stream=True,
            )
        )
        assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
        assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason
        assert all(c.choices[0].finish_reason is None for c in chunks[:-1])

    whole = client.chat.completions.create(model="chat", messages=QUESTION, temperature=0)
    chunks = list(client.chat.completions.create(model="chat", messages=QUESTION, temperature=0, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == whole.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_stream_ends_with_done_and_can_report_usage(server, client):
    body = {
        "model": "chat",
        "messages": QUESTION,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with httpx.stream("POST", f"{server[0]}/chat/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    usage_chunk = json.loads(lines[-2][len("data: ") :])
    whole = client.chat.completions.create(model="chat", messages=QUESTION, temperature=0)
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == whole.usage.model_dump(exclude_none=True)


def test_n_choices_and_seed_reproducibility(client):
    args = {"model": "base", "prompt": "The old king", "max_tokens": 10, "temperature": 1.0, "n": 3}
    first = client.completions.create(**args, seed=11)
    again = client.completions.create(**args, seed=11)
    other = client.completions.create(**args, seed=12)
    texts = [c.text for c in first.choices]
    assert [c.index for c in first.choices] == [0, 1, 2]
    assert texts == [c.text for c in again.choices]
    assert texts != [c.text for c in other.choices]
    assert len(set(texts)) > 1  # the choices are different samples
    assert first.usage.prompt_tokens == again.usage.prompt_tokens  # counted once, not per choice
    # Usage counts every generated token, the final stop token included (it is not part of the text).
    counted = client.completions.create(**args, seed=11, logprobs=0)
    per_choice = [len(c.logprobs.tokens) + (c.finish_reason == "stop") for c in counted.choices]
    assert [c.text for c in counted.choices] == texts
    assert counted.usage.completion_tokens == sum(per_choice)
    # Choice j is sampled with seed + j; a list of prompts gives what separate requests give.
    single = client.completions.create(**{**args, "n": 1}, seed=12)
    assert single.choices[0].text == texts[1]
    batch = client.completions.create(**{**args, "n": 1, "prompt": ["The cat", "The old king"]}, seed=11)
    assert batch.choices[1].text == texts[0]

    chats = client.chat.completions.create(model="chat", messages=QUESTION, n=4, seed=5, temperature=1.5)
    assert len(chats.choices) == 4 and len({c.message.content for c in chats.choices}) > 1
    assert chats.usage.total_tokens == chats.usage.prompt_tokens + chats.usage.completion_tokens


def test_echo_and_logprobs_match_a_forward_pass(client, server, monkeypatch):
    served = server[1]["base"]
    scored_on = []
    score_prompt = served.score_prompt

    def recording_score_prompt(ids, top):
        scored_on.append(threading.current_thread().name)
        return score_prompt(ids, top)

    monkeypatch.setattr(served, "score_prompt", recording_score_prompt)
    result = client.completions.create(
        model="base", prompt="The teacher", max_tokens=6, temperature=0, echo=True, logprobs=3
    )
    choice = result.choices[0]
    assert choice.text.startswith("The teacher")
    logprobs = choice.logprobs
    prompt_ids = served.tokenizer("The teacher")["input_ids"]
    assert len(logprobs.tokens) == len(prompt_ids) + result.usage.completion_tokens
    assert logprobs.token_logprobs[0] is None and logprobs.top_logprobs[0] is None
    assert "".join(logprobs.tokens) == choice.text
    assert logprobs.text_offset[0] == 0 and logprobs.text_offset[len(prompt_ids)] == len("The teacher")
    # Every reported log-prob is the model's own next-token log-prob, recomputed here in one forward pass.
    ids = (
        prompt_ids
        + served.tokenizer(choice.text[len("The teacher") :], add_special_tokens=False)["input_ids"]
    )
    with torch.no_grad():
        reference = torch.log_softmax(served.model(input_ids=torch.tensor([ids])).logits[0], -1)
    expected = [reference[t - 1, ids[t]].item() for t in range(1, len(ids))]
    assert logprobs.token_logprobs[1:] == pytest.approx(expected, abs=1e-4)
    for t, top in enumerate(logprobs.top_logprobs[1:], start=1):
        assert len(top) <= 3 and max(top.values()) == pytest.approx(reference[t - 1].max().item(), abs=1e-4)
    # Greedy: the chosen token is the most likely one.
    generated = range(len(prompt_ids), len(ids))
    assert all(
        logprobs.token_logprobs[t] == pytest.approx(max(logprobs.top_logprobs[t].values())) for t in generated
    )

    scored = client.completions.create(
        model="base", prompt="The teacher", max_tokens=0, echo=True, logprobs=0
    )
    assert scored.choices[0].text == "The teacher" and scored.usage.completion_tokens == 0
    assert scored.choices[0].logprobs.token_logprobs == logprobs.token_logprobs[: len(prompt_ids)]
    # Prompts are scored on the model's worker thread, which runs all of its torch work (BatchWorker.call).
    assert scored_on and all(name.startswith("rlhfkit-serve-") for name in scored_on)

    # Token-id prompts, streamed with echo and logprobs, give the same text and log-probs.
    args = {
        "model": "base",
        "prompt": prompt_ids,
        "max_tokens": 6,
        "temperature": 0,
        "echo": True,
        "logprobs": 3,
    }
    chunks = list(client.completions.create(**args, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == choice.text
    streamed = [lp for c in chunks if c.choices[0].logprobs for lp in c.choices[0].logprobs.token_logprobs]
    assert streamed == logprobs.token_logprobs


def test_chat_logprobs_with_top_alternatives(client):
    reply = client.chat.completions.create(
        model="chat", messages=QUESTION, temperature=0, logprobs=True, top_logprobs=2
    )
    content = reply.choices[0].logprobs.content
    assert "".join(entry.token for entry in content) == reply.choices[0].message.content
    assert len(content) == reply.usage.completion_tokens - 1  # the final <|end|> is not part of the reply
    for entry in content:
        assert len(entry.top_logprobs) == 2
        assert entry.top_logprobs[0].logprob >= entry.top_logprobs[1].logprob
        assert entry.logprob == pytest.approx(entry.top_logprobs[0].logprob)  # greedy picks the top token
        assert bytes(entry.bytes).decode() == entry.token
    plain = client.chat.completions.create(model="chat", messages=QUESTION, temperature=0)
    assert plain.choices[0].logprobs is None


def test_system_persona_and_developer_role_and_text_parts(client):
    base = [{"role": "system", "content": "Be brief."}, *QUESTION]
    as_developer = [{"role": "developer", "content": "Be brief."}, *QUESTION]
    as_parts = [base[0], {"role": "user", "content": [{"type": "text", "text": QUESTION[0]["content"]}]}]
    answers = {
        json.dumps(m): client.chat.completions.create(model="chat", messages=m, temperature=0, seed=0)
        .choices[0]
        .message.content
        for m in (base, as_developer, as_parts)
    }
    assert len(set(answers.values())) == 1
    no_system = client.chat.completions.create(model="chat", messages=QUESTION, temperature=0, max_tokens=1)
    with_system = client.chat.completions.create(model="chat", messages=base, temperature=0, max_tokens=1)
    assert with_system.usage.prompt_tokens > no_system.usage.prompt_tokens


def test_any_hugging_face_causal_lm_is_served(tokenizer_dir):
    """A non-Llama model goes through the general decoder; answers still equal the engine's."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from rlhfkit.serve import create_app, serve_model
    from rlhfkit.serve.server import background
    from rlhfkit.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_dir)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(
        GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=4, n_positions=64)
    )
    served = serve_model("gpt2", model, tokenizer)
    try:
        with background(create_app({"gpt2": served})) as url:
            client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=60)
            assert client.models.retrieve("gpt2").max_model_len == 64
            args = {"model": "gpt2", "prompt": "The cat", "max_tokens": 10, "temperature": 0.7, "seed": 4}
            whole = client.completions.create(**args)
            streamed = "".join(c.choices[0].text for c in client.completions.create(**args, stream=True))
            params = SamplingParams(
                max_new_tokens=10, temperature=0.7, seed=4, stop_token_ids=served.stop_token_ids
            )
            expected = generate_text(model, tokenizer, ["The cat"], params, backend="hf")[0]
            assert whole.choices[0].text == streamed == expected.text
            reply = client.chat.completions.create(model="gpt2", messages=QUESTION, max_tokens=5, n=2, seed=1)
            assert len(reply.choices) == 2
    finally:
        served.close()
