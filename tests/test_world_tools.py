"""The world's tools: lookup over the knowledge base and a calculator that evaluates arithmetic only."""

import json

import pytest

from rlhfkit.data.tool_calls import ToolCall, parse_tool_call
from rlhfkit.world.knowledge import load_knowledge
from rlhfkit.world.tools import TOOL_SPECS, WORLD_TOOLS, calculator, lookup, run_tool


def out(text: str) -> dict:
    return json.loads(text)


def test_lookup_returns_the_fact_each_verifiable_task_needs():
    kb = load_knowledge()
    phone = kb.pools["products"][0]
    assert out(lookup({"item": phone["name"]})) == {"item": phone["name"], "price": phone["price"]}
    assert out(lookup({"item": "the " + phone["name"].upper()}))["price"] == phone["price"]
    town = kb.pools["towns"][0]
    assert out(lookup({"item": town["name"]})) == {"item": town["name"], "founded": int(town["founded"])}
    assert out(lookup({"item": "Albert Einstein"})) == {"item": "Albert Einstein", "born": 1879}


@pytest.mark.parametrize(
    "arguments, error",
    [
        ({"item": "Zorblax Q9 toaster"}, "no item named 'Zorblax Q9 toaster'"),
        ({}, "lookup takes"),
        ({"item": 3}, "lookup takes"),
    ],
)
def test_lookup_errors_are_tool_output(arguments, error):
    assert error in out(lookup(arguments))["error"]


@pytest.mark.parametrize(
    "expr, value",
    [
        ("3 * 349 + 2 * 25", 1097),
        ("1879 - 1843", 36),
        ("3 × $1,047", 3141),
        ("(2 + 3) * -4", -20),
        ("7 / 2", 3.5),
        ("6 / 3", 2),
        ("2 ** 10 % 1000", 24),
        ("(799 < 2360) + (2359 < 2360) + (2361 < 2360)", 2),
        ("1 < 2 <= 2 != 3", 1),
        ("min(2059, 1929, 2349)", 1929),
        ("max(1047, 3 * 400)", 1200),
        ("min(2059,1929)", 1929),
    ],
)
def test_calculator_evaluates_arithmetic(expr, value):
    result = out(calculator({"expr": expr}))["result"]
    assert result == value and type(result) is type(value)


@pytest.mark.parametrize(
    "expr, error",
    [
        ("__import__('os').system('true')", "only numbers"),
        ("open('x')", "only numbers"),
        ("(1).real", "only numbers"),
        ("x + 1", "only numbers"),
        ("min", "only numbers"),
        ("min()", "only numbers"),
        ("sum(1, 2)", "only numbers"),
        ("min(1, key=2)", "only numbers"),
        ("1 in 2", "only numbers"),
        ("True + 1", "only numbers"),
        ("1 / 0", "division by zero"),
        ("9 ** 99", "exponent"),
        ("2 ** 60 ** 2", "exponent"),
        ("10 ** 12 * 10 ** 12", "out of range"),
        ("3 +", "cannot parse"),
        ("1 + " * 60 + "1", "longer than"),
    ],
)
def test_calculator_refuses_everything_but_arithmetic(expr, error):
    assert error in out(calculator({"expr": expr}))["error"]


def test_a_models_odd_number_makes_no_python_warning(recwarn):
    # a number run into a keyword ("1449or", "3or 4") makes Python's parser warn ("invalid decimal literal")
    assert "cannot parse" in out(calculator({"expr": "3 * 1119 + 2 * 1449or"}))["error"]
    assert "only numbers" in out(calculator({"expr": "3or 4"}))["error"]
    assert not [w for w in recwarn if issubclass(w.category, SyntaxWarning)]


def test_run_tool_answers_bad_calls_with_errors():
    assert out(run_tool(ToolCall("calculator", {"expr": "1 + 2"}))) == {"result": 3}
    assert "no tool named 'search'" in out(run_tool(ToolCall("search", {"q": "x"})))["error"]
    assert "calculator takes" in out(run_tool(ToolCall("calculator", {"expression": "1"})))["error"]
    assert "not valid JSON" in out(run_tool(parse_tool_call('{"name": "lookup", "arg')))["error"]
    assert [s["function"]["name"] for s in TOOL_SPECS] == sorted(WORLD_TOOLS, reverse=True)
