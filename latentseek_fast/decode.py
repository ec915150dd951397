"""Greedy decoding with a KV cache that keeps the post-final-norm latent of every token.

The decode loop does one model step and one set-membership stop test per token: stop tokens
are resolved to ids once per tokenizer, never by decoding text inside the loop.
"""

from __future__ import annotations

import functools
import inspect
import weakref
from dataclasses import dataclass

import torch

# The research code's stop words (``docs/algorithm.md``, "Interface details"): a generated token
# whose one-token decode is one of these (or the tokenizer's eos) ends the original answer.
STOP_WORDS = ("</s>", "<|im_end|>", "<|endoftext|>")
# End-of-turn tokens of common chat models (Llama 3, Gemma) besides the above; the batched
# verifier replies (``decode_batch``) stop at any of them that is a single token of the vocabulary.
CHAT_STOP_TOKENS = STOP_WORDS + ("<|eot_id|>", "<end_of_turn>")


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
    per tokenizer over the whole vocabulary, so the loop only tests set membership.
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
    """The forward keyword taking the KV cache: ``cache`` in newer transformers 5.x, else the older
    ``past_key_values`` (still accepted by 5.24 with a FutureWarning; see ``docs/notes.md``)."""
    return "cache" if "cache" in forward_params(type(module)) else "past_key_values"


def new_cache(model):
    """An empty ``DynamicCache`` for ``model`` (built with its config where the API takes one)."""
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
    """A greedy generation: new token ids, their latents ``[T, d]``, why it stopped, and what it
    cost: ``forwards`` after the one that gave the first token, ``drafted``/``accepted`` draft
    tokens fed and kept (see ``drafts.greedy_continue_drafted``)."""

    ids: list[int]
    latents: torch.Tensor
    stopped_by: str  # "stop" (a stop token was produced) or "length"
    forwards: int = 0
    drafted: int = 0
    accepted: int = 0


@torch.no_grad()
def greedy_continue(
    model,
    cache,
    last_hidden: torch.Tensor,
    *,
    stop: frozenset[int],
    max_tokens: int,
    keep_latents: bool = True,
    on_token=None,
    drafts=None,
) -> Generation:
    """Continue greedily from ``last_hidden`` ``[d]`` (the latent predicting the next token).

    ``cache`` must already hold every position before that next token. At most ``max_tokens``
    tokens are produced; the stop token is included and its latent recorded (the research code
    records the latent before the stop test). The stop token itself is never fed to the model.
    ``on_token(id)``, when given, is called with each token as soon as it is chosen.
    ``drafts``: a ``drafts.DraftRow`` whose tokens end where ``cache`` does; when given (and its
    ``k`` > 0) the same tokens are decoded with draft-verified forwards.
    """
    if drafts is not None and drafts.k > 0:
        from .drafts import greedy_continue_drafted

        return greedy_continue_drafted(
            model,
            cache,
            last_hidden,
            stop=stop,
            max_tokens=max_tokens,
            row=drafts,
            keep_latents=keep_latents,
            on_token=on_token,
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
        if on_token is not None:
            on_token(tok)
        if tok in stop:
            stopped = "stop"
            break
        if len(ids) >= max_tokens:
            break
        step_ids.fill_(tok)
        h = hidden_states(model, step_ids, cache)[0, -1]
    latents = torch.stack(lats) if lats else torch.empty(0, head.weight.shape[1], device=device)
    return Generation(ids=ids, latents=latents, stopped_by=stopped, forwards=len(ids) - 1)


@torch.no_grad()
def prefill(model, ids: torch.Tensor, cache) -> torch.Tensor:
    """Run ``ids`` ``[1, n]`` (n >= 1) through the model into ``cache``; return the last latent ``[d]``."""
    if ids.numel() == 0:
        raise ValueError("prefill needs at least one token")
    return hidden_states(model, ids, cache)[0, -1]
