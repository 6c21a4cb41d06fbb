"""Answer extraction, normalisation and verification on real-looking model and GSM8K answers."""

from __future__ import annotations

from fractions import Fraction

import pytest

from synthgraph.tools.sampling_answers import (
    AnswerError,
    extract_answer,
    format_number,
    gold_answer,
    parse_number,
    solution_key,
    verify,
)


@pytest.mark.parametrize(
    ("solution", "value", "method"),
    [
        (
            "Natalia sold 48/2 = 24 clips in May.\nShe sold 48+24 = 72 clips.\n#### 72",
            Fraction(72),
            "####",
        ),
        ("The total is 1,234 apples.\n#### 1,234", Fraction(1234), "####"),
        ("#### $1,000,000", Fraction(1_000_000), "####"),
        ("She needs 5 more dollars.\n#### 5 more dollars", Fraction(5), "####"),
        ("It costs 15.00 dollars.\n#### $15.00", Fraction(15), "####"),
        ("The temperature drops to\n#### -3", Fraction(-3), "####"),
        ("so 50% of them.\n#### 50%", Fraction(50), "####"),
        ("She uses 1 1/2 cups.\n#### 1 1/2", Fraction(3, 2), "####"),
        ("#### 10.", Fraction(10), "####"),
        ("Each gets $\\frac{3}{4}$ of a pie: \\boxed{\\frac{3}{4}}", Fraction(3, 4), "boxed"),
        ("The final answer is: $\\boxed{18}$", Fraction(18), "boxed"),
        ("So the answer is $15.50.", Fraction(31, 2), "answer is"),
        (
            "Thus, Betty made a total of \\(21\\) sales in the stationery section.",
            Fraction(21),
            "last number",
        ),
        ("Weng earned 0.2 x 50 = $10.", Fraction(10), "last number"),
        # The calculator annotations of GSM8K never count as the answer.
        ("48/2 = <<48/2=24>>24 clips, then 48+24 = <<48+24=72>>72", Fraction(72), "last number"),
        # The last `####` wins over an earlier one and over later prose numbers.
        (
            "#### 4\nWait, I made a mistake: 2*3 = 6\n#### 6\nChecked in 2 steps.",
            Fraction(6),
            "####",
        ),
        # An empty `####` falls through to the next way of finding the answer.
        ("The answer is 8.\n####", Fraction(8), "answer is"),
    ],
)
def test_extract_answer(solution: str, value: Fraction, method: str) -> None:
    found = extract_answer(solution)
    assert found.value == value
    assert found.method == method


def test_no_number_is_an_error() -> None:
    with pytest.raises(AnswerError, match="no number"):
        extract_answer("I am not sure how to solve this.")


@pytest.mark.parametrize(
    ("text", "value"),
    [("1,000", 1000), ("$2,500.50", Fraction(5001, 2)), ("0.75", Fraction(3, 4)), ("3/4", Fraction(3, 4)),
     ("\\frac{1}{3}", Fraction(1, 3)), (".5 hours", Fraction(1, 2)), ("12 dollars/hour", 12), ("x", None)],
)  # fmt: skip
def test_parse_number(text: str, value: Fraction | int | None) -> None:
    assert parse_number(text) == value


def test_gold_answer_from_gsm8k_records() -> None:
    assert gold_answer("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72") == 72
    assert gold_answer("#### 1,600") == 1600
    assert gold_answer("42") == 42  # a bare gold answer
    with pytest.raises(AnswerError, match="gold answer"):
        gold_answer("#### unknown")


def test_format_number() -> None:
    assert format_number(Fraction(72)) == "72"
    assert format_number(Fraction(3, 4)) == "0.75"
    assert format_number(Fraction(-7, 2)) == "-3.5"
    assert format_number(Fraction(1, 3)) == "1/3"


def test_verify_normalises_both_sides() -> None:
    gold = gold_answer("#### 1,600")
    assert verify("So she pays $1600.00 in total.\n#### $1,600.00", gold).correct
    wrong = verify("#### 1,500", gold)
    assert (wrong.correct, wrong.answer, wrong.gold, wrong.method) == (
        False,
        "1500",
        "1600",
        "####",
    )
    missing = verify("no idea", gold)
    assert not missing.correct and missing.answer is None and missing.error


def test_verify_fraction_equals_decimal() -> None:
    assert verify("\\boxed{\\frac{9}{2}}", gold_answer("#### 4.5")).correct


def test_solution_key_ignores_case_and_spacing() -> None:
    assert solution_key("A = 2\n#### 2") == solution_key("a  =  2 #### 2")
    assert solution_key("2+2=4 #### 4") != solution_key("2*2=4 #### 4")


def test_a_cut_off_solution_has_no_final_answer_unless_marked() -> None:
    gold = gold_answer("#### 40")
    cut = "Dawn has 40 more bananas than Lydia. Let the number of bananas Donna has be D. The total"
    assert verify(cut, gold).correct  # read as a whole answer, its last number happens to match
    cut_check = verify(cut, gold, truncated=True)
    assert (cut_check.correct, cut_check.error) == (False, "cut off before a final answer")
    assert verify("So Donna has 40.\n#### 40\nNow let us check", gold, truncated=True).correct
