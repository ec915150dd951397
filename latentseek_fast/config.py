"""Seek hyperparameters, validated once before anything runs."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from ._util import LR_MAX, TEMPERATURE_MIN
from .backends import BACKENDS, MODES

LATENT_DTYPES = ("fp32", "model")
# How many proposed drafts a forward feeds (``SeekConfig.draft_policy``; see ``decoding.drafts.best_width``).
DRAFT_POLICIES = ("full", "cost")
# Rewards that can be named instead of passed as objects (built by ``rewards.make_reward``).
REWARD_NAMES = ("psrm", "self")
# The research code never optimises more than 300 latents, however long the answer.
MAX_UPDATE_LENGTH = 300


def update_length(answer_length: int, rho: float, cap: int = MAX_UPDATE_LENGTH) -> int:
    """L, the number of latents a seek optimises: ``min(int(rho * T), cap)`` for an answer of T tokens.

    ``int()`` truncates, as in the research code, so a short answer can give L == 0 (no update).
    """
    return min(int(rho * answer_length), cap)


class ConfigError(ValueError):
    """A ``SeekConfig`` field out of range: ``field``, the ``value`` given and what is ``allowed``
    (so that the CLI can name its option instead of the field)."""

    def __init__(self, field: str, value, allowed: str):
        super().__init__(f"SeekConfig.{field}={value!r}: {allowed}")
        self.field, self.value, self.allowed = field, value, allowed


@dataclass
class SeekConfig:
    """LatentSeek's knobs (``docs/algorithm.md``, "The seek loop"); defaults are the paper's.

    - ``lr``: Adam learning rate (eta), ``0 < lr <= 100`` (``_util.LR_MAX`` says why). ``rho``:
      fraction of the answer's latents optimised (the research code's ``k``);
      ``L = update_length(T, rho, max_update_length)``.
    - ``max_steps``: K. ``reward_threshold``: tau; a step runs only while reward <= tau.
    - ``max_new_tokens``: cap of the original generation and of each continuation.
    - ``grad_clip``: total gradient-norm clip (None or 0: off, as in the research code).
    - ``start_index``: first optimised latent; the answer before it is kept fixed.
    - ``backend``: how the latent step is computed: ``reference`` (autograd through full
      logits, like the research code), ``torch`` (chunked analytic twin), ``triton``
      (fused kernels) or ``auto`` (triton on CUDA, torch on CPU).
    - ``latent_dtype``: ``fp32`` keeps an fp32 master copy of the latents; ``model`` keeps
      them in the model dtype with ``torch.optim.Adam``, exactly like the research code.
    - ``mode``/``temperature``/``seed``: how the gradient's tokens are chosen: ``greedy``
      (argmax, the research code) or ``sample`` (Gumbel-max from softmax(logits/temperature)).
      Re-decoding is always greedy.
    - ``draft_tokens``: most tokens drafted per forward when decoding the original answer and the
      continuations (copied from the prompt and the problem's earlier answers, verified by greedy
      decoding; see ``decoding/drafts.py``); 0 decodes one token per forward. The tokens are the same.
    - ``draft_policy``: ``full`` feeds every draft proposed; ``cost`` feeds only as many as pay for
      their compute by a cost model of the forward (``decoding.drafts.best_width``). The tokens are the same.
    - ``reuse``: an iteration whose re-decoded tokens equal an earlier iteration's reuses that
      continuation (and its reward, when the reward declares itself deterministic).
    - ``tie_gap``: the near-tie audit's threshold (``audit``): a greedy decision whose top-2
      logit gap is below it could flip under another thread count, batch or GPU. None: the
      measured default for the model's dtype (``audit.TIE_GAPS``); 0 flags nothing.
    """

    lr: float = 0.03
    rho: float = 0.1
    max_steps: int = 10
    reward_threshold: float = -0.2
    max_new_tokens: int = 1024
    grad_clip: float | None = None
    start_index: int = 0
    max_update_length: int = MAX_UPDATE_LENGTH
    backend: str = "auto"
    latent_dtype: str = "fp32"
    mode: str = "greedy"
    temperature: float = 1.0
    seed: int = 0
    draft_tokens: int = 8
    draft_policy: str = "full"
    reuse: bool = True
    tie_gap: float | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        def bad(name, allowed):
            raise ConfigError(name, getattr(self, name), allowed)

        for name in ("lr", "rho", "reward_threshold", "temperature"):
            v = getattr(self, name)
            if (
                isinstance(v, bool)
                or not isinstance(v, (int, float))
                or v != v
                or v in (float("inf"), float("-inf"))
            ):
                bad(name, "expected a finite number")
        if not 0 < self.lr <= LR_MAX:
            bad(
                "lr",
                f"expected 0 < lr <= {LR_MAX:g} (Adam moves every latent element by about lr per step; "
                "the latents' elements are of order 1 and the paper uses 0.03-0.05)",
            )
        if not 0 <= self.rho <= 1:
            bad("rho", "expected 0 <= rho <= 1")
        if not self.temperature >= TEMPERATURE_MIN:
            bad(
                "temperature",
                f"expected >= {TEMPERATURE_MIN:g} (logits and gradient scale as 1/temperature in fp32)",
            )
        for name, lo in (
            ("max_steps", 0),
            ("max_new_tokens", 1),
            ("start_index", 0),
            ("max_update_length", 0),
            ("seed", 0),
            ("draft_tokens", 0),
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                bad(name, f"expected an integer >= {lo}")
        if self.grad_clip is not None and (
            isinstance(self.grad_clip, bool)
            or not isinstance(self.grad_clip, (int, float))
            or not self.grad_clip >= 0
            or self.grad_clip == float("inf")
        ):
            bad("grad_clip", "expected None or a finite number >= 0")
        if self.tie_gap is not None and (
            isinstance(self.tie_gap, bool)
            or not isinstance(self.tie_gap, (int, float))
            or not 0 <= self.tie_gap < float("inf")
        ):
            bad("tie_gap", "expected None (the default for the model's dtype) or a finite number >= 0")
        if not isinstance(self.reuse, bool):
            bad("reuse", "expected True or False")
        if self.draft_policy not in DRAFT_POLICIES:
            bad("draft_policy", f"allowed values are {DRAFT_POLICIES}")
        if self.backend not in BACKENDS:
            bad("backend", f"allowed values are {BACKENDS}")
        if self.latent_dtype not in LATENT_DTYPES:
            bad("latent_dtype", f"allowed values are {LATENT_DTYPES}")
        if self.mode not in MODES:
            bad("mode", f"allowed values are {MODES}")
        if self.latent_dtype == "model" and self.backend not in ("auto", "reference"):
            bad(
                "backend",
                "latent_dtype='model' reproduces the research code and needs backend 'reference' (or 'auto')",
            )

    def to_dict(self) -> dict:
        return asdict(self)

    def update_length(self, answer_length: int) -> int:
        """L for an answer of ``answer_length`` tokens under this config."""
        return update_length(answer_length, self.rho, self.max_update_length)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]
