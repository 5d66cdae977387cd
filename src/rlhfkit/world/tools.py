"""The demo world's tools over its knowledge base: `lookup(item)` and `calculator(expr)`.

A tool takes the call's `arguments` (a dict) and returns its result as JSON text, the content of the `tool`
turn the model reads next. A bad call (unknown tool, missing argument, an item the world does not know, an
expression the calculator refuses) returns `{"error": "..."}` saying what was wrong, never raises: in a
rollout the error is part of the episode, and the policy learns from it like from any other outcome.

- `lookup(item)`: the fact the verifiable tasks need about a product (its price), a scientist (birth year)
  or a town (founding year): `{"item": "Lomar K3 phone", "price": 349}`. Case and a leading "the" are ignored.
- `calculator(expr)`: + - * / // % ** and parentheses over numbers, comparisons (`<`, `<=`, `>`, `>=`, `==`,
  `!=`: 1 when true, 0 when false, so "(799 < 2360) + (2359 < 2360)" counts) and `min(...)`/`max(...)`, parsed
  with `ast` and evaluated node by node (never `eval`): no other names, calls or attributes, bounded length,
  exponents and magnitudes. `$`, `×` and thousands commas ("$1,047") are read the way people write them.
  Integral results are integers.

`TOOL_SPECS` describes both in the OpenAI `tools` format (what a served model would be offered).
"""

from __future__ import annotations

import ast
import json
import math
import operator
import re
import warnings
from collections.abc import Callable

from rlhfkit.data.tool_calls import BadCall, ToolCall
from rlhfkit.world.knowledge import KnowledgeBase, load_knowledge

# pool -> the field lookup returns for its entities (the facts the verifiable tasks are built on)
LOOKUP_FIELDS = {"products": "price", "scientists": "born", "towns": "founded"}
MAX_EXPR_CHARS = 200
MAX_EXPONENT = 64
MAX_MAGNITUDE = 1e15

_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_COMPARE = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}
_FUNCTIONS = {"min": min, "max": max}


def _result(**fields) -> str:
    return json.dumps(fields, ensure_ascii=False)


def _error(message: str) -> str:
    return _result(error=message)


def lookup(arguments: dict, kb: KnowledgeBase | None = None) -> str:
    """An entity's looked-up fact, from the world's knowledge base (or `kb`: a practice catalogue)."""
    item = arguments.get("item")
    if not isinstance(item, str) or not item.strip():
        return _error('lookup takes {"item": "<a product, scientist or town>"}')
    name = re.sub(r"^the\s+", "", item.strip(), flags=re.IGNORECASE)
    kb = kb or load_knowledge()
    for pool, field in LOOKUP_FIELDS.items():
        entity = kb.find(pool, name)
        if entity is not None and entity.get(field) not in (None, ""):
            return _result(item=entity["name"], **{field: int(entity[field])})
    return _error(f"no item named {item!r} (lookup knows products, scientists and towns by their full name)")


class CalculatorError(ValueError):
    pass


def _evaluate(node: ast.AST) -> int | float:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise CalculatorError(f"exponent {right} is too large (at most {MAX_EXPONENT})")
        try:
            value = _BINARY[type(node.op)](left, right)
        except ZeroDivisionError:
            raise CalculatorError("division by zero") from None
        if isinstance(value, complex) or abs(value) > MAX_MAGNITUDE:
            raise CalculatorError("the result is out of range")
        return value
    if isinstance(node, ast.Compare) and all(type(op) in _COMPARE for op in node.ops):
        values = [_evaluate(node.left), *(_evaluate(c) for c in node.comparators)]
        pairs = zip(node.ops, values, values[1:])
        return int(all(_COMPARE[type(op)](a, b) for op, a, b in pairs))
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCTIONS
        and node.args
        and not node.keywords
    ):
        return _FUNCTIONS[node.func.id](_evaluate(a) for a in node.args)
    raise CalculatorError(
        "only numbers, + - * / // % **, comparisons, min(), max() and parentheses are allowed, "
        f"not {ast.dump(node)[:40]}"
    )


def calculate(expr: str) -> int | float:
    """The value of an arithmetic expression; `CalculatorError` for anything else."""
    if len(expr) > MAX_EXPR_CHARS:
        raise CalculatorError(f"the expression is longer than {MAX_EXPR_CHARS} characters")
    text = expr.replace("×", "*").replace("$", "")
    if not re.search(r"\b(min|max)\s*\(", text):  # in min(2059,1929) the comma separates arguments
        text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)
    try:
        # A model's expression such as "3x4" makes Python warn on stderr ("invalid decimal literal") before it
        # fails or parses: the warning is about the model's text, not our code, so it is not printed.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError:
        raise CalculatorError(f"cannot parse {expr!r} as arithmetic") from None
    value = _evaluate(tree)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise CalculatorError("the result is not a finite number")
        value = int(value) if value.is_integer() else round(value, 6)
    return value


def calculator(arguments: dict) -> str:
    expr = arguments.get("expr")
    if not isinstance(expr, str) or not expr.strip():
        return _error('calculator takes {"expr": "<arithmetic, e.g. 3 * 349 + 25>"}')
    try:
        return _result(result=calculate(expr))
    except CalculatorError as exc:
        return _error(str(exc))


WORLD_TOOLS: dict[str, Callable[[dict], str]] = {"lookup": lookup, "calculator": calculator}


def run_tool(call: ToolCall | BadCall, tools: dict[str, Callable[[dict], str]] = WORLD_TOOLS) -> str:
    """The tool turn's content for a parsed call (a `BadCall`'s error included)."""
    if isinstance(call, BadCall):
        return _error(call.error)
    if call.name not in tools:
        return _error(f"no tool named {call.name!r}; the tools are {', '.join(sorted(tools))}")
    return tools[call.name](call.arguments)


def _spec(name: str, description: str, argument: str, about: str) -> dict:
    parameters = {
        "type": "object",
        "properties": {argument: {"type": "string", "description": about}},
        "required": [argument],
    }
    return {
        "type": "function",
        "function": {"name": name, "description": description, "parameters": parameters},
    }


TOOL_SPECS = [
    _spec(
        "lookup",
        "A product's price, a scientist's birth year or a town's founding year.",
        "item",
        "full name",
    ),
    _spec(
        "calculator",
        "The value of an arithmetic expression; comparisons give 1 or 0; min() and max().",
        "expr",
        "e.g. 3 * 349 + 25",
    ),
]
