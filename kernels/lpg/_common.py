"""Device helpers shared by the forward and gradient kernels (Triton only; imported lazily)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from . import interpreting

# Same constants as latentseek_fast/ops/gumbel.py (the torch side of the counter-based RNG).
_MUL1 = tl.constexpr(0x7FEB352D)
_MUL2 = tl.constexpr(0x846CA68B)
_U_SCALE = tl.constexpr(1.0 / (1 << 23))


__all__ = ["KernelLaunch", "default_blocks", "interpreting", "num_sms", "operand_modes", "seed_arg"]

# Block configurations, chosen so that no variant spills on sm_80 or sm_90 with triton 3.6 or 3.9
# (bench/aot_check.py compiles all of them and fails on a spill; registers per variant in
# bench/results/aot.csv). Measured there, bias + soft-cap + sample (the heaviest pass-1 variant):
# - 16-bit, 64 x 128 x 64 at 4 warps: 255 registers and 364 spill instructions (sm_90, 3.9); at 8
#   warps 242 registers, no spill. 32 x 128 x 64 at 4 warps: 227 registers, no spill.
# - fp32 (exact fp32 products on the FMA units, no tensor cores). ptxas caps registers at an
#   occupancy step (64 or 128 at 8 warps) and spills the last few values past it, so a variant
#   just over a step spills a handful of STL/LDL. Pass 1 with sampling (the Gumbel noise's extra
#   live values) at BLOCK_K 32 and 8 warps: 16 x 64 spills 4 at 64 registers (3.9, both archs),
#   32 x 64 spills 2-4 at 128 (3.9, sm_90); 4 warps instead is no cure (16 x 64 x 32: 2 spills at
#   96 registers, sm_80, 3.9; 32 x 64 x 32: 3 spills at 128, sm_80, 3.6). BLOCK_K 16 halves the
#   operand tiles: pass 1 at 16 x 64 x 16 / 8 warps takes 60-88 registers, at 32 x 64 x 16 / 8
#   warps 80-128 (sampling 103-128), no spill in any variant on either arch with either version.
#   Pass 2 keeps 64 x 32 / 8 warps (64-80 registers, no spill).
MIN_BLOCK_M = 16
MAX_BLOCK_M = 64


def default_blocks(n: int, dtype: torch.dtype, grad: bool = False) -> tuple[int, int, int, int]:
    """``(BLOCK_M, BLOCK_N, BLOCK_K, num_warps)`` for ``n`` rows of ``dtype``; ``grad``: pass 2."""
    bm = max(MIN_BLOCK_M, min(MAX_BLOCK_M, triton.next_power_of_2(max(int(n), 1))))
    if dtype == torch.float32:
        return min(bm, 32), 64, 32 if grad else 16, 8
    if bm <= 32:
        return bm, 128, 64, 4
    # Pass 2 at 64 x 128 x 64 / 8 warps spills 4-8 instructions on sm_80 with triton 3.6 (ptxas
    # holds it at 128 registers); 64 x 64 x 64 / 4 warps: 128-150 registers, no spill.
    return (64, 64, 64, 4) if grad else (64, 128, 64, 8)


def operand_modes(dtype: torch.dtype) -> dict[str, bool]:
    """The ``UPCAST`` / ``IEEE`` switches for inputs of ``dtype``.

    UPCAST: fp32 tiles before tl.dot (fp32 inputs, and the interpreter, whose bf16 tl.dot is
    wrong). IEEE: exact fp32 products for fp32 inputs on a GPU (no tf32).
    """
    interp = interpreting()
    return {"UPCAST": interp or dtype == torch.float32, "IEEE": dtype == torch.float32 and not interp}


def seed_arg(seed_key: int) -> int:
    """The 32-bit seed key as a signed int32 value (same bits).

    Triton types an integer argument by its value (i32 below 2**31, i64 above), so an unsigned
    key would compile a second kernel for half of all seeds; the kernel reads it back as uint32.
    """
    key = int(seed_key)
    if not 0 <= key < 2**32:
        raise ValueError(f"seed_key={key}: expected a 32-bit key in [0, 2**32)")
    return key - 2**32 if key >= 2**31 else key


@dataclass(frozen=True)
class KernelLaunch:
    """One kernel launch, built before running it: ``kernel[grid](*args, **meta)``.

    The launchers run it; ``bench/aot_check.py`` compiles the same arguments ahead of time.
    """

    kernel: object  # a triton JITFunction
    grid: tuple[int, ...]
    args: tuple  # runtime arguments, in the kernel's order
    meta: dict  # tl.constexpr switches, block sizes and num_warps

    def run(self) -> None:
        self.kernel[self.grid](*self.args, **self.meta)


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
def load_k_tile(
    ptr,  # [R, D] base pointer (storage dtype)
    ids,  # [BLOCK_R] int64 row ids
    ids_ok,  # [BLOCK_R] row mask
    k0,  # first hidden-dim column of the tile
    D,  # hidden size
    stride_r,  # row stride (elements)
    stride_k,  # column stride (elements)
    BLOCK_K: tl.constexpr,  # columns per tile
    UPCAST: tl.constexpr,  # return fp32
):
    """The masked [BLOCK_R, BLOCK_K] tile ``ptr[ids, k0:k0+BLOCK_K]`` (masked lanes read 0).

    The one load of a hidden or W tile: both passes stream W through it.
    """
    ks = k0 + tl.arange(0, BLOCK_K).to(tl.int64)
    t = tl.load(
        ptr + ids[:, None] * stride_r + ks[None, :] * stride_k,
        mask=ids_ok[:, None] & (ks < D)[None, :],
        other=0.0,
    )
    if UPCAST:
        t = t.to(tl.float32)
    return t


@triton.jit
def dot_acc(a, b, acc, IEEE: tl.constexpr):
    """``acc + a @ b`` in fp32; exact fp32 products when IEEE (fp32 inputs), else tensor cores."""
    if IEEE:
        return tl.dot(a, b, acc, input_precision="ieee")
    return tl.dot(a, b, acc)


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
        h = load_k_tile(h_ptr, rows, row_ok, k0, D, stride_hn, stride_hk, BLOCK_K, UPCAST)
        w = load_k_tile(w_ptr, cols, col_ok, k0, D, stride_wv, stride_wk, BLOCK_K, UPCAST)
        acc = dot_acc(h, tl.trans(w), acc, IEEE)
    return acc


@triton.jit
def head_tile(
    h_ptr,  # [N, D] hidden base pointer (storage dtype)
    w_ptr,  # [V, D] weight base pointer (storage dtype)
    b_ptr,  # [V] bias (any float dtype); unused unless HAS_BIAS
    rows,  # [BLOCK_M] int64 row ids
    cols,  # [BLOCK_N] int64 vocabulary ids
    col_ok,  # [BLOCK_N] ids this program owns (bias mask)
    N,  # number of rows
    V,  # vocabulary size
    D,  # hidden size
    stride_hn,  # hidden row stride (elements)
    stride_hk,  # hidden column stride (elements)
    stride_wv,  # weight row stride (elements)
    stride_wk,  # weight column stride (elements)
    stride_b,  # bias stride (elements)
    softcap,  # logit soft-cap c (HAS_SOFTCAP)
    HAS_BIAS: tl.constexpr,  # add the bias
    HAS_SOFTCAP: tl.constexpr,  # l = c * tanh(l / c)
    BLOCK_M: tl.constexpr,  # rows per tile
    BLOCK_N: tl.constexpr,  # vocabulary ids per tile
    BLOCK_K: tl.constexpr,  # hidden-dim step of the reduction loop
    UPCAST: tl.constexpr,  # fp32 tiles before tl.dot
    IEEE: tl.constexpr,  # exact fp32 tl.dot
):
    """The LM head's fp32 logits tile ``l`` (bias added, soft-capped) and ``tanh(l_raw / c)``.

    Both passes start from it; the second value is the soft-cap's chain-rule input (pass 2
    uses ``1 - t^2``) and is all zeros without a soft-cap (pass 1 drops it).
    """
    lraw = logits_tile(
        h_ptr,
        w_ptr,
        rows,
        cols,
        N,
        V,
        D,
        stride_hn,
        stride_hk,
        stride_wv,
        stride_wk,
        BLOCK_M,
        BLOCK_N,
        BLOCK_K,
        UPCAST,
        IEEE,
    )
    if HAS_BIAS:
        b = tl.load(b_ptr + cols * stride_b, mask=col_ok, other=0.0).to(tl.float32)
        lraw = lraw + b[None, :]
    t = tl.zeros_like(lraw)
    if HAS_SOFTCAP:
        t = tanh_f32(lraw / softcap)
        lraw = softcap * t
    return lraw, t
