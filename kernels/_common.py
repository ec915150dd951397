"""Device helpers shared by the forward and gradient kernels (Triton only; imported lazily)."""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

# Same constants as latentseek_fast/ops/gumbel.py (the torch side of the counter-based RNG).
_MUL1 = tl.constexpr(0x7FEB352D)
_MUL2 = tl.constexpr(0x846CA68B)
_U_SCALE = tl.constexpr(1.0 / (1 << 23))


def interpreting() -> bool:
    """True under ``TRITON_INTERPRET=1`` (the numpy interpreter: tl.dot on bf16 must be upcast)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def num_sms(device: torch.device) -> int:
    """Streaming multiprocessors of ``device`` (a small stand-in when interpreting on CPU)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 2


@triton.jit
def mix32(x):
    """The 32-bit xor-shift-multiply mixer on uint32 (wraps modulo 2**32)."""
    x = x ^ (x >> 16)
    x = x * tl.full((), _MUL1, tl.uint32)
    x = x ^ (x >> 15)
    x = x * tl.full((), _MUL2, tl.uint32)
    x = x ^ (x >> 16)
    return x


@triton.jit
def gumbel_tile(key, rows, cols):
    """Gumbel(0, 1) noise for the tile ``rows[:, None] x cols[None, :]``; bit-equal inputs to torch's."""
    h = mix32(rows.to(tl.uint32)[:, None] ^ key)
    h = mix32(h ^ cols.to(tl.uint32)[None, :])
    u = ((h >> 9).to(tl.float32) + 0.5) * _U_SCALE
    return -tl.log(-tl.log(u))


@triton.jit
def tanh_f32(x):
    """tanh via exp(-2|x|): no overflow, absolute error ~1e-7 (tl has no tanh before triton 3.x libdevice)."""
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x < 0, -t, t)


@triton.jit
def logits_tile(
    h_ptr,  # [N, D] hidden base pointer (storage dtype)
    w_ptr,  # [V, D] weight base pointer (storage dtype)
    rows,  # [BLOCK_M] int64 row ids
    cols,  # [BLOCK_N] int64 vocabulary ids
    N,  # number of rows
    V,  # vocabulary size
    D,  # hidden size
    stride_hn,  # hidden row stride (elements)
    stride_hk,  # hidden column stride (elements)
    stride_wv,  # weight row stride (elements)
    stride_wk,  # weight column stride (elements)
    BLOCK_M: tl.constexpr,  # rows per tile
    BLOCK_N: tl.constexpr,  # vocabulary ids per tile
    BLOCK_K: tl.constexpr,  # hidden-dim step of the reduction loop
    UPCAST: tl.constexpr,  # upcast tiles to fp32 before tl.dot (interpreter, or fp32 inputs)
    IEEE: tl.constexpr,  # fp32 operands: exact fp32 products (no tf32)
):
    """Raw logits ``h[rows] @ W[cols]^T`` as an fp32 [BLOCK_M, BLOCK_N] tile (masked lanes read 0)."""
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    row_ok = rows < N
    col_ok = cols < V
    for k0 in range(0, D, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K).to(tl.int64)
        k_ok = ks < D
        h = tl.load(
            h_ptr + rows[:, None] * stride_hn + ks[None, :] * stride_hk,
            mask=row_ok[:, None] & k_ok[None, :],
            other=0.0,
        )
        w = tl.load(
            w_ptr + cols[:, None] * stride_wv + ks[None, :] * stride_wk,
            mask=col_ok[:, None] & k_ok[None, :],
            other=0.0,
        )
        if UPCAST:
            h = h.to(tl.float32)
            w = w.to(tl.float32)
        if IEEE:
            acc = tl.dot(h, tl.trans(w), acc, input_precision="ieee")
        else:
            acc = tl.dot(h, tl.trans(w), acc)
    return acc
