"""The optional compiled extension ``latentseek_fast._C`` (native ``torch.ops.latentseek`` ops).

Nothing here runs at package import: the compiled module is imported on the first call to
:func:`ext_available` (or :func:`load`), and a failure is logged once with its reason. Build it
with ``pip install --no-build-isolation -e .``; ``LATENTSEEK_NO_EXT=1`` skips the build, and the
ops then fall back to plain torch.
"""

from __future__ import annotations

import importlib
import logging
import threading

from latentseek_fast._util import say_once

__all__ = ["ext_available", "ext_unavailable_reason", "ext_has_kernel", "load"]

_lock = threading.Lock()
_loaded: bool | None = None  # None: not tried yet
_reason: str | None = None


def load() -> bool:
    """Import the compiled module once; True when its ops are registered."""
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
        _loaded = True
        _reason = None
    # Outside the lock: registering the fake kernel may import ops modules that call load().
    from latentseek_fast.ops.latent_adam import _register_fake

    _register_fake()
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
