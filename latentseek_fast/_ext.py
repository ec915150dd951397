"""The one loader of the compiled extension ``latentseek_fast._C`` (native ``torch.ops.latentseek``).

Nothing here runs at package import: the compiled module is imported on the first call to
:func:`load` (or :func:`ext_available`), and a failure is logged once with its reason. The same
call registers the op's fake (meta) kernel, so ``torch.compile`` and ``opcheck`` can trace it;
the C++ schema names this module as the fake's home (``m.set_python_module``). Build the
extension with ``pip install --no-build-isolation -e .``; ``LATENTSEEK_NO_EXT=1`` skips the
build, and the ops then fall back to plain torch.
"""

from __future__ import annotations

import importlib
import logging
import threading

from latentseek_fast._util import say_once

__all__ = ["LATENT_ADAM", "ext_available", "ext_has_kernel", "ext_unavailable_reason", "load"]

LATENT_ADAM = "latentseek::latent_adam_"

_lock = threading.Lock()
_loaded: bool | None = None  # None: not tried yet
_reason: str | None = None


def _latent_adam_fake(latents, exp_avg, exp_avg_sq, master, direction, reward, reward_scalar, step, *hyper):
    """Fake kernel of ``latent_adam_``: the tensor checks of the real kernels, no compute.

    The op mutates its first four arguments in place and returns nothing. ``hyper`` is
    ``(lr, beta1, beta2, eps, max_grad_norm)``: scalars that change no shape or dtype.
    """
    import torch

    torch._check(latents.dim() == 2, lambda: f"latent_adam_: latents must be 2-D, got {latents.shape}")
    torch._check(
        latents.dtype in (torch.float32, torch.bfloat16, torch.float16),
        lambda: f"latent_adam_: latents have dtype {latents.dtype}; allowed: float32, bfloat16, float16",
    )
    fp32_state = [("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq)]
    if master is not None:
        fp32_state.append(("master", master))
    for name, t in [*fp32_state, ("direction", direction)]:
        torch._check(
            t.shape == latents.shape,
            lambda name=name, t=t: f"latent_adam_: {name} has shape {t.shape}, latents {latents.shape}",
        )
        torch._check(
            t.device == latents.device,
            lambda name=name, t=t: f"latent_adam_: {name} is on {t.device}, latents on {latents.device}",
        )
    for name, t in fp32_state:
        torch._check(
            t.dtype == torch.float32, lambda name=name, t=t: f"latent_adam_: {name} has dtype {t.dtype}"
        )
    torch._check(
        direction.dtype in (torch.float32, latents.dtype),
        lambda: f"latent_adam_: direction has dtype {direction.dtype}",
    )
    if reward is not None:
        torch._check(
            reward.dim() == 1 and reward.shape[0] == latents.shape[0] and reward.dtype == torch.float32,
            lambda: f"latent_adam_: reward must be fp32 [N], got {reward.dtype} {tuple(reward.shape)}",
        )
    torch._check(step >= 1, lambda: f"latent_adam_: step={step}; expected >= 1")
    return None


def _register_fake() -> None:
    import torch

    torch.library.register_fake(LATENT_ADAM)(_latent_adam_fake)


def load() -> bool:
    """Import the compiled module and register its fake kernel, once; True when its ops exist."""
    global _loaded, _reason
    if _loaded is not None:
        return _loaded
    with _lock:
        if _loaded is not None:
            return _loaded
        try:
            import torch  # noqa: F401  (the extension links against torch's shared libraries)

            importlib.import_module("latentseek_fast._C")
        except Exception as exc:  # ImportError, OSError (undefined symbols, ABI mismatch), ...
            _reason = (
                f"latentseek_fast._C could not be imported ({type(exc).__name__}: {exc}); "
                "rebuild with `pip install --no-build-isolation -e .` (LATENTSEEK_NO_EXT=1 skips it)"
            )
            _loaded = False
            say_once("ext-unavailable", f"native ops off, using the torch fallback: {_reason}", logging.INFO)
            return False
        _register_fake()
        _loaded = True
        _reason = None
    return True


def ext_available() -> bool:
    """Whether the compiled extension is importable (imports it on the first call)."""
    return load()


def ext_unavailable_reason() -> str | None:
    """Why the extension is not available, or None when it is (imports it on the first call)."""
    load()
    return _reason


def ext_has_kernel(op: str, device_type: str) -> bool:
    """Whether ``torch.ops.latentseek.<op>`` has a kernel for ``device_type`` ("cpu", "cuda")."""
    if not load():
        return False
    import torch

    key = {"cpu": "CPU", "cuda": "CUDA"}.get(device_type)
    if key is None:
        return False
    try:
        return bool(torch._C._dispatch_has_kernel_for_dispatch_key(f"latentseek::{op}", key))
    except Exception:  # private API: if it moves, only CPU is assumed
        return key == "CPU"
