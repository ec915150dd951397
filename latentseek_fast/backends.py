"""The latent-step backends: their names, whether one can run here, and what ``auto`` picks.

Both the seek loop (``SeekConfig.backend``) and the op (``latent_policy_grad(backend=...)``)
resolve a backend through :func:`resolve_backend`, so ``auto`` means the same everywhere and an
unusable choice raises the same error. Nothing here imports Triton or probes a GPU at import.
"""

from __future__ import annotations

from ._util import check_choice, say_once
from .kernels import interpreting  # the kernels' own test; that package file imports no triton

__all__ = [
    "BACKENDS",
    "MODES",
    "check_backend",
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


def check_backend(backend) -> str:
    """``backend`` when it is one of :data:`BACKENDS`, else a ValueError naming it."""
    return check_choice("backend", backend, BACKENDS)


def resolve_backend(backend: str, device, *, latent_dtype: str = "fp32") -> str:
    """The concrete backend (``reference``, ``torch`` or ``triton``) for ``backend`` on ``device``.

    ``auto`` picks ``reference`` when the latents are kept in the model dtype (only the
    reference stepper reproduces the research code's ``torch.optim.Adam`` on them), ``triton``
    on CUDA when Triton imports, else ``torch``; the choice and its reason are logged once.
    An explicit ``triton`` that cannot run raises a ValueError saying why.
    """
    check_backend(backend)
    if backend == "triton":
        why = triton_unavailable_reason(device)
        if why is not None:
            raise ValueError(f"backend='triton' cannot run: {why}")
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
