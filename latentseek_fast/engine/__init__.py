"""The batched seek engine: many problems in flight, their decoding in one forward per step.

``scheduler`` (``seek_many``, ``iter_seek``: one state machine per problem, continuous
batching), ``decoder`` (the ``Decoder`` interface and its Hugging Face implementation),
``latent`` (the latent step of many problems in one call), ``events`` (progress events).
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
