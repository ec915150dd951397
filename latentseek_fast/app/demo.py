"""Built-in demo problems: short grade-school questions written for this project.

They are short on purpose, so that even the embedded 135M model gets some of them right and a
demo run shows both a correct answer and a seek that has something to fix.
"""

from __future__ import annotations

from pathlib import Path

from .data import Problem, load_problems

DEMO_FILE = Path(__file__).with_name("demo_problems.jsonl")


def demo_problems() -> list[Problem]:
    """The demo problems (GSM8K format: numeric gold answers)."""
    return load_problems(DEMO_FILE, dataset="gsm8k")


def get_demo(index_or_id: int | str) -> Problem:
    """A demo problem by position (``0``, ``-1``, ``"2"``) or by id (``"eggs"``)."""
    problems = demo_problems()
    ids = [p.id for p in problems]
    if isinstance(index_or_id, bool):
        raise ValueError(f"demo={index_or_id!r}: expected an index 0..{len(problems) - 1} or one of {ids}")
    if isinstance(index_or_id, str):
        if index_or_id in ids:
            return problems[ids.index(index_or_id)]
        try:
            index_or_id = int(index_or_id)
        except ValueError:
            raise ValueError(
                f"demo={index_or_id!r}: no such id; choose one of {ids} or an index 0..{len(problems) - 1}"
            ) from None
    if isinstance(index_or_id, int) and -len(problems) <= index_or_id < len(problems):
        return problems[index_or_id]
    raise ValueError(f"demo={index_or_id!r}: expected an index 0..{len(problems) - 1} or one of {ids}")
