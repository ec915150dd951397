"""Greedy decoding with a KV cache that keeps the post-final-norm latent of every token.

The decode loop does one model step and one set-membership stop test per token: stop tokens
are resolved to ids once per tokenizer, never by decoding text inside the loop.
"""

from __future__ import annotations

import functools
import inspect
import weakref
from dataclasses import dataclass, field

import torch

# The research code's stop words (LATENTSEEK.md section 5); the tokenizer's eos is added to them.
STOP_WORDS = ("</s>", "<|im_end|>", "<|endoftext|>")


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


_stop_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # tokenizer -> {words: ids}


def ids_decoding_to(tokenizer, words) -> frozenset[int]:
    """Every token id whose one-token decode is exactly one of ``words``.

    This is the research code's per-token text test (``decode([id]) in stop_words``) done once
    per tokenizer over the whole vocabulary (0.3 s for 49152 ids), so the loop only tests set
    membership.
    """
    words = tuple(sorted({w for w in words if w}))
    per_tok = _stop_cache.setdefault(tokenizer, {})
    if words not in per_tok:
        texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
        wanted = set(words)
        per_tok[words] = frozenset(i for i, t in enumerate(texts) if t in wanted)
    return per_tok[words]


def stop_ids(tokenizer, eos_only: bool = False) -> frozenset[int]:
    """Ids that end a generation: the stop words plus eos, or (``eos_only``) eos alone."""
    eos = tokenizer.eos_token
    return ids_decoding_to(tokenizer, (eos,) if eos_only else STOP_WORDS + ((eos,) if eos else ()))


@functools.lru_cache(maxsize=64)
def forward_params(cls: type) -> frozenset[str]:
    """The keyword names of ``cls.forward`` (cached per class)."""
    return frozenset(inspect.signature(cls.forward).parameters)


def cache_keyword(module) -> str:
    """The forward keyword taking the KV cache: ``cache`` in transformers >= 5.20, else the older
    ``past_key_values`` (5.24 still accepts it with a FutureWarning; the GPU image has 5.17)."""
    return "cache" if "cache" in forward_params(type(module)) else "past_key_values"


def new_cache(model):
    from transformers import DynamicCache

    try:
        return DynamicCache(config=model.config)
    except TypeError:  # older transformers
        return DynamicCache()


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


@dataclass
class Generation:
    """A greedy generation: new token ids, their latents ``[T, d]`` and why it stopped."""

    ids: list[int]
    latents: torch.Tensor
    stopped_by: str  # "stop" (a stop token was produced) or "length"
    steps: int = 0
    extra: dict = field(default_factory=dict)


@torch.no_grad()
def greedy_continue(
    model,
    cache,
    last_hidden: torch.Tensor,
    *,
    stop: frozenset[int],
    max_tokens: int,
    keep_latents: bool = True,
    drafts=None,
) -> Generation:
    """Continue greedily from ``last_hidden`` ``[d]`` (the latent predicting the next token).

    ``cache`` must already hold every position before that next token. At most ``max_tokens``
    tokens are produced; the stop token is included and its latent recorded (the research code
    records the latent before the stop test). The stop token itself is never fed to the model.
    ``drafts``: a ``drafts.DraftRow`` whose tokens end where ``cache`` does; when given (and its
    ``k`` > 0) the same tokens are decoded with draft-verified forwards.
    """
    if drafts is not None and drafts.k > 0:
        from .drafts import greedy_continue_drafted

        return greedy_continue_drafted(
            model, cache, last_hidden, stop=stop, max_tokens=max_tokens, row=drafts, keep_latents=keep_latents
        )
    head = lm_head_of(model)
    device = last_hidden.device
    ids: list[int] = []
    lats: list[torch.Tensor] = []
    h = last_hidden
    stopped = "length"
    step_ids = torch.empty((1, 1), dtype=torch.long, device=device)
    while True:
        if keep_latents:
            lats.append(h)
        tok = int(torch.argmax(head(h)).item())
        ids.append(tok)
        if tok in stop:
            stopped = "stop"
            break
        if len(ids) >= max_tokens:
            break
        step_ids.fill_(tok)
        h = hidden_states(model, step_ids, cache)[0, -1]
    latents = torch.stack(lats) if lats else torch.empty(0, head.weight.shape[1], device=device)
    return Generation(ids=ids, latents=latents, stopped_by=stopped, steps=len(ids))


@torch.no_grad()
def prefill(model, ids: torch.Tensor, cache) -> torch.Tensor:
    """Run ``ids`` ``[1, n]`` (n >= 1) through the model into ``cache``; return the last latent ``[d]``."""
    if ids.numel() == 0:
        raise ValueError("prefill needs at least one token")
    return hidden_states(model, ids, cache)[0, -1]
