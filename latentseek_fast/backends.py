"""The latent-step backends: their names, whether one can run here, and what ``auto`` picks.

Both the seek loop (``SeekConfig.backend``) and the op (``latent_policy_grad(backend=...)``)
resolve a backend through :func:`resolve_backend`, so ``auto`` means the same everywhere and an
unusable choice raises the same error. Nothing here imports Triton or probes a GPU at import.
"""

from __future__ import annotations

import os

from ._util import check_choice, say_once
from .kernels import interpreting  # the kernels' own test; that package file imports no triton

__all__ = [
    "BACKENDS",
    "INTERPRET_LARGE_ENV",
    "INTERPRETER_MAX_WEIGHTS",
    "MODES",
    "check_backend",
    "interpreter_refusal",
    "interpreting",
    "resolve_backend",
    "triton_unavailable_reason",
]

BACKENDS = ("auto", "reference", "torch", "triton")
# How the gradient's tokens are chosen: argmax (the research code) or Gumbel-max sampling.
MODES = ("greedy", "sample")


def triton_unavailable_reason(device) -> str | None:
    """Why the ``triton`` backend cannot run on ``device``, or None when it can."""
    import torch

    device = torch.device(device)
    if device.type != "cuda" and not interpreting():
        return f"the latents are on {device} (triton needs CUDA, or TRITON_INTERPRET=1 on CPU)"
    try:
        import triton  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install
        return f"triton does not import ({type(exc).__name__}: {exc})"
    return None


# Triton's interpreter runs the kernels in numpy, one program instance at a time: a
# latent_policy_grad call costs about 3.8 us per LM-head weight (107 s for the embedded model's
# 49152 x 576 head, issue 23; 33 s for a 49152 x 64 head on a loaded 2-core machine, 10 us), where
# the torch backend takes 0.027 s. Seeks on heads above INTERPRETER_MAX_WEIGHTS (about 16 s a
# call: the tests' tiny 49152 x 64 models stay below; a real vocabulary at a real width does
# not) are refused unless INTERPRET_LARGE_ENV is set to 1.
INTERPRETER_SECONDS_PER_WEIGHT = 3.8e-6
INTERPRETER_MAX_WEIGHTS = 1 << 22
INTERPRET_LARGE_ENV = "LATENTSEEK_INTERPRET_LARGE"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def interpreter_refusal(device, head_shape: tuple[int, int], max_steps: int) -> str | None:
    """Why a seek on the ``triton`` backend is refused: it would run under Triton's interpreter
    (``TRITON_INTERPRET=1``, latents not on CUDA) on an LM head of ``head_shape`` (vocab,
    hidden) above ``INTERPRETER_MAX_WEIGHTS`` weights, without ``LATENTSEEK_INTERPRET_LARGE=1``.
    The reason states the estimated time of ``max_steps`` steps (``max_steps + 1`` passes over
    the head). None when the seek may run."""
    import torch

    if torch.device(device).type == "cuda" or not interpreting():
        return None
    vocab, hidden = head_shape
    weights = vocab * hidden
    if weights <= INTERPRETER_MAX_WEIGHTS or os.environ.get(INTERPRET_LARGE_ENV, "0") not in ("", "0"):
        return None
    per_pass = weights * INTERPRETER_SECONDS_PER_WEIGHT
    return (
        f"under TRITON_INTERPRET=1 (Triton's CPU interpreter) the {vocab} x {hidden} LM head "
        f"({weights / 1e6:.1f}M weights, above {INTERPRETER_MAX_WEIGHTS / 1e6:.1f}M) takes about "
        f"{_duration(per_pass)} per latent step, about {_duration(per_pass * (max_steps + 1))} for "
        f"max_steps={max_steps} (the torch backend: well under a second); use the torch backend, "
        f"or set {INTERPRET_LARGE_ENV}=1 to run it anyway"
    )


def check_backend(backend) -> str:
    """``backend`` when it is one of :data:`BACKENDS`, else a ValueError naming it."""
    return check_choice("backend", backend, BACKENDS)


def resolve_backend(
    backend: str,
    device,
    *,
    latent_dtype: str = "fp32",
    head_shape: tuple[int, int] | None = None,
    max_steps: int = 1,
) -> str:
    """The concrete backend (``reference``, ``torch`` or ``triton``) for ``backend`` on ``device``.

    ``auto`` picks ``reference`` when the latents are kept in the model dtype (only the
    reference stepper reproduces the research code's ``torch.optim.Adam`` on them), ``triton``
    on CUDA when Triton imports, else ``torch``; the choice and its reason are logged once.
    An explicit ``triton`` that cannot run raises a ValueError saying why; so does one that would
    run a seek of ``max_steps`` steps under the interpreter on a large ``head_shape``
    (``interpreter_refusal``; seeks pass the shape before decoding anything).
    """
    check_backend(backend)
    if backend == "triton":
        why = triton_unavailable_reason(device)
        if why is not None:
            raise ValueError(f"backend='triton' cannot run: {why}")
        why = None if head_shape is None else interpreter_refusal(device, head_shape, max_steps)
        if why is not None:
            raise ValueError(f"backend='triton' refused: {why}")
        return backend
    if backend != "auto":
        return backend
    if latent_dtype == "model":
        chosen, why = "reference", "latent_dtype='model' keeps the research code's optimiser"
    else:
        import torch

        device = torch.device(device)
        # Under TRITON_INTERPRET=1 triton runs on CPU too, but only as a slow check, never by default.
        if device.type != "cuda":
            why = f"the latents are on {device}, not CUDA"
        else:
            why = triton_unavailable_reason(device)
        chosen = "torch" if why else "triton"
    reason = f" ({why})" if why else ""
    say_once(f"auto-backend-{chosen}", f"latentseek_fast: backend 'auto' chose '{chosen}'{reason}")
    return chosen
