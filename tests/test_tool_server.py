"""`rlhfkit world tools`: the world's tools over HTTP answer as the tools answer in a training episode."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from rlhfkit.data.tool_calls import ToolCall
from rlhfkit.world.knowledge import load_knowledge
from rlhfkit.world.tool_server import MAX_BODY_BYTES, create_tool_app
from rlhfkit.world.tools import TOOL_SPECS, run_tool


@pytest.fixture(scope="module")
def tools():
    return TestClient(create_tool_app())


def test_the_server_lists_the_tools_in_the_openai_format_and_describes_them_in_openapi(tools):
    assert tools.get("/tools").json() == {"tools": TOOL_SPECS}
    schema = tools.get("/openapi.json").json()
    for spec in TOOL_SPECS:
        route = schema["paths"][f"/tools/{spec['function']['name']}"]["post"]
        body = route["requestBody"]["content"]["application/json"]["schema"]
        assert body == spec["function"]["parameters"]


def test_a_call_answers_what_the_episode_s_tool_turn_holds(tools):
    product = load_knowledge().pools["products"][0]
    answer = tools.post("/tools/lookup", json={"item": product["name"]})
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    assert answer.text == run_tool(ToolCall("lookup", {"item": product["name"]}))
    assert answer.json() == {"item": product["name"], "price": int(product["price"])}
    assert tools.post("/tools/calculator", json={"expr": "3 * 349 + 25"}).json() == {"result": 1072}


def test_a_call_the_tool_cannot_run_answers_the_tool_s_own_error(tools):
    # what the model learned to read: 200 with {"error": ...}, as in a rollout
    for name, arguments in [
        ("lookup", {"item": "Nonexistent Z0 gadget"}),
        ("lookup", {}),
        ("calculator", {"expr": "__import__('os')"}),
    ]:
        answer = tools.post(f"/tools/{name}", json=arguments)
        assert answer.status_code == 200, (name, arguments)
        assert answer.text == run_tool(ToolCall(name, arguments)) and "error" in answer.json()


def test_what_is_not_a_call_is_refused_with_a_reason(tools):
    unknown = tools.post("/tools/shell", json={"cmd": "ls"})
    assert unknown.status_code == 404 and "calculator, lookup" in unknown.json()["detail"]
    not_object = tools.post("/tools/lookup", json=["Lomar K3 phone"])
    assert not_object.status_code == 400 and '{"item": "full name"}' in not_object.json()["detail"]
    not_json = tools.post("/tools/lookup", content=b"{item", headers={"content-type": "application/json"})
    assert not_json.status_code == 400 and "not JSON" in not_json.json()["detail"]
    too_big = tools.post("/tools/calculator", json={"expr": "1" * (MAX_BODY_BYTES + 1)})
    assert too_big.status_code == 413


def test_with_an_api_key_every_route_needs_it():
    tools = TestClient(create_tool_app(api_key="s3cret"))
    assert tools.get("/tools").status_code == 401
    assert (
        tools.post("/tools/lookup", json={"item": "x"}, headers={"Authorization": "Bearer nope"}).status_code
        == 401
    )
    assert tools.post("/tools/shell", json={}).status_code == 401  # the key is checked before the route
    ok = {"Authorization": "Bearer s3cret"}
    assert tools.get("/tools", headers=ok).json() == {"tools": TOOL_SPECS}
    assert "result" in json.loads(tools.post("/tools/calculator", json={"expr": "1+1"}, headers=ok).text)
