"""``HFDecoder``: many rows (token streams) of a Hugging Face causal LM in one padded KV store,
advanced together, one forward per step (``decoder.Decoder`` is the interface); and
``slot_support(model)``: whether the store can serve a model, else why not.

How ``HFDecoder`` keeps the rows apart. Each row owns one slot of a shared KV store
``[slots, kv_heads, capacity, head_dim]`` per layer and a length ``n_b``. A step feeds a padded
block of width ``W`` (the longest feed); row ``b``'s token ``i`` gets position ``n_b + i``, its
keys/values are written at column ``n_b + i`` of its slot, and it attends exactly the columns
``j <= n_b + i`` of its own slot (an explicit 4-D mask). So a row's valid cache is always the
prefix ``[0, n_b)`` of its slot: rolling a row back is setting ``n_b`` (stale columns are
overwritten by the next feed and never attended before that), and other rows never see it.
Padding positions of a shorter feed compute throw-away values at columns beyond their row's
length, which are finite (every query attends at least its own column) and never attended
later. Positions are explicit, so a row's numbers are those of the same tokens decoded alone; in
exact arithmetic a batched step equals per-row decoding.

A step computes only the rows it feeds. A row's handle (what ``add_row`` returns) is stable,
but the slot it lives in is not: before a forward, every fed row that sits above the first
``k`` slots (``k`` rows fed) moves into a slot below ``k`` whose row is not fed (free, or
waiting: for a reward, a latent step, its verifier replies, a fork), the two swapping their
``n_b`` columns. The forward then runs over slots ``0..k-1``, views of the store without a copy.
A move copies the row's cached columns once (SmolLM2: 46 KB per position, ~23 MB for 500
positions, a few ms), about what one step of an idle row costs (each row of a SmolLM2 step adds
~3.7 ms on a 2-core CPU: 49 ms for 1 row, 105 ms for 16, fp32, 2 threads), and a row waits for
many steps (a verifier reply is hundreds of tokens; a free slot waits for good), so moving
always pays.

Why one shared padded store rather than one ``DynamicCache`` per row: a forward over many
rows needs their keys in one tensor, and gathering per-row caches into it every token would
copy the whole KV each step. Why not a ``DynamicCache`` with a batch dimension: it appends the
same number of columns to every row, so a rollback of one row or a long feed of another
leaves holes in all rows; here writes are per-row. The cost: a step pads its fed rows to the
widest feed, unless ``plan`` runs the wide feeds apart. A forward never computes more than
``max_positions`` positions: longer feeds are fed in pieces, which bounds the attention scores'
memory.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from contextlib import nullcontext

import torch

from .._util import check_int
from . import attention
from .decoder import LONG_FEED, Decoder
from .drafts import ForwardCost, forward_cost_of
from .model import cache_keyword, lm_head_of

ATTN_IMPLEMENTATIONS = ("sdpa", "eager")

# Most positions one forward computes (rows x padded width); longer feeds go in pieces
# (``HFDecoder._chunked``). Attention with an explicit mask holds scores of heads x positions x
# kv_len: at 16 self-reward verifier prompts of ~1300 tokens in one forward that was ~1 GB per
# layer for SmolLM2 and a rank passed 14 GB (bench/results/accuracy/README.md); at 1024
# positions it is ~50 MB. Pieces cost almost nothing extra: on the embedded SmolLM2 (fp32, 1
# thread) a forward of 1 token takes 80 ms and one of 9 tokens 158 ms (README, Drafted decoding),
# so a forward's fixed cost is ~70 ms against ~10 ms per position, < 1 % of a 1024-position
# piece; the attention work is the same cut or not. GPU_MAX_POSITIONS is not measured (no GPU
# run yet): a GEMM over 8192 rows has 64 row tiles of 128 (times its column tiles), ample work
# for the H200's 132 SMs, and activations stay at 8192 x hidden size per tensor.
CPU_MAX_POSITIONS = 1024
GPU_MAX_POSITIONS = 8192
# The KV store grows by this factor (at least GROW_COLUMNS columns / 4 slots) when a step needs
# more: each growth copies the store, ~2x its final size copied in all (doubling: ~1x), and at
# most a third of it is unused (doubling: half).
GROWTH = 1.5
GROW_COLUMNS = 256


def kv_bytes_per_position(model) -> int:
    """Bytes one cached position of one row takes in the slot store (keys and values of every
    layer, in the model's dtype); SmolLM2-135M in fp32: 2 x 30 layers x 3 heads x 64 x 4 = 46 KB."""
    cfg = _text_config(model)
    kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    itemsize = next(model.parameters()).element_size()
    return 2 * cfg.num_hidden_layers * kv_heads * head_dim * itemsize


def free_memory(device) -> int:
    """Bytes free on ``device``: the GPU's free memory, or the host's available memory (Linux
    ``MemAvailable``, which counts reclaimable page cache; else the free pages)."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


class _SlotKV:
    """Per-layer KV store with per-row write offsets; the object the model's attention updates.

    ``update`` is the only method the Llama/Qwen2-style attention layers call (the 4-D mask and
    explicit positions mean the model never asks the cache for its length).
    """

    def __init__(self, offsets, width: int, kv_len: int, store: list, slots, every_slot: bool):
        self.cols = offsets[:, None] + torch.arange(width, device=offsets.device)[None, :]  # [B, W]
        self.rows = slots[:, None].expand_as(self.cols)
        self.slots, self.every_slot = slots, every_slot
        self.kv_len = kv_len
        self.store = store  # [(K, V)] per layer, each [slots, H, capacity, D]
        self.n = slots.numel()

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args, **kwargs):
        K, V = self.store[layer_idx]
        # key [B, H, W, D] -> [B, W, H, D] to match the advanced index (rows, :, cols).
        K[self.rows, :, self.cols] = key.transpose(1, 2).to(K.dtype)
        V[self.rows, :, self.cols] = value.transpose(1, 2).to(V.dtype)
        if self.every_slot:  # slots 0..n-1: views, no copy
            return K[: self.n, :, : self.kv_len], V[: self.n, :, : self.kv_len]
        return (
            K[:, :, : self.kv_len].index_select(0, self.slots),
            V[:, :, : self.kv_len].index_select(0, self.slots),
        )


def _attn_implementation(model) -> str:
    return getattr(model.config, "_attn_implementation", None) or "eager"


def _text_config(model):
    cfg = model.config
    return cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg


def slot_support(model) -> str | None:
    """None when ``HFDecoder`` can serve ``model``, else the reason it cannot.

    The store passes its own 4-D mask of full causal attention, so the model must take an
    explicit mask (attention implementation ``sdpa`` or ``eager``) and attend to every earlier
    position in every layer: no sliding-window layers (``layer_types``, or a Mistral-style
    ``sliding_window`` without ``layer_types``), no linear-attention layers. A model refused here
    runs on ``decoder.CacheDecoder``, one row at a time.
    """
    impl = _attn_implementation(model)
    if impl not in ATTN_IMPLEMENTATIONS:
        return (
            f"attention implementation {impl!r}: the slot store passes an explicit 4-D mask and "
            f"supports {ATTN_IMPLEMENTATIONS}; load the model with attn_implementation='sdpa'"
        )
    text_cfg = _text_config(model)
    kinds = set(getattr(text_cfg, "layer_types", None) or ())
    if kinds - {"full_attention"}:
        return (
            f"layer types {sorted(kinds)}: the slot store masks full causal attention only "
            "(sliding-window or linear-attention layers would need their own masks)"
        )
    window = getattr(text_cfg, "sliding_window", None)
    if not kinds and window is not None:
        return (
            f"sliding_window={window} ({type(text_cfg).__name__}): the slot store masks full causal "
            "attention only"
        )
    return None


class HFDecoder(Decoder):
    """``Decoder`` over a Hugging Face causal LM's backbone (``model.model``), which must return
    post-final-norm hidden states (Llama, Qwen2/3, Mistral, Gemma) and pass ``slot_support``."""

    def __init__(
        self,
        model,
        *,
        initial_capacity: int = 256,
        long_feed: int = LONG_FEED,
        costs: ForwardCost | None = None,
        max_positions: int | None = None,
    ):
        lm_head_of(model)  # validates: a causal LM with a backbone
        check_int("max_positions", max_positions, allow_none=True)
        why = slot_support(model)
        if why is not None:
            raise ValueError(f"model {type(model).__name__}: {why}")
        self.model = model
        self.backbone = model.model
        self.kw = cache_keyword(self.backbone)
        self.eager = _attn_implementation(model) == "eager"
        text_cfg = _text_config(model)
        self.n_layers = text_cfg.num_hidden_layers
        self.kv_heads = getattr(text_cfg, "num_key_value_heads", None) or text_cfg.num_attention_heads
        self.head_dim = (
            getattr(text_cfg, "head_dim", None) or text_cfg.hidden_size // text_cfg.num_attention_heads
        )
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        # sdpa on a CPU: grouped heads without transformers' key copy (``attention``).
        self.attn_config = None
        if not self.eager and self.device.type == "cpu":
            layers = getattr(self.backbone, "layers", None)
            layer_cfg = getattr(getattr(layers[0], "self_attn", None), "config", None) if layers else None
            if getattr(layer_cfg, "_attn_implementation", None) == "sdpa":  # what the layers read
                self.attn_config = layer_cfg
                attention.register()
        self.capacity = max(1, int(initial_capacity))
        self.long_feed = int(long_feed)
        # The cost model that groups a step's feeds (``plan``) and prices drafts (``step_cost``).
        self.costs = forward_cost_of(self.device) if costs is None else costs
        if max_positions is None:
            max_positions = GPU_MAX_POSITIONS if self.device.type == "cuda" else CPU_MAX_POSITIONS
        self.max_positions = max_positions
        self.store: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.lengths: dict[int, int] = {}  # row -> cached positions
        self.slot_of: dict[int, int] = {}  # row -> its slot in the store
        self.at: list[int | None] = []  # slot -> its row (None: free); no trailing None
        self.forwards = 0  # forwards run (for benchmarks)
        self.row_steps = 0  # rows computed, summed over forwards (for benchmarks)
        self.moves = 0  # rows moved between slots (for benchmarks)
        # None, or a list that each forward appends ``(perf_counter at its start, seconds, slots
        # computed, width, rows fed, tokens fed)`` to (for benchmarks: bench/bench_occupancy.py)
        self.trace: list[tuple[float, float, int, int, int, int]] | None = None

    # -- rows --------------------------------------------------------------------------------
    def add_row(self) -> int:
        row = next(r for r in range(len(self.lengths) + 1) if r not in self.lengths)
        try:
            slot = self.at.index(None)
        except ValueError:
            slot = len(self.at)
            self.at.append(None)
            self._grow(len(self.at), self.capacity)
        self.at[slot], self.slot_of[row], self.lengths[row] = row, slot, 0
        return row

    def drop_row(self, row: int) -> None:
        self._check(row)
        self.at[self.slot_of.pop(row)] = None
        del self.lengths[row]
        while self.at and self.at[-1] is None:  # trailing free slots leave the store's range
            self.at.pop()

    def length(self, row: int) -> int:
        self._check(row)
        return self.lengths[row]

    def rollback(self, row: int, length: int) -> None:
        self._check(row)
        if not 0 <= length <= self.lengths[row]:
            raise ValueError(f"rollback(row={row}, length={length}): row has {self.lengths[row]} positions")
        self.lengths[row] = length

    def fork(self, row: int, source: int, length: int) -> None:
        """Make ``row``'s cache the first ``length`` positions of ``source``'s (a copy of their
        columns; ``row``'s own positions are dropped). The keys and values at a position depend
        only on the tokens and positions up to it, so ``row`` continues exactly as if it had been
        fed ``source``'s first ``length`` tokens itself."""
        self._check(row)
        self._check(source)
        if row == source:
            raise ValueError(f"fork(row={row}, source={source}): a row cannot fork from itself")
        if not 0 <= length <= self.lengths[source]:
            raise ValueError(
                f"fork(row={row}, source={source}, length={length}): "
                f"source has {self.lengths[source]} positions"
            )
        dst, src = self.slot_of[row], self.slot_of[source]
        for K, V in self.store:
            K[dst, :, :length] = K[src, :, :length]
            V[dst, :, :length] = V[src, :, :length]
        self.lengths[row] = length

    def _check(self, row: int) -> None:
        if row not in self.lengths:
            raise ValueError(f"row={row}: no such row (live rows: {sorted(self.lengths)})")

    def _arrange(self, fed: Sequence[int]) -> None:
        """Move the rows ``fed`` into slots ``0..len(fed)-1`` (see the module docstring): each fed
        row above them swaps slots with a row below that is not fed (or takes a free slot)."""
        k = len(fed)
        high = [r for r in fed if self.slot_of[r] >= k]
        if not high:
            return
        feeding = set(fed)
        low = (s for s in range(k) if self.at[s] is None or self.at[s] not in feeding)
        for row, slot in zip(high, low):
            self._swap(self.slot_of[row], slot)
            self.moves += 1

    def _swap(self, a: int, b: int) -> None:
        """Exchange the rows of slots ``a`` and ``b`` (either may be free): their cached columns
        and the tables."""
        ra, rb = self.at[a], self.at[b]
        na = self.lengths[ra] if ra is not None else 0
        nb = self.lengths[rb] if rb is not None else 0
        for K, V in self.store:
            for X in (K, V):
                keep = X[b, :, :nb].clone() if nb else None
                if na:
                    X[b, :, :na] = X[a, :, :na]
                if nb:
                    X[a, :, :nb] = keep
        self.at[a], self.at[b] = rb, ra
        for row, slot in ((ra, b), (rb, a)):
            if row is not None:
                self.slot_of[row] = slot
        while self.at and self.at[-1] is None:
            self.at.pop()

    def _grow(self, slots: int, capacity: int) -> None:
        """Make the store hold at least ``slots`` rows of ``capacity`` columns (zeros, so that
        never-written columns are finite), keeping what is there.

        It grows by ``GROWTH`` (at least ``GROW_COLUMNS`` columns, 4 slots), not by doubling, and
        one layer at a time, so that the peak while copying is the new store plus one old layer
        rather than old + new. For SmolLM2 (46 KB per position and slot) 20 self-reward rows at
        ~1300 columns need ~1.2 GB; doubling both axes made that 32 slots x 2048 columns, 3.0 GB,
        with the old store held beside it while copying.
        """
        have_slots = self.store[0][0].shape[0] if self.store else 0
        have_cap = self.store[0][0].shape[2] if self.store else 0
        if slots <= have_slots and capacity <= have_cap:
            return
        new_slots = have_slots
        if slots > have_slots:
            new_slots = max(slots, int(have_slots * GROWTH), have_slots + 4)
        new_cap = max(have_cap, self.capacity)
        if capacity > new_cap:
            new_cap = max(capacity, int(have_cap * GROWTH), have_cap + GROW_COLUMNS)
        shape = (new_slots, self.kv_heads, new_cap, self.head_dim)
        if not self.store:
            self.store = [(None, None)] * self.n_layers
        for layer in range(self.n_layers):
            oK, oV = self.store[layer]
            K = torch.zeros(shape, dtype=self.dtype, device=self.device)
            V = torch.zeros(shape, dtype=self.dtype, device=self.device)
            if oK is not None:
                K[: oK.shape[0], :, : oK.shape[2]] = oK
                V[: oV.shape[0], :, : oV.shape[2]] = oV
            self.store[layer] = (K, V)  # the old layer is freed here, before the next is made
            del oK, oV
        self.capacity = new_cap

    # -- the forward -------------------------------------------------------------------------
    def _forward_cost(self, rows: int, width: int) -> float:
        """A forward (in pieces, ``_chunked``) over ``rows`` rows padded to ``width`` tokens, in
        fed positions (``costs``; every piece pays the fixed and per-row costs)."""
        pieces = -(-width // max(1, self.max_positions // rows))
        return (pieces - 1) * (self.costs.fixed + rows * self.costs.row) + self.costs.forward(rows, width)

    def plan(self, widths: Sequence[int]) -> tuple[list[int], float]:
        """How ``step`` runs fed rows of these feed widths: ``(cuts, cost)``. The rows are grouped
        by width, ``cuts`` the widest of each group, ascending: the first group's forward spans
        every fed row (the others compute padding in it, overwritten by their own forward), each
        later group runs over its own rows. The grouping is the cheapest under ``_forward_cost``
        (the best partition of the sorted widths, by dynamic programming over the distinct ones);
        ``cost`` is its cost in fed positions.

        A wide feed (a prompt, a re-decoded prefix) thus pads only the rows that are as wide, and
        one row's prefix does not make 63 rows compute 9 positions each."""
        n = len(widths)
        if n == 0:
            return [], 0.0
        counts: dict[int, int] = {}
        for w in widths:
            counts[w] = counts.get(w, 0) + 1
        ws = sorted(counts)
        best: list[float] = []
        back: list[int] = []
        for j, w in enumerate(ws):
            cost, cut = self._forward_cost(n, w), -1  # one group: every row up to width w
            rows = 0
            for i in range(j, 0, -1):  # the last group: widths ws[i..j]
                rows += counts[ws[i]]
                c = best[i - 1] + self._forward_cost(rows, w)
                if c < cost:
                    cost, cut = c, i - 1
            best.append(cost)
            back.append(cut)
        cuts, j = [], len(ws) - 1
        while j >= 0:
            cuts.append(ws[j])
            j = back[j]
        return cuts[::-1], best[-1]

    def step_cost(self, widths: Sequence[int]) -> float:
        return self.plan(widths)[1]

    @torch.no_grad()
    def step(self, feeds: Mapping[int, Sequence[int]]) -> dict[int, torch.Tensor]:
        """Feed ``feeds[row]`` (>= 1 token ids) to each listed row; return each row's latents
        ``[len(feeds[row]), d]`` (post-final-norm hidden states).

        The fed rows move into the first slots (``_arrange``) and run as ``plan`` groups them:
        usually one forward over them all, padded to the widest feed; when a few feeds are much
        wider (a prompt, a verifier prompt, the L re-decoded tokens, a row's drafts), those run
        as forwards of their own over their own slots (their cached columns gathered), so that a
        prompt admitted into a full batch costs its own length, not ``rows x`` its length.
        """
        if not feeds:
            return {}
        for row, toks in feeds.items():
            self._check(row)
            if len(toks) == 0:
                raise ValueError(f"step: row {row} was given no tokens")
        self._arrange(list(feeds))
        n = len(feeds)
        cuts, _ = self.plan([len(t) for t in feeds.values()])
        if len(cuts) == 1:
            return self._chunked(list(range(n)), feeds)
        out: dict[int, torch.Tensor] = {}
        low = 0
        for g, cut in enumerate(cuts):
            group = {r: t for r, t in feeds.items() if low < len(t) <= cut}
            low = cut
            slots = list(range(n)) if g == 0 else sorted(self.slot_of[r] for r in group)
            out.update(self._chunked(slots, group))
        return out

    def _chunked(self, slots: list[int], feeds: Mapping[int, Sequence[int]]) -> dict[int, torch.Tensor]:
        """``_forward``, cut along the feeds into pieces of at most ``max_positions // len(slots)``
        tokens per row, so that no forward computes more than ``max_positions`` positions (at
        least one token per row). Exact: a row's positions and cached columns are those of one
        forward, and each piece attends to the columns the earlier pieces wrote."""
        width = max(len(t) for t in feeds.values())
        piece = max(1, self.max_positions // len(slots))
        if width <= piece:
            return self._forward(slots, feeds)
        parts: dict[int, list[torch.Tensor]] = {r: [] for r in feeds}
        for start in range(0, width, piece):
            sub = {r: t[start : start + piece] for r, t in feeds.items() if len(t) > start}
            for r, h in self._forward(slots, sub).items():
                parts[r].append(h)
        return {r: torch.cat(h) for r, h in parts.items()}

    def _forward(self, slots: list[int], feeds: Mapping[int, Sequence[int]]) -> dict[int, torch.Tensor]:
        """One forward over ``slots`` (ascending; ``feeds`` is keyed by row, each fed row's slot
        among them); slots without a feed compute masked padding."""
        n = len(slots)
        every_slot = slots == list(range(n))  # the first n slots: views of the store, no copy
        width = max(len(t) for t in feeds.values())
        lengths = torch.tensor(
            [self.lengths[r] if (r := self.at[s]) is not None else 0 for s in slots],
            dtype=torch.long,
            device=self.device,
        )
        kv_len = int(lengths.max()) + width
        self._grow(len(self.at), kv_len)
        ids = torch.zeros((n, width), dtype=torch.long, device=self.device)
        index = {s: i for i, s in enumerate(slots)}
        for row, toks in feeds.items():
            ids[index[self.slot_of[row]], : len(toks)] = torch.as_tensor(list(toks), dtype=torch.long)
        positions = lengths[:, None] + torch.arange(width, device=self.device)[None, :]
        cols = torch.arange(kv_len, device=self.device)
        allowed = cols[None, None, :] <= positions[:, :, None]  # [n, W, kv_len]
        if self.eager:
            mask = torch.zeros(allowed.shape, dtype=self.dtype, device=self.device)
            mask.masked_fill_(~allowed, torch.finfo(self.dtype).min)
            mask = mask[:, None]
        else:
            mask = allowed[:, None]
        slot_t = torch.tensor(slots, dtype=torch.long, device=self.device)
        kv = _SlotKV(lengths, width, kv_len, self.store, slot_t, every_slot)
        gqa = self.attn_config is not None
        t0 = time.perf_counter()
        with attention.attention_of(self.attn_config, attention.NAME) if gqa else nullcontext():
            out = self.backbone(
                input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **{self.kw: kv}
            )[0]
        self.forwards += 1
        self.row_steps += n
        if self.trace is not None:
            fed = sum(len(t) for t in feeds.values())
            self.trace.append((t0, time.perf_counter() - t0, n, width, len(feeds), fed))
        result = {}
        for row, toks in feeds.items():
            k = len(toks)
            self.lengths[row] += k
            result[row] = out[index[self.slot_of[row]], :k]
        return result
