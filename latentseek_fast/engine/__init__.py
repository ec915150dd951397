"""The seek algorithm and its drivers.

``problem`` (Algorithm 1 for one problem, as a state machine that never runs the model),
``sequential`` (``seek``: one problem on a plain cache; ``compat``'s entry), ``batched``
(``seek_many``/``iter_seek``: many problems in flight on a slot KV store), ``latent`` (the
latent step, for one problem or many in one call), ``result`` (``SeekResult``, phase times),
``events`` (progress events).
"""

from .batched import iter_seek, seek_many
from .events import DecodeProgress, IterationDone, OriginalDone, OriginalToken, ProblemDone, VerifyProgress
from .problem import ProblemError
from .result import SeekResult
from .sequential import seek

__all__ = [
    "DecodeProgress",
    "IterationDone",
    "OriginalDone",
    "OriginalToken",
    "ProblemDone",
    "ProblemError",
    "SeekResult",
    "VerifyProgress",
    "iter_seek",
    "seek",
    "seek_many",
]
