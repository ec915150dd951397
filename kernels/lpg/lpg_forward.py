"""Pass 1 of the latent policy gradient: per-row lse, argmax and its top-2 gap, Gumbel-max, the token's logit.

Grid ``(row blocks, V splits)``. Each program streams its split of W in BLOCK_N tiles (the
logits tile is a loop over d in BLOCK_K), keeps an online max / sum-exp, the first argmax,
the running second largest s (for the top-2 gap), the Gumbel-max and the teacher token's
logit in registers, and writes one partial per row
into small ``[S, N]`` buffers that ``lpg_forward`` combines in torch. Splitting V lets a few
rows (N ~ 30..300 in a seek) still fill every SM. No [N, V] tensor is ever written.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import (
    KernelLaunch,
    default_blocks,
    gumbel_tile,
    head_tile,
    num_sms,
    operand_modes,
    seed_arg,
)


@triton.jit(do_not_specialize=["seed_key"])
def _lpg_fwd_kernel(
    h_ptr,  # [N, D] hidden (fp32/fp16/bf16, any strides)
    w_ptr,  # [V, D] LM-head weight (same dtype as hidden, any strides)
    b_ptr,  # [V] bias (any float dtype); unused unless HAS_BIAS
    tok_ptr,  # [N] int64 teacher-forced tokens; unused unless HAS_TOKENS
    m_ptr,  # [S, N] fp32 out: split max of s
    se_ptr,  # [S, N] fp32 out: split sum of exp(s - split max)
    amax_ptr,  # [S, N] int64 out: split argmax of s (lowest index on ties)
    m2_ptr,  # [S, N] fp32 out: split second largest s (= the split max on a tie; -inf: one id)
    gval_ptr,  # [S, N] fp32 out: split max of s + g (SAMPLE)
    gidx_ptr,  # [S, N] int64 out: split argmax of s + g (SAMPLE)
    gs_ptr,  # [S, N] fp32 out: s at the split's Gumbel-max (SAMPLE)
    ts_ptr,  # [S, N] fp32 out: s at the teacher token if it lies in the split, else 0 (HAS_TOKENS)
    N,  # rows
    V,  # vocabulary size
    D,  # hidden size
    stride_hn,  # hidden row stride (elements)
    stride_hk,  # hidden column stride (elements)
    stride_wv,  # weight row stride (elements)
    stride_wk,  # weight column stride (elements)
    stride_b,  # bias stride (elements)
    v_per_split,  # vocabulary ids per split, a multiple of BLOCK_N
    softcap,  # logit soft-cap c (HAS_SOFTCAP)
    inv_temp,  # 1 / temperature
    seed_key,  # 32-bit key of the seed (gumbel.seed_key), passed as int32 (_common.seed_arg)
    HAS_BIAS: tl.constexpr,  # add the bias
    HAS_SOFTCAP: tl.constexpr,  # l = c * tanh(l / c)
    SAMPLE: tl.constexpr,  # track the Gumbel-max
    HAS_TOKENS: tl.constexpr,  # track the teacher token's s
    UPCAST: tl.constexpr,  # fp32 tiles before tl.dot
    IEEE: tl.constexpr,  # exact fp32 tl.dot
    BLOCK_M: tl.constexpr,  # rows per program
    BLOCK_N: tl.constexpr,  # vocabulary ids per tile
    BLOCK_K: tl.constexpr,  # hidden-dim step
):
    pid_m = tl.program_id(0).to(tl.int64)
    pid_s = tl.program_id(1).to(tl.int64)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M).to(tl.int64)
    row_ok = rows < N
    v_start = pid_s * v_per_split
    v_end = tl.minimum(v_start + v_per_split, V)
    neg_inf = float("-inf")
    m = tl.full((BLOCK_M,), neg_inf, tl.float32)
    se = tl.zeros((BLOCK_M,), tl.float32)
    # Running ids in int32 (ids < V < 2**31), stored as int64: with the second max (m2) in the loop
    # state, int64 ids made ptxas spill 2-4 instructions in every fp32 32-row greedy and sampling
    # variant on sm_90 (triton 3.9, bench/aot_check.py); int32 ids take none (64-128 registers).
    amax = tl.zeros((BLOCK_M,), tl.int32)
    m2 = tl.full((BLOCK_M,), neg_inf, tl.float32)
    gval = tl.full((BLOCK_M,), neg_inf, tl.float32)
    gidx = tl.zeros((BLOCK_M,), tl.int32)
    gs = tl.zeros((BLOCK_M,), tl.float32)
    ts = tl.zeros((BLOCK_M,), tl.float32)
    if HAS_TOKENS:
        tok = tl.load(tok_ptr + rows, mask=row_ok, other=-1)
    if SAMPLE:
        key = seed_key.to(tl.uint32)
    big = V  # larger than any valid id: neutral for tl.min over indices
    for v0 in range(v_start, v_end, BLOCK_N):
        cols = v0 + tl.arange(0, BLOCK_N).to(tl.int64)
        col_ok = cols < v_end
        lraw, _ = head_tile(
            h_ptr,
            w_ptr,
            b_ptr,
            rows,
            cols,
            col_ok,
            N,
            V,
            D,
            stride_hn,
            stride_hk,
            stride_wv,
            stride_wk,
            stride_b,
            softcap,
            HAS_BIAS,
            HAS_SOFTCAP,
            BLOCK_M,
            BLOCK_N,
            BLOCK_K,
            UPCAST,
            IEEE,
        )
        s = tl.where(col_ok[None, :], lraw * inv_temp, neg_inf)
        c_max = tl.max(s, 1)
        c_idx = tl.min(tl.where(s == c_max[:, None], cols[None, :], big), 1)
        # The tile's second largest: its max column masked out, so a repeated max is kept (gap 0).
        c_2 = tl.max(tl.where(cols[None, :] == c_idx[:, None], neg_inf, s), 1)
        # Top 2 of {m, m2, c_max, c_2}, given m >= m2 and c_max >= c_2.
        m2 = tl.maximum(tl.maximum(m2, c_2), tl.minimum(m, c_max))
        better = c_max > m  # strict: the earlier tile keeps ties
        amax = tl.where(better, c_idx.to(tl.int32), amax)
        m_new = tl.maximum(m, c_max)
        se = se * tl.exp(m - m_new) + tl.sum(tl.exp(s - m_new[:, None]), 1)
        m = m_new
        if SAMPLE:
            sg = tl.where(col_ok[None, :], s + gumbel_tile(key, rows, cols), neg_inf)
            g_max = tl.max(sg, 1)
            g_idx = tl.min(tl.where(sg == g_max[:, None], cols[None, :], big), 1)
            g_s = tl.sum(tl.where(cols[None, :] == g_idx[:, None], s, 0.0), 1)
            better = g_max > gval
            gval = tl.where(better, g_max, gval)
            gidx = tl.where(better, g_idx.to(tl.int32), gidx)
            gs = tl.where(better, g_s, gs)
        if HAS_TOKENS:
            ts += tl.sum(tl.where(cols[None, :] == tok[:, None], s, 0.0), 1)
    out = pid_s * N + rows
    tl.store(m_ptr + out, m, mask=row_ok)
    tl.store(se_ptr + out, se, mask=row_ok)
    tl.store(amax_ptr + out, amax.to(tl.int64), mask=row_ok)
    tl.store(m2_ptr + out, m2, mask=row_ok)
    if SAMPLE:
        tl.store(gval_ptr + out, gval, mask=row_ok)
        tl.store(gidx_ptr + out, gidx.to(tl.int64), mask=row_ok)
        tl.store(gs_ptr + out, gs, mask=row_ok)
    if HAS_TOKENS:
        tl.store(ts_ptr + out, ts, mask=row_ok)


def fwd_launch(
    hidden,
    weight,
    bias,
    tokens,
    softcap,
    temperature,
    mode,
    seed_key,
    num_splits=None,
    *,
    sms=None,
    blocks=None,
):
    """Pass 1's launch and its ``[S, N]`` partial buffers, without running it.

    ``sms`` defaults to the device's multiprocessor count, ``blocks`` to
    ``default_blocks(N, dtype)`` (an autotune passes others). Returns ``(KernelLaunch, partials)`` with
    ``partials`` the dict that :func:`combine` reads.
    """
    n, d = hidden.shape
    v = weight.shape[0]
    dev = hidden.device
    bm, bn, bk, warps = blocks if blocks is not None else default_blocks(n, hidden.dtype)
    row_blocks = triton.cdiv(n, bm)
    tiles = triton.cdiv(v, bn)
    if num_splits is None:
        # About 4 waves of programs: a seek's few row blocks alone cannot fill the SMs.
        num_splits = max(1, (4 * (sms if sms is not None else num_sms(dev))) // row_blocks)
    num_splits = max(1, min(int(num_splits), tiles))
    v_per_split = triton.cdiv(tiles, num_splits) * bn
    num_splits = triton.cdiv(v, v_per_split)
    sample = tokens is None and mode == "sample"
    has_tokens = tokens is not None
    f32 = dict(dtype=torch.float32, device=dev)
    m = torch.empty(num_splits, n, **f32)
    se = torch.empty(num_splits, n, **f32)
    amax = torch.empty(num_splits, n, dtype=torch.int64, device=dev)
    m2 = torch.empty(num_splits, n, **f32)
    if sample:
        gval, gs = torch.empty(num_splits, n, **f32), torch.empty(num_splits, n, **f32)
        gidx = torch.empty(num_splits, n, dtype=torch.int64, device=dev)
    else:
        gval, gidx, gs = m, amax, se  # never touched
    ts = torch.empty(num_splits, n, **f32) if has_tokens else m
    tok_arg = tokens.to(torch.int64).contiguous() if has_tokens else amax
    b_arg = bias if bias is not None else hidden
    args = (
        hidden,
        weight,
        b_arg,
        tok_arg,
        m,
        se,
        amax,
        m2,
        gval,
        gidx,
        gs,
        ts,
        n,
        v,
        d,
        hidden.stride(0),
        hidden.stride(1),
        weight.stride(0),
        weight.stride(1),
        bias.stride(0) if bias is not None else 0,
        v_per_split,
        float(softcap) if softcap is not None else 1.0,
        1.0 / temperature,
        seed_arg(seed_key),
    )
    meta = dict(
        HAS_BIAS=bias is not None,
        HAS_SOFTCAP=softcap is not None,
        SAMPLE=sample,
        HAS_TOKENS=has_tokens,
        **operand_modes(hidden.dtype),
        BLOCK_M=bm,
        BLOCK_N=bn,
        BLOCK_K=bk,
        num_warps=warps,
    )
    partials = dict(m=m, se=se, amax=amax, m2=m2, gval=gval, gidx=gidx, gs=gs, ts=ts, tokens=tok_arg)
    partials.update(sample=sample, has_tokens=has_tokens, temperature=float(temperature))
    return KernelLaunch(_lpg_fwd_kernel, (row_blocks, num_splits), args, meta), partials


def lpg_forward(
    hidden, weight, bias, tokens, softcap, temperature, mode, seed_key, num_splits=None, blocks=None
):
    """Pass 1. Returns ``(tokens, logprob, lse, argmax, gap)`` (int64, fp32, fp32, int64, fp32; all [N]).

    ``num_splits`` overrides the V split count (default: enough programs for ~4 waves of SMs),
    ``blocks`` the ``(BLOCK_M, BLOCK_N, BLOCK_K, num_warps)`` choice.
    Inputs are validated by ``latent_policy_grad``.
    """
    launch, p = fwd_launch(
        hidden, weight, bias, tokens, softcap, temperature, mode, seed_key, num_splits, blocks=blocks
    )
    launch.run()
    return combine(p)


def combine(p):
    """``(tokens, logprob, lse, argmax, gap)`` from pass 1's ``[S, N]`` partials."""
    m, se, amax = p["m"], p["se"], p["amax"]
    # Combine the [S, N] partials (tiny): lse by log-sum-exp of split sums, argmax by the first
    # split holding the global max (splits are in V order, so the lowest index wins ties).
    m_all = m.max(dim=0).values
    lse = m_all + torch.log((se * torch.exp(m - m_all)).sum(dim=0))
    best_split = torch.argmax(m, dim=0, keepdim=True)
    argmax = amax.gather(0, best_split).squeeze(0)
    # The top 2 of all splits' (max, second) pairs; gap in logits (before the temperature).
    top2 = torch.cat([m, p["m2"]]).topk(2, dim=0).values
    gap = (top2[0] - top2[1]) * p["temperature"]  # +inf when V == 1
    if p["has_tokens"]:
        tok, s_tok = p["tokens"], p["ts"].sum(dim=0)
    elif p["sample"]:
        g_split = torch.argmax(p["gval"], dim=0, keepdim=True)
        tok = p["gidx"].gather(0, g_split).squeeze(0)
        s_tok = p["gs"].gather(0, g_split).squeeze(0)
    else:
        tok, s_tok = argmax, m_all
    return tok, s_tok - lse, lse, argmax, gap
