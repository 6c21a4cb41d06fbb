"""Small text helpers the agents and graphs share: cutting a text, and unwrapping a fenced reply."""

from __future__ import annotations

import re

# An opening fence: three backticks, an optional language tag, the end of the line. A closing
# fence starts or ends a line, so backticks inside a JSON string (which holds no raw newline)
# never close a block; an unclosed block (a reply cut at max_tokens) runs to the end.
_FENCE = re.compile(r"```[\w+-]*[ \t]*\n(.*?)(?:^[ \t]*```|```[ \t]*$|\Z)", re.S | re.M)


def excerpt(text: str, max_chars: int) -> str:
    """The text cut to `max_chars`, at the last paragraph, line or sentence break when one
    falls in the second half; no marker, so the excerpt reads as whole paragraphs."""
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    for marker in ("\n\n", "\n", ". "):
        at = cut.rfind(marker)
        if at > max_chars // 2:
            return cut[:at].rstrip()
    return cut.rstrip()


def clip(text: str, max_chars: int) -> str:
    """The text cut at its last space before `max_chars`, marked " ...", so a prompt shows the cut."""
    if len(text) <= max_chars:
        return text
    return text[:max_chars].rsplit(" ", 1)[0] + " ..."


def strip_code_fence(text: str) -> str:
    """The content of the first fenced code block in `text`, or `text` itself when none opens;
    stripped of surrounding white space."""
    block = _FENCE.search(text)
    return (block.group(1) if block else text).strip()
