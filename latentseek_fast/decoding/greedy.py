"""One greedy generation run to completion: ``greedy(model, feed_ids, ...)`` -> ``Generation``.

It feeds ``feed_ids`` (a prompt, or the tokens after what a cache already holds) and decodes
greedily, with drafts when given (``rows.advance``), keeping the post-final-norm latent of every
token. By default on a fresh ``CacheDecoder`` (any causal LM); given a decoder (and a row of it),
it continues on that row's cache, which afterwards holds every position before the last token
produced (the stop token is never fed), so the caller can roll it back and continue from there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .._util import check_int
from .decoder import CacheDecoder, Decoder
from .drafts import DraftRow
from .model import lm_head_of, softcap_of
from .rows import DecodeStats, Row, run


@dataclass
class Generation:
    """A greedy generation: new token ids, their latents ``[T, d]`` (``latents[t]`` produced
    ``ids[t]``; ``[0, d]`` without ``keep_latents``), why it stopped, and what it cost:
    ``forwards`` after the one that gave the first token, ``drafted``/``accepted`` draft tokens
    fed and kept."""

    ids: list[int]
    latents: torch.Tensor
    stopped_by: str  # "stop" (a stop token was produced, and is the last id) or "length"
    forwards: int = 0
    drafted: int = 0
    accepted: int = 0
    gaps: list[float] | None = None  # the top-2 logit gap of the decision behind each id

    @property
    def stats(self) -> DecodeStats:
        return DecodeStats(
            tokens=len(self.ids), forwards=self.forwards, drafted=self.drafted, accepted=self.accepted
        )


@torch.no_grad()
def greedy(
    model,
    feed_ids: Sequence[int] | torch.Tensor,
    *,
    stop: frozenset[int],
    max_tokens: int,
    keep_latents: bool = True,
    on_token: Callable[[int], None] | None = None,
    drafts: DraftRow | None = None,
    decoder: Decoder | None = None,
    slot: int | None = None,
) -> Generation:
    """Feed ``feed_ids`` (>= 1 token; a list or a 1-D / ``[1, n]`` tensor) and decode greedily.

    At most ``max_tokens`` tokens are produced; a token in ``stop`` ends the generation and is
    included, its latent recorded (the research code records the latent before the stop test),
    but it is never fed. ``on_token(id)`` is called with each token as soon as it is chosen.
    ``drafts``: a ``DraftRow`` whose tokens end with ``feed_ids``; the same tokens are then decoded
    with draft-verified forwards (its ``policy`` says how many drafts a forward feeds).
    ``decoder``/``slot``: continue on row ``slot`` of ``decoder`` (a new row of it when ``slot``
    is None); by default a new ``CacheDecoder``.
    """
    check_int("max_tokens", max_tokens)
    if decoder is None and slot is not None:
        raise ValueError(f"slot={slot}: a slot needs its decoder (decoder=None)")
    feed = feed_ids.reshape(-1).tolist() if torch.is_tensor(feed_ids) else list(feed_ids)
    if not feed:
        raise ValueError("feed_ids is empty: greedy decoding starts from at least one token")
    head = lm_head_of(model)
    if decoder is None:
        decoder = CacheDecoder(model)
    if slot is None:
        slot = decoder.add_row()
    row = Row(
        slot, feed, stop=stop, cap=max_tokens, keep_latents=keep_latents, drafts=drafts, on_token=on_token
    )
    policy = drafts.policy if drafts is not None else "full"
    run(decoder, head, [row], policy=policy, softcap=softcap_of(model))
    return Generation(
        ids=row.ids,
        latents=row.latent_tensor(head.weight.shape[1], head.weight.device),
        stopped_by=row.stopped_by,
        forwards=row.stats.forwards,
        drafted=row.stats.drafted,
        accepted=row.stats.accepted,
        gaps=row.gaps,
    )
