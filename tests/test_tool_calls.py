"""The `tool` role and tool calls in the chat format (`data.tool_calls`, the tokenizer's template, SFT masks)."""

import json

import pytest
from transformers import AutoTokenizer

from rlhfkit.data.chats import load_chats
from rlhfkit.data.tool_calls import (
    BadCall,
    ToolCall,
    call_message,
    call_text,
    parse_tool_call,
    renders_tool_calls,
)
from rlhfkit.errors import RlhfkitError
from rlhfkit.train.chat_tokens import IGNORE, tokenize_chat, tokenize_chats

# The template before the tool role: every chat without tools must render to the same text under the new one.
OLD_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)
LOOKUP = ToolCall("lookup", {"item": "Lomar K3 phone"})
TOOL_CHAT = [
    {"role": "user", "content": "How much do 2 Lomar K3 phones cost?"},
    call_message(LOOKUP),
    {"role": "tool", "content": '{"item": "Lomar K3 phone", "price": 349}'},
    call_message(ToolCall("calculator", {"expr": "2 * 349"})),
    {"role": "tool", "content": '{"result": 698}'},
    {"role": "assistant", "content": "So the answer is $698."},
]


def test_chats_without_tools_render_as_before(tokenizer_dir):
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    old = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    old.chat_template = OLD_TEMPLATE
    chat = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Who bakes\nbread?"},
        {"role": "assistant", "content": "The {baker}."},
    ]
    for gen in (False, True):
        assert tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=gen) == (
            old.apply_chat_template(chat, tokenize=False, add_generation_prompt=gen)
        )


def test_tool_calls_render_as_function_calling_json_lines(tokenizer_dir):
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    text = tok.apply_chat_template(TOOL_CHAT, tokenize=False)
    assert text == (
        "<|user|>How much do 2 Lomar K3 phones cost?<|end|>"
        '<|assistant|>{"name": "lookup", "arguments": {"item": "Lomar K3 phone"}}<|end|>'
        '<|tool|>{"item": "Lomar K3 phone", "price": 349}<|end|>'
        '<|assistant|>{"name": "calculator", "arguments": {"expr": "2 * 349"}}<|end|>'
        '<|tool|>{"result": 698}<|end|>'
        "<|assistant|>So the answer is $698.<|end|>"
    )
    # OpenAI's wire form: arguments as JSON text, null content, content before the call on its own line
    wire = {
        "role": "assistant",
        "content": "Let me look.",
        "tool_calls": [{"type": "function", "function": {"name": "lookup", "arguments": '{"item": "X"}'}}],
    }
    assert tok.apply_chat_template([wire], tokenize=False) == (
        '<|assistant|>Let me look.\n{"name": "lookup", "arguments": {"item": "X"}}<|end|>'
    )
    assert call_text(LOOKUP) in text and parse_tool_call("Let me look.\n" + call_text(LOOKUP)) == LOOKUP


def test_parse_tool_call_tells_answers_calls_and_bad_calls_apart():
    assert parse_tool_call("So the answer is $698.") is None
    assert parse_tool_call('{"name": "calculator", "arguments": {"expr": "1 + 2"}}') == ToolCall(
        "calculator", {"expr": "1 + 2"}
    )
    broken = parse_tool_call('{"name": "lookup", "arguments": {"item": ')
    assert isinstance(broken, BadCall) and "not valid JSON" in broken.error
    assert 'needs a "name"' in parse_tool_call('{"arguments": {}}').error
    assert "must be an object" in parse_tool_call('{"name": "lookup", "arguments": [1]}').error


def test_sft_learns_the_calls_but_not_the_tool_output(tokenizer_dir):
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    ids, labels = tokenize_chat(tok, TOOL_CHAT, 1000)
    learned = tok.decode([i for i, lab in zip(ids, labels) if lab != IGNORE])
    assert call_text(LOOKUP) in learned and '"calculator"' in learned and "$698" in learned
    assert "349}" not in learned.replace('"expr": "2 * 349"', "")  # the tool's output is read, not learned


def test_an_old_template_is_refused_for_tool_chats(tokenizer_dir):
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    assert renders_tool_calls(tok)
    tok.chat_template = OLD_TEMPLATE
    assert not renders_tool_calls(tok)
    with pytest.raises(RlhfkitError, match="does not render tool calls"):
        tokenize_chats(tok, [{"messages": TOOL_CHAT}], 1000, "sft.jsonl")


def test_tool_chats_load_and_bad_calls_name_the_field(tmp_path):
    path = tmp_path / "chats.jsonl"
    wire = {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}],
    }
    path.write_text(json.dumps({"messages": TOOL_CHAT}) + "\n" + json.dumps({"messages": [wire]}) + "\n")
    chats = load_chats(path)
    assert chats[0]["messages"][2]["role"] == "tool" and chats[1]["messages"][0]["content"] == ""
    bad = [
        ({"role": "user", "content": "x", "tool_calls": []}, r"messages\[0\].tool_calls': only assistant"),
        ({"role": "assistant", "content": "", "tool_calls": [{"function": {"name": ""}}]}, "function.name"),
        (
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"function": {"name": "f", "arguments": "[1]"}}],
            },
            "function.arguments",
        ),
    ]
    for message, field in bad:
        path.write_text(json.dumps({"messages": [message]}) + "\n")
        with pytest.raises(RlhfkitError, match=f"chats.jsonl:1: field '.*{field}"):
            load_chats(path)
