"""The batched seek engine: many problems in flight, their decoding in one forward per step.

``scheduler`` (``seek_many``, ``iter_seek``: one state machine per problem, continuous
batching, decoding on ``decoding.slots.HFDecoder``), ``latent`` (the latent step of many
problems in one call), ``events`` (progress events).
"""

from .events import IterationDone, OriginalDone, OriginalToken, ProblemDone
from .scheduler import ProblemError, iter_seek, seek_many

__all__ = [
    "IterationDone",
    "OriginalDone",
    "OriginalToken",
    "ProblemDone",
    "ProblemError",
    "iter_seek",
    "seek_many",
]
