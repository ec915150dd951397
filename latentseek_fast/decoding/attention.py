"""Grouped-query attention over the slot store without copying its keys (``HFDecoder`` on a CPU).

Transformers' ``sdpa`` attention repeats every key/value head for the query heads that share it
(``repeat_kv``) whenever a mask is passed and more than one token per row is fed: the slot store
always passes its 4-D mask, so each forward that feeds drafts, a re-decoded prefix or a prompt
copied the whole attended cache ``num_key_value_groups`` times per layer (3x for SmolLM2: 9 query
heads over 3 key/value heads). ``torch``'s SDPA takes the grouping itself (``enable_gqa``), mask
and all. Measured on the embedded SmolLM2 (fp32, 2 threads, 2-core AMD EPYC, every row 400
positions cached; ``bench/results/attention/``), a forward of 64 rows x 2 / 4 / 9 / 16 tokens took
1876 / 1928 / 2749 / 3224 ms with the repeat and 438 / 648 / 1090 / 1796 ms without; one token
per row (which transformers already runs without the repeat) is unchanged (267 vs 283 ms, within
the run-to-run noise), as are 1 and 16 rows within ~20 %. The same products are summed, so
the values agree to rounding (tests/decoding/test_attention.py).

On CUDA the store keeps transformers' ``sdpa``: its fused kernels take no mask together with
grouped heads, and a copy at HBM speed is not what limits a GPU step (not measured here).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

NAME = "latentseek_slot_gqa"
_registered = False


def slot_gqa_attention(
    module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, is_causal=None, **kwargs
):
    """The attention a Llama-style layer calls (transformers' ``AttentionInterface`` signature):
    ``query [B, Hq, W, D]`` over ``key``/``value [B, Hkv, S, D]`` with the slot store's 4-D mask
    (bool, or additive float), ``Hq`` a multiple of ``Hkv``; returns ``([B, W, Hq, D], None)``."""
    if kwargs.get("softcap") is not None:
        raise ValueError("slot attention: a logit softcap inside attention is not supported (use eager)")
    out = torch.nn.functional.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=attention_mask,
        dropout_p=0.0,
        scale=scaling,
        enable_gqa=query.shape[1] != key.shape[1],
    )
    return out.transpose(1, 2).contiguous(), None


def register() -> str:
    """Register ``slot_gqa_attention`` with transformers (once) under ``NAME``; returns the name."""
    global _registered
    if not _registered:
        from transformers import AttentionInterface

        AttentionInterface.register(NAME, slot_gqa_attention)
        _registered = True
    return NAME


@contextmanager
def attention_of(config, name: str):
    """Run the block with ``config``'s attention implementation set to ``name``, restored after
    (also on error): the model a user passed in is left as it was."""
    old = config._attn_implementation
    config._attn_implementation = name
    try:
        yield
    finally:
        config._attn_implementation = old
