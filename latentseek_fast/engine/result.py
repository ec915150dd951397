"""What a seek returns (``SeekResult``) and how its time is kept (``PhaseClock``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..audit import TieAudit

PHASES = ("generate", "latent", "decode", "reward")


class PhaseClock:
    """Wall seconds a problem spent in each phase of its seek (``PHASES``).

    ``generate``: the original answer; ``latent``: gradient, update and re-decode of the L
    latents; ``decode``: continuations; ``reward``: scoring (self-reward verifiers included).
    Under the batched driver a shared operation's time is split over the problems it served
    (``share``), so the problems' clocks add up to the wall time spent, phase by phase.
    """

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(PHASES, 0.0)

    def charge(self, phase: str, seconds: float) -> None:
        self.seconds[phase] += seconds

    @staticmethod
    def share(items, seconds: float) -> None:
        """Split ``seconds`` over ``(clock, phase, weight)`` items in proportion to weight."""
        items = list(items)
        total = sum(w for _, _, w in items)
        for clock, phase, w in items:
            clock.charge(phase, seconds * (w / total if total else 1.0 / len(items)))


@dataclass
class SeekResult:
    """What a seek produced.

    ``rewards`` is the reward history (the original answer's first); ``iterations`` the number of
    latent steps taken (``len(rewards) - 1``); ``timings`` the wall seconds of each phase
    (``PhaseClock``). ``reused``: iterations that reused an earlier iteration's continuation
    (``SeekConfig.reuse``); ``decode_stats``: ``decoding.DecodeStats`` of the original answer and
    the continuations (tokens, forwards, drafts fed and accepted). ``texts``: the answer each
    reward scored, aligned with ``rewards`` (``texts[0]`` is the original answer), so that an
    evaluation can judge every iteration (test-time scaling). ``audit``: the near-tie audit of
    each scored answer (``audit.TieAudit``), aligned with ``rewards``; ``tie_gap`` its
    threshold.
    """

    answer: str
    answer_ids: list[int]
    original_answer: str
    original_ids: list[int]
    rewards: list[float]
    original_length: int
    update_length: int
    final_length: int
    iterations: int
    stopped: str
    backend: str
    timings: dict[str, float] = field(default_factory=dict)
    reused: int = 0
    decode_stats: dict[str, int] = field(default_factory=dict)
    texts: list[str] = field(default_factory=list)
    audit: list[TieAudit] = field(default_factory=list)
    tie_gap: float | None = None

    @property
    def original_reward(self) -> float:
        return self.rewards[0]

    @property
    def final_reward(self) -> float:
        return self.rewards[-1]

    def to_dict(self) -> dict:
        return asdict(self)
