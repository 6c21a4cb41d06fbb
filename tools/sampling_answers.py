"""Final answers of math solutions: extract, normalise, verify against the gold answer.

Model solutions end their reasoning in many ways (`#### 1,234`, `The answer is
$15.00.`, `\\boxed{\\frac{3}{4}}`, or just a last number), and GSM8K's gold
answers follow `#### `. Both sides become an exact `Fraction`, so `1,000`,
`1000.00` and `$1000` are the same answer and `0.75` equals `3/4`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

# A number as written in a solution (thousands commas already removed): optional
# sign, digits, optional decimals, optional `/denominator`, or a mixed number `1 1/2`.
_NUMBER = re.compile(
    r"(?P<sign>-)?\s*"
    r"(?:(?P<whole>\d+)\s+(?=\d+\s*/\s*\d))?"
    r"(?P<num>\d+(?:\.\d+)?|\.\d+)"
    r"(?:\s*/\s*(?P<den>\d+(?:\.\d+)?))?"
)
_FINAL_MARK = re.compile(r"####\s*(?P<rest>[^\n]*)")
_BOXED = re.compile(r"\\boxed\s*\{(?P<rest>(?:[^{}]|\{[^{}]*\})*)\}")
_ANSWER_IS = re.compile(
    r"(?:final answer|the answer|answer)\s*(?:is|=|:)\s*:?\s*(?P<rest>[^\n]*)", re.IGNORECASE
)
_LATEX_FRAC = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_CALCULATOR = re.compile(r"<<[^>]*>>")


class AnswerError(ValueError):
    """A text holds no final answer that can be read as a number."""


@dataclass(frozen=True)
class Extracted:
    """A final answer found in a solution, and how it was found."""

    value: Fraction
    method: str  # "####", "boxed", "answer is" or "last number"
    text: str  # the span the number came from


def parse_number(text: str) -> Fraction | None:
    """The first number in `text` as an exact fraction, or None.

    Handles thousands commas, currency and unit words around it, decimals,
    percentages (the number itself: `50%` is 50, as GSM8K writes it),
    `a/b`, mixed numbers `1 1/2` and LaTeX `\\frac{a}{b}`.
    """
    cleaned = _LATEX_FRAC.sub(r"\1/\2", text)
    cleaned = cleaned.replace("\\$", "$").replace("{", " ").replace("}", " ")
    cleaned = re.sub(r"(?<=\d)\s*\\?,\s*(?=\d{3}\b)", "", cleaned)  # 1,234 and 1{,}234
    match = _NUMBER.search(cleaned)
    if match is None:
        return None
    try:
        value = Fraction(match["num"])
        if match["den"]:
            denominator = Fraction(match["den"])
            if denominator == 0:
                return None
            value /= denominator
        if match["whole"]:
            value += int(match["whole"])
    except (ValueError, ZeroDivisionError):
        return None
    return -value if match["sign"] else value


def _last_number(text: str) -> tuple[Fraction, str] | None:
    cleaned = _LATEX_FRAC.sub(r"\1/\2", text)
    spans = list(re.finditer(r"-?\$?\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+(?:\.\d+)?)?", cleaned))
    for span in reversed(spans):
        value = parse_number(span.group().replace("$", ""))
        if value is not None:
            return value, span.group()
    return None


def extract_answer(solution: str) -> Extracted:
    """The final answer of a model's solution; `AnswerError` when there is none.

    Tried in order: the last `#### N`, the last `\\boxed{N}`, the last
    "the answer is N", and finally the last number anywhere in the text.
    """
    text = _CALCULATOR.sub("", solution)
    for method, pattern in (("####", _FINAL_MARK), ("boxed", _BOXED), ("answer is", _ANSWER_IS)):
        matches = list(pattern.finditer(text))
        for match in reversed(matches):
            value = parse_number(match["rest"])
            if value is not None:
                return Extracted(value, method, match["rest"].strip())
    found = _last_number(text)
    if found is None:
        raise AnswerError("no number in the solution")
    return Extracted(found[0], "last number", found[1])


def gold_answer(answer: str) -> Fraction:
    """The gold answer of a GSM8K-style record: after `#### `, or the whole text."""
    marked = list(_FINAL_MARK.finditer(answer))
    text = marked[-1]["rest"] if marked else answer
    value = parse_number(text)
    if value is None:
        raise AnswerError(f"no number in the gold answer {text.strip()[:60]!r}")
    return value


def format_number(value: Fraction) -> str:
    """A normalised answer as text: `72`, `0.75`, `-3`, or `1/3` when not a finite decimal."""
    if value.denominator == 1:
        return str(value.numerator)
    denominator = value.denominator
    for prime in (2, 5):
        while denominator % prime == 0:
            denominator //= prime
    if denominator == 1:
        return f"{float(value):.10f}".rstrip("0").rstrip(".")
    return f"{value.numerator}/{value.denominator}"


@dataclass(frozen=True)
class Verification:
    """A solution checked against the gold answer."""

    correct: bool
    answer: str | None  # normalised, None when no answer could be read
    gold: str
    method: str | None
    error: str | None = None


def verify(solution: str, gold: Fraction, truncated: bool = False) -> Verification:
    """Is the solution's final answer equal to the gold answer (exactly)?

    A solution cut off by the length cap has no final answer unless it already
    marked one: its last number is only wherever the cut fell.
    """
    try:
        found = extract_answer(solution)
    except AnswerError as error:
        return Verification(False, None, format_number(gold), None, str(error))
    if truncated and found.method == "last number":
        return Verification(False, None, format_number(gold), None, "cut off before a final answer")
    return Verification(
        found.value == gold, format_number(found.value), format_number(gold), found.method
    )


def solution_key(solution: str) -> str:
    """What makes two solutions the same for diversity: the text, case and spacing ignored."""
    return " ".join(solution.lower().split())
