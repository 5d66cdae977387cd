"""Every refusal comes back in OpenAI's exact shape and status, seen both raw and through the `openai` client."""

from __future__ import annotations

import httpx
import openai
import pytest

from serve_helpers import build_checkpoints, running_server

CHAT = [{"role": "user", "content": "What does the cat do?"}]
KEY = "sk-test-0123456789"


@pytest.fixture(scope="module")
def checkpoints(tokenizer_dir, tmp_path_factory):
    return build_checkpoints(tokenizer_dir, tmp_path_factory.mktemp("serve_models"))


@pytest.fixture(scope="module")
def server(checkpoints):
    with running_server(checkpoints) as (url, _):
        yield url


def post(url: str, path: str, body, **kwargs) -> httpx.Response:
    return httpx.post(f"{url}{path}", json=body, timeout=30, **kwargs)


def assert_openai_error(
    response: httpx.Response, status: int, param: str | None = None, code: str | None = None
):
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"]
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert body["error"]["type"] == ("invalid_request_error" if status < 500 else "server_error")
    assert body["error"]["param"] == param
    assert body["error"]["code"] == code
    return body["error"]


BAD_COMPLETIONS = [
    ({"prompt": "x", "max_tokens": -1}, "max_tokens", "invalid_value"),
    ({"prompt": "x", "max_tokens": 0}, "max_tokens", "invalid_value"),
    ({"prompt": "x", "temperature": 2.5}, "temperature", "invalid_value"),
    ({"prompt": "x", "temperature": -0.1}, "temperature", "invalid_value"),
    ({"prompt": "x", "top_p": 1.5}, "top_p", "invalid_value"),
    ({"prompt": "x", "n": 0}, "n", "invalid_value"),
    ({"prompt": "x", "logprobs": 6}, "logprobs", "invalid_value"),
    ({"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, "stop", "invalid_value"),
    ({"prompt": "x", "stop": [""]}, "stop", "invalid_value"),
    ({"prompt": []}, "prompt", "invalid_value"),
    ({"prompt": [[]]}, "prompt", "invalid_value"),
    ({"prompt": [5, 99999]}, "prompt", "invalid_value"),
    ({"prompt": 3}, "prompt", "invalid_value"),
    ({}, "prompt", None),
    ({"prompt": "x", "presence_penalty": 0.5}, "presence_penalty", None),
    ({"prompt": "x", "logit_bias": {"5": 10}}, "logit_bias", None),
    ({"prompt": "x", "stream_options": {"include_usage": True}}, "stream_options", None),
]


@pytest.mark.parametrize(("fields", "param", "code"), BAD_COMPLETIONS)
def test_bad_completion_parameters_are_400(server, fields, param, code):
    assert_openai_error(post(server, "/completions", {"model": "base", **fields}), 400, param, code)


BAD_CHATS = [
    ({"messages": []}, "messages", "invalid_value"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role", "invalid_value"),
    ({"messages": [{"role": "tool"}]}, "messages[0].content", None),
    ({"messages": [{"role": "user"}]}, "messages[0].content", None),
    ({"messages": [{"content": "hi"}]}, "messages[0].role", None),
    (
        {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
        "messages[0].content",
        "invalid_value",
    ),
    ({"messages": CHAT, "max_tokens": -5}, "max_tokens", "invalid_value"),
    ({"messages": CHAT, "max_completion_tokens": 0}, "max_completion_tokens", "invalid_value"),
    ({"messages": CHAT, "temperature": 7}, "temperature", "invalid_value"),
    ({"messages": CHAT, "top_logprobs": 21, "logprobs": True}, "top_logprobs", "invalid_value"),
    ({"messages": CHAT, "top_logprobs": 2}, "top_logprobs", "invalid_value"),
    ({"messages": CHAT, "tools": [{"type": "function"}]}, "tools[0]", "invalid_value"),
    ({"messages": CHAT, "functions": [{"name": "f"}]}, "functions", None),
    ({"messages": CHAT, "response_format": {"type": "json_object"}}, "response_format", None),
    ({"messages": "hello"}, "messages", "invalid_value"),
]


@pytest.mark.parametrize(("fields", "param", "code"), BAD_CHATS)
def test_bad_chat_parameters_are_400(server, fields, param, code):
    assert_openai_error(post(server, "/chat/completions", {"model": "chat", **fields}), 400, param, code)


def test_missing_model_and_unparsable_bodies_are_400(server):
    assert_openai_error(post(server, "/chat/completions", {"messages": CHAT}), 400, "model")
    response = httpx.post(f"{server}/completions", content=b"{not json", timeout=30)
    assert_openai_error(response, 400)
    assert_openai_error(post(server, "/completions", ["a", "list"]), 400)


def test_unknown_model_is_404(server):
    for path, body in (("/completions", {"prompt": "x"}), ("/chat/completions", {"messages": CHAT})):
        error = assert_openai_error(
            post(server, path, {"model": "gpt-4o", **body}), 404, "model", "model_not_found"
        )
        assert "gpt-4o" in error["message"]
    assert_openai_error(httpx.get(f"{server}/models/gpt-4o", timeout=30), 404, "model", "model_not_found")


def test_prompt_longer_than_the_context_is_400(server):
    long_prompt = "The cat sees a red apple near the river. " * 40  # far beyond the 128-token context
    error = assert_openai_error(
        post(server, "/completions", {"model": "base", "prompt": long_prompt}),
        400,
        "prompt",
        "context_length_exceeded",
    )
    assert "maximum context length is 128 tokens" in error["message"]
    long_chat = [{"role": "user", "content": long_prompt}]
    assert_openai_error(
        post(server, "/chat/completions", {"model": "chat", "messages": long_chat}),
        400,
        "messages",
        "context_length_exceeded",
    )
    # A prompt that fits, with a completion that would not.
    too_long = {"model": "chat", "messages": CHAT, "max_completion_tokens": 500}
    assert_openai_error(
        post(server, "/chat/completions", too_long), 400, "max_completion_tokens", "context_length_exceeded"
    )


def test_unknown_routes_and_methods_keep_the_shape(server):
    assert_openai_error(httpx.get(f"{server}/engines", timeout=30), 404)
    assert_openai_error(httpx.get(f"{server}/completions", timeout=30), 405)


def test_the_client_raises_the_matching_exceptions(server):
    client = openai.OpenAI(base_url=server, api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError) as not_found:
        client.chat.completions.create(model="nope", messages=CHAT)
    assert not_found.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="chat", messages=[])
    assert bad.value.param == "messages"
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="base", prompt="x", max_tokens=-1)


def test_api_key_is_required_when_set(checkpoints):
    with running_server(checkpoints, api_key=KEY) as (url, _):
        missing = httpx.get(f"{url}/models", timeout=30)
        assert assert_openai_error(missing, 401)["message"].startswith("You didn't provide an API key")
        wrong = httpx.get(f"{url}/models", headers={"Authorization": "Bearer sk-wrong"}, timeout=30)
        assert_openai_error(wrong, 401, None, "invalid_api_key")
        not_bearer = httpx.get(f"{url}/models", headers={"Authorization": f"Basic {KEY}"}, timeout=30)
        assert_openai_error(not_bearer, 401)
        assert httpx.get(f"{url.removesuffix('/v1')}/health", timeout=30).status_code == 200

        with pytest.raises(openai.AuthenticationError) as denied:
            openai.OpenAI(base_url=url, api_key="sk-wrong", max_retries=0).models.list()
        assert denied.value.status_code == 401 and denied.value.code == "invalid_api_key"
        good = openai.OpenAI(base_url=url, api_key=KEY, max_retries=0)
        assert [m.id for m in good.models.list().data] == ["base", "chat"]
        reply = good.chat.completions.create(model="chat", messages=CHAT, max_tokens=4, temperature=0)
        assert reply.usage.completion_tokens >= 1
