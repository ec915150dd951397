"""latentseek-fast: fused kernels and a KV-cached seek loop for LatentSeek.

Importing this package needs no GPU, no Triton compiler and no built extension: the heavy
pieces load on first use.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "SeekConfig": "latentseek_fast.config",
    "SeekResult": "latentseek_fast.engine.result",
    "seek": "latentseek_fast.engine.sequential",
    "seek_many": "latentseek_fast.engine.batched",
    "iter_seek": "latentseek_fast.engine.batched",
    "LatentGrad": "latentseek_fast.ops.latent_policy_grad",
    "latent_policy_grad": "latentseek_fast.ops.latent_policy_grad",
    "latent_adam_": "latentseek_fast.ops.latent_adam",
    "ext_available": "latentseek_fast._ext",
    "load_model": "latentseek_fast.app.models",
    "load_problems": "latentseek_fast.app.data",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'latentseek_fast' has no attribute {name!r}")


def __dir__():
    return __all__
