"""PSRM, the perfect sparse reward model: 0 for a correct final answer, -1 otherwise."""

from __future__ import annotations

from ..app.data import check_dataset
from ..app.extract import check_style, extract_answer
from ..app.judge import is_correct
from .base import Reward


class PSRM(Reward):
    """Compares the answer extracted from the reply (``style`` rule) with the ground truth."""

    deterministic = True  # a pure function of the answer text

    def __init__(self, gold: str, dataset: str = "gsm8k", style: str = "boxed"):
        if gold is None or not str(gold).strip():
            raise ValueError(f"PSRM gold={gold!r}: expected a non-empty ground-truth answer")
        self.gold = str(gold).strip()
        self.dataset = check_dataset(dataset)
        self.style = check_style(style)

    def compute(self, question: str, answer: str) -> float:
        prediction = extract_answer(answer, self.dataset, self.style)
        return 0.0 if is_correct(prediction, self.gold, self.dataset) else -1.0

    def __repr__(self) -> str:
        return f"PSRM(gold={self.gold!r}, dataset={self.dataset!r}, style={self.style!r})"
