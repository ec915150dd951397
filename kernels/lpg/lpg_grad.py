"""Pass 2 of the latent policy gradient: ``grad = sum_v coef_v * dl_v/dh`` with lse already known.

``coef[n, v] = (r_n / T) * (softmax(s_n)[v] - [v == tok_n]) * dl_v`` (dl_v = 1 - tanh^2 with a
soft-cap). Grid ``(row blocks, V tiles)`` with the row block as the fast axis: the programs of
one W tile run side by side, so the tile comes from HBM once and from L2 for the other row
blocks. Each program recomputes its logits tile (loop over d), forms ``coef`` in registers and
adds ``coef @ W_tile`` into the fp32 [N, d] gradient with ``tl.atomic_add`` (loop over d).
Atomics are the simple choice here: N*d is small (<= 300 x 8192 in a seek) and lives in L2;
see kernels/README.md for the traffic and the alternatives.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import KernelLaunch, default_blocks, dot_acc, head_tile, load_k_tile, operand_modes


@triton.jit
def _lpg_grad_kernel(
    h_ptr,  # [N, D] hidden (fp32/fp16/bf16, any strides)
    w_ptr,  # [V, D] LM-head weight (same dtype as hidden, any strides)
    b_ptr,  # [V] bias (any float dtype); unused unless HAS_BIAS
    tok_ptr,  # [N] int64 chosen tokens (contiguous)
    lse_ptr,  # [N] fp32 logsumexp of s from pass 1 (contiguous)
    rt_ptr,  # [N] fp32 reward / temperature per row (contiguous)
    g_ptr,  # [N, D] fp32 gradient, zero-initialised, accumulated atomically (contiguous)
    N,  # rows
    V,  # vocabulary size
    D,  # hidden size
    stride_hn,  # hidden row stride (elements)
    stride_hk,  # hidden column stride (elements)
    stride_wv,  # weight row stride (elements)
    stride_wk,  # weight column stride (elements)
    stride_b,  # bias stride (elements)
    softcap,  # logit soft-cap c (HAS_SOFTCAP)
    inv_temp,  # 1 / temperature
    HAS_BIAS: tl.constexpr,  # add the bias
    HAS_SOFTCAP: tl.constexpr,  # l = c * tanh(l / c), chain rule factor 1 - tanh^2
    UPCAST: tl.constexpr,  # fp32 tiles before tl.dot
    IEEE: tl.constexpr,  # exact fp32 tl.dot
    BLOCK_M: tl.constexpr,  # rows per program
    BLOCK_N: tl.constexpr,  # vocabulary ids per program
    BLOCK_K: tl.constexpr,  # hidden-dim step
):
    pid_m = tl.program_id(0).to(tl.int64)
    pid_v = tl.program_id(1).to(tl.int64)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M).to(tl.int64)
    cols = pid_v * BLOCK_N + tl.arange(0, BLOCK_N).to(tl.int64)
    row_ok = rows < N
    col_ok = cols < V
    lraw, t = head_tile(
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
    lse = tl.load(lse_ptr + rows, mask=row_ok, other=0.0)
    rt = tl.load(rt_ptr + rows, mask=row_ok, other=0.0)  # 0 on padded rows: coef vanishes
    tok = tl.load(tok_ptr + rows, mask=row_ok, other=-1)
    p = tl.exp(lraw * inv_temp - lse[:, None])
    coef = p - tl.where(cols[None, :] == tok[:, None], 1.0, 0.0)
    if HAS_SOFTCAP:
        coef = coef * (1.0 - t * t)
    coef = tl.where(col_ok[None, :], coef * rt[:, None], 0.0)
    if not UPCAST:
        coef = coef.to(w_ptr.dtype.element_ty)  # tensor-core operand; fp32 accumulation below
    for k0 in range(0, D, BLOCK_K):
        w = load_k_tile(w_ptr, cols, col_ok, k0, D, stride_wv, stride_wk, BLOCK_K, UPCAST)
        part = dot_acc(coef, w, tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float32), IEEE)
        ks = k0 + tl.arange(0, BLOCK_K).to(tl.int64)
        tl.atomic_add(g_ptr + rows[:, None] * D + ks[None, :], part, mask=row_ok[:, None] & (ks < D)[None, :])


def grad_launch(hidden, weight, bias, tokens, lse, reward_over_t, softcap, temperature, *, blocks=None):
    """Pass 2's launch and its zeroed fp32 [N, d] gradient, without running it.

    ``blocks`` defaults to ``default_blocks(N, dtype, grad=True)``. Returns ``(KernelLaunch, grad)``.
    """
    n, d = hidden.shape
    v = weight.shape[0]
    grad = torch.zeros(n, d, dtype=torch.float32, device=hidden.device)
    bm, bn, bk, warps = blocks if blocks is not None else default_blocks(n, hidden.dtype, grad=True)
    b_arg = bias if bias is not None else hidden
    args = (
        hidden,
        weight,
        b_arg,
        tokens.to(torch.int64).contiguous(),
        lse.contiguous(),
        reward_over_t.to(torch.float32).contiguous(),
        grad,
        n,
        v,
        d,
        hidden.stride(0),
        hidden.stride(1),
        weight.stride(0),
        weight.stride(1),
        bias.stride(0) if bias is not None else 0,
        float(softcap) if softcap is not None else 1.0,
        1.0 / temperature,
    )
    meta = dict(
        HAS_BIAS=bias is not None,
        HAS_SOFTCAP=softcap is not None,
        **operand_modes(hidden.dtype),
        BLOCK_M=bm,
        BLOCK_N=bn,
        BLOCK_K=bk,
        num_warps=warps,
    )
    return KernelLaunch(_lpg_grad_kernel, (triton.cdiv(n, bm), triton.cdiv(v, bn)), args, meta), grad


def lpg_grad(hidden, weight, bias, tokens, lse, reward_over_t, softcap, temperature, blocks=None):
    """Pass 2: the fp32 [N, d] gradient of ``-sum_n r_n log pi_n[tok_n]`` w.r.t. hidden.

    ``tokens`` [N] int64, ``lse`` [N] fp32 from pass 1, ``reward_over_t`` [N] fp32 = r / T;
    ``blocks`` overrides the ``(BLOCK_M, BLOCK_N, BLOCK_K, num_warps)`` choice.
    """
    launch, grad = grad_launch(
        hidden, weight, bias, tokens, lse, reward_over_t, softcap, temperature, blocks=blocks
    )
    launch.run()
    return grad
