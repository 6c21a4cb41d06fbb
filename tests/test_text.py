"""The shared text helpers: cutting a text, unwrapping a fenced reply."""

from __future__ import annotations

import json

import pytest

from synthgraph.tools.text import clip, excerpt, strip_code_fence


def test_excerpt_cuts_at_the_last_break_in_the_second_half() -> None:
    text = "First paragraph, long enough to keep.\n\nSecond paragraph runs on and on."
    assert excerpt(text, 60) == "First paragraph, long enough to keep."
    assert excerpt("a first line, quite long\nand another line", 30) == "a first line, quite long"
    assert excerpt("A sentence goes here. Then another one", 30) == "A sentence goes here"
    assert excerpt("short", 60) == "short"


def test_excerpt_without_a_late_break_is_a_hard_cut() -> None:
    assert excerpt("ab\n" + "x" * 100, 20) == "ab\n" + "x" * 17
    assert excerpt("word " * 100, 60) == ("word " * 12).rstrip()


def test_clip_cuts_at_a_space_and_marks_the_cut() -> None:
    assert clip("short", 10) == "short"
    assert clip("alpha beta gamma delta", 12) == "alpha beta ..."
    assert clip("x" * 20, 5) == "xxxxx ..."
    assert clip("keeps\nits  spacing here", 14) == "keeps\nits  ..."


@pytest.mark.parametrize(
    "reply",
    [
        '{"a": 1}',
        '  {"a": 1}\n',
        '```json\n{"a": 1}\n```',
        '```JSON \n{"a": 1}\n```\n',
        '```\n{"a": 1}\n```',
        '```json\n{"a": 1}```',
        'Here it is:\n```json\n{"a": 1}\n```\nDone.',
        '```json\n{"a": 1}\n```\n\n```json\n{"b": 2}\n```',
    ],
)
def test_strip_code_fence_finds_the_json(reply: str) -> None:
    assert json.loads(strip_code_fence(reply)) == {"a": 1}


def test_backticks_inside_a_json_string_do_not_close_the_block() -> None:
    inner = {"answer": "```python\nprint(1)\n```"}
    pretty = json.dumps(inner, indent=1)
    assert json.loads(strip_code_fence(f"```json\n{pretty}\n```")) == inner
    assert json.loads(strip_code_fence(pretty)) == inner


def test_an_unclosed_fence_runs_to_the_end() -> None:
    assert strip_code_fence('```json\n[{"name": "apt') == '[{"name": "apt'
    assert strip_code_fence("```json") == "```json"
