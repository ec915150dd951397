"""What the decoding layer needs from a Hugging Face causal LM: its head, its backbone's cache
keyword, a KV cache that can be rolled back anywhere, and the post-final-norm latents."""

from __future__ import annotations

import functools
import inspect

import torch


def lm_head_of(model) -> torch.nn.Module:
    """The model's LM head, or a ValueError when it has none (e.g. a bare ``AutoModel``)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None or not hasattr(head, "weight") or not hasattr(model, "model"):
        raise ValueError(
            f"model={type(model).__name__}: expected a causal LM with an LM head (e.g. from "
            "AutoModelForCausalLM) whose `.model` returns post-final-norm hidden states"
        )
    return head


def softcap_of(model) -> float | None:
    """Gemma-2 style final logit soft-cap from the config, or None."""
    cap = getattr(model.config, "final_logit_softcapping", None)
    return float(cap) if cap else None


@functools.lru_cache(maxsize=64)
def forward_params(cls: type) -> frozenset[str]:
    """The keyword names of ``cls.forward`` (cached per class)."""
    return frozenset(inspect.signature(cls.forward).parameters)


def cache_keyword(module) -> str:
    """The forward keyword taking the KV cache: ``cache`` in newer transformers 5.x, else the older
    ``past_key_values`` (still accepted by 5.24 with a FutureWarning; see ``docs/notes.md``)."""
    return "cache" if "cache" in forward_params(type(module)) else "past_key_values"


def new_cache(model):
    """An empty ``DynamicCache`` for ``model`` whose every attention layer keeps all its positions.

    Built with the model's config (its layer kinds), except that sliding-window layers are
    replaced by full ones: the model still applies the window through its attention mask, the
    outputs are the same (tested on tiny Mistral and Qwen2 models), and the cache can be rolled
    back to any length, which a sliding-window layer cannot do once its window is full.
    """
    # transformers is imported on first use only
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

    try:
        cache = DynamicCache(config=model.config)
    except TypeError:  # older transformers: layers made on first use, all full
        return DynamicCache()
    layers = getattr(cache, "layers", None)
    if layers:
        cache.layers = [DynamicLayer() if isinstance(x, DynamicSlidingWindowLayer) else x for x in layers]
    return cache


def cache_length(cache) -> int:
    n = cache.get_seq_length()
    return int(n.item()) if torch.is_tensor(n) else int(n)


def truncate_cache(cache, keep: int) -> None:
    """Drop every cached position after the first ``keep`` (works on old and new cache APIs)."""
    extra = cache_length(cache) - keep
    if extra > 0:
        cache.crop(-extra)
    elif extra < 0:
        raise ValueError(f"cannot truncate a cache of {keep + extra} positions to {keep}")


def hidden_states(model, ids: torch.Tensor, cache) -> torch.Tensor:
    """Post-final-norm hidden states ``[1, n, d]`` of ``ids`` ``[1, n]``, extending ``cache`` in place."""
    backbone = model.model
    out = backbone(input_ids=ids, use_cache=True, **{cache_keyword(backbone): cache})
    return out[0]
