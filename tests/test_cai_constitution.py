"""Constitutions: the packaged default loads; malformed files fail with file, line and field named."""

from __future__ import annotations

import pytest

from rlhfkit.cai.constitution import TEXT_FIELDS, load_constitution, parse_constitution
from rlhfkit.cli import main
from rlhfkit.errors import RlhfkitError

GOOD = """\
name = "mini"
description = "two principles"

[[principles]]
name = "honest"
critique_request = "Is it false?"
revision_request = "Make it true."
comparison_question = "Which is more honest?"

[[principles]]
name = "kind"
aspects = ["harmlessness"]
critique_request = "Is it unkind?"
revision_request = "Make it kind."
comparison_question = "Which is kinder?"
"""


def test_default_constitution_loads_with_distinct_complete_principles():
    c = load_constitution()
    assert c.name == "rlhfkit-default"
    assert len(c.principles) >= 4
    assert len({p.name for p in c.principles}) == len(c.principles)
    for p in c.principles:
        for field in TEXT_FIELDS:
            assert getattr(p, field).strip()
        assert p.comparison_question.endswith("?")
    assert c.find("honest").aspects == ("honesty",)


def test_file_loads_and_keeps_fields(tmp_path):
    path = tmp_path / "mini.toml"
    path.write_text(GOOD)
    c = load_constitution(path)
    assert c.name == "mini" and c.description == "two principles" and c.source == str(path)
    assert [p.name for p in c.principles] == ["honest", "kind"]
    assert c.principles[1].aspects == ("harmlessness",)
    assert c.principles[0].revision_request == "Make it true."


def _error(text: str) -> str:
    with pytest.raises(RlhfkitError) as info:
        parse_constitution(text, "rules.toml")
    return str(info.value)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        # a missing text names the principle's table line and the field
        (lambda t: t.replace('revision_request = "Make it kind."\n', ""),
         "rules.toml:10: field 'principles[1].revision_request': missing"),
        # a typo is an unknown key, at its own line
        (lambda t: t.replace("critique_request = \"Is it false?\"", "critque_request = \"Is it false?\""),
         "rules.toml:6: field 'principles[0].critque_request': unknown key"),
        (lambda t: t.replace('comparison_question = "Which is kinder?"', 'comparison_question = ""'),
         "rules.toml:15: field 'principles[1].comparison_question': expected a non-empty string"),
        (lambda t: t.replace('name = "kind"', 'name = "honest"'),
         "rules.toml:11: field 'principles[1].name': duplicate principle name 'honest'"),
        (lambda t: t.replace('name = "kind"', 'name = "be kind"'),
         "rules.toml:11: field 'principles[1].name': expected letters, digits"),
        (lambda t: t.replace('aspects = ["harmlessness"]', "aspects = \"harmlessness\""),
         "rules.toml:12: field 'principles[1].aspects': expected a list"),
        (lambda t: t.replace('description = "two principles"', "descrption = 1"),
         "rules.toml:2: field 'descrption': unknown key"),
        (lambda t: t.replace('critique_request = "Is it unkind?"', "critique_request = 3"),
         "rules.toml:13: field 'principles[1].critique_request': expected a non-empty string, got 3"),
        (lambda t: t.replace('revision_request = "Make it true."', "revision_request = \"Make it true."),
         "rules.toml:7: not valid TOML"),
        (lambda t: t.split("[[principles]]")[0], "rules.toml: field 'principles': missing"),
        (lambda t: 'name = "x"\nprinciples = []\n', "rules.toml:2: field 'principles': expected a non-empty array"),
    ],
)  # fmt: skip
def test_malformed_constitutions_name_file_line_and_field(edit, expected):
    assert _error(edit(GOOD)).startswith(expected)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(RlhfkitError, match="constitution file not found"):
        load_constitution(tmp_path / "nope.toml")


def test_constitution_show_cli(tmp_path, capsys):
    path = tmp_path / "mini.toml"
    path.write_text(GOOD)
    assert main(["constitution", "show", "--constitution", str(path)]) == 0
    out = capsys.readouterr().out
    assert "mini" in out and "Which is kinder?" in out and "Make it true." in out
    assert main(["constitution", "show"]) == 0
    assert "rlhfkit-default" in capsys.readouterr().out
    assert main(["constitution", "show", "--toml"]) == 0
    assert parse_constitution(capsys.readouterr().out, "printed").name == "rlhfkit-default"
    path.write_text(GOOD.replace('name = "kind"', 'name = "honest"'))
    assert main(["constitution", "show", "--constitution", str(path)]) == 1
    assert "duplicate principle name" in capsys.readouterr().err
