"""The ``Decoder`` interface, and ``CacheDecoder``: one row over a transformers ``DynamicCache``.

A decoder holds rows (token streams), each with its own cached positions, and feeds them:

- ``add_row()``: a new row (its own cache positions); ``drop_row(row)`` frees it;
- ``step({row: tokens})``: feed each listed row any number (>= 1) of tokens and return the
  post-final-norm latents ``[n, d]`` of every fed position (a draft verifier feeds several
  tokens per row and keeps the prefix it accepts). An implementation may cut a step into
  several forwards (long feeds apart, pieces of bounded size); a row's latents are those of
  its tokens fed at once;
- ``rollback(row, length)``: forget every cached position of ``row`` after the first ``length``,
  leaving the other rows untouched;
- ``length(row)``: how many positions ``row`` has cached;
- ``fork(row, source, length)``: make ``row``'s cache the first ``length`` positions of
  ``source``'s (prompts that share a prefix, like the four verifier prompts of one answer, pay
  for it once);
- ``step_cost(widths)``: what a step that feeds rows ``widths`` tokens each costs, in fed
  positions (``drafts.ForwardCost``), as the decoder would run it (the cost model of drafts);
- ``long_feed``: feeds longer than this are long (a prompt); a drafting row keeps its feed
  within it, so that drafts never make a row's feed long.

Two implementations: ``slots.HFDecoder``, many rows in one padded KV store (one forward for all
rows; full causal attention with ``sdpa``/``eager`` only, see ``slots.slot_support``), and
``CacheDecoder`` here, one row on the model's own cache, which serves any Hugging Face causal
LM (sliding-window layers, other attention implementations).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from .drafts import forward_cost_of
from .model import cache_length, hidden_states, lm_head_of, new_cache, truncate_cache

# Feeds longer than this many tokens are long (``Decoder.long_feed``): HFDecoder may run them
# in a forward of their own; drafts stay below it.
LONG_FEED = 16


class Decoder:
    """The interface the drivers and ``rows.advance`` use (see the module docstring)."""

    long_feed: int = LONG_FEED

    def add_row(self) -> int:
        raise NotImplementedError

    def drop_row(self, row: int) -> None:
        raise NotImplementedError

    def length(self, row: int) -> int:
        raise NotImplementedError

    def rollback(self, row: int, length: int) -> None:
        raise NotImplementedError

    def fork(self, row: int, source: int, length: int) -> None:
        raise NotImplementedError

    def step(self, feeds: Mapping[int, Sequence[int]]) -> dict[int, torch.Tensor]:
        raise NotImplementedError

    def step_cost(self, widths: Sequence[int]) -> float:
        """What ``step`` would cost for fed rows of these feed widths, in fed positions, run as the
        decoder would run it (``drafts.ForwardCost.forward`` per forward)."""
        raise NotImplementedError


class CacheDecoder(Decoder):
    """One row (row 0) on a transformers cache: ``step`` is one backbone call with the cache,
    ``rollback`` crops it. The model builds its own attention masks, so any causal LM with a
    backbone works, whatever its attention implementation or layer kinds (``model.new_cache``
    keeps sliding-window layers whole, so any rollback works). ``cache``: continue on an existing
    cache (row 0 then holds its positions); by default a new, empty one. No fork: one row only.
    """

    def __init__(self, model, cache=None):
        head = lm_head_of(model)  # validates: a causal LM with a backbone
        self.model = model
        self.device = head.weight.device
        self.costs = forward_cost_of(self.device)
        self.cache = new_cache(model) if cache is None else cache
        self.live = False
        self.forwards = 0  # backbone calls (for benchmarks and tests)

    def add_row(self) -> int:
        if self.live:
            raise ValueError("add_row: CacheDecoder holds one row and row 0 is live; HFDecoder holds many")
        self.live = True
        return 0

    def drop_row(self, row: int) -> None:
        """Free row 0; its cache is emptied (a new cache), so the next row starts empty."""
        self._check(row)
        self.live = False
        self.cache = new_cache(self.model)

    def length(self, row: int) -> int:
        self._check(row)
        return cache_length(self.cache)

    def step_cost(self, widths: Sequence[int]) -> float:
        return sum(self.costs.forward(1, w) for w in widths)  # one call per row fed

    def rollback(self, row: int, length: int) -> None:
        n = self.length(row)
        if not 0 <= length <= n:
            raise ValueError(f"rollback(row={row}, length={length}): row has {n} positions")
        truncate_cache(self.cache, length)

    def fork(self, row: int, source: int, length: int) -> None:
        raise ValueError(
            f"fork(row={row}, source={source}, length={length}): CacheDecoder holds one row, so it "
            "cannot fork; HFDecoder can (where slots.slot_support(model) is None)"
        )

    @torch.no_grad()
    def step(self, feeds: Mapping[int, Sequence[int]]) -> dict[int, torch.Tensor]:
        """Feed row 0's tokens in one backbone call; return their latents ``[n, d]``."""
        out = {}
        for row, toks in feeds.items():
            self._check(row)
            if len(toks) == 0:
                raise ValueError(f"step: row {row} was given no tokens")
            ids = torch.tensor([list(toks)], dtype=torch.long, device=self.device)
            out[row] = hidden_states(self.model, ids, self.cache)[0]
            self.forwards += 1
        return out

    def _check(self, row: int) -> None:
        if row != 0 or not self.live:
            raise ValueError(f"row={row}: no such row (live rows: {[0] if self.live else []})")
