"""The counter-based Gumbel noise: torch and triton hash bits agree exactly; the noise is Gumbel."""

from __future__ import annotations

import sys

import pytest
import torch

from latentseek_fast.ops.gumbel import MASK32, U_SCALE, U_SHIFT, _mix, gumbel_noise, seed_key

if not sys.platform.startswith("linux"):  # an install requirement on Linux: there it must import
    pytest.importorskip("triton")
import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from latentseek_fast.kernels._common import gumbel_tile, mix32  # noqa: E402


@triton.jit
def _bits_kernel(
    bits_ptr,  # [R, C] int64 out: the 32-bit hash
    g_ptr,  # [R, C] fp32 out: the Gumbel noise
    key,  # seed_key(seed)
    row0,  # first row id
    col0,  # first token id
    R: tl.constexpr,  # rows
    C: tl.constexpr,  # columns
):
    rows = tl.arange(0, R).to(tl.int64) + row0
    cols = tl.arange(0, C).to(tl.int64) + col0
    x = mix32(mix32(rows.to(tl.uint32)[:, None] ^ key.to(tl.uint32)) ^ cols.to(tl.uint32)[None, :])
    offs = tl.arange(0, R)[:, None] * C + tl.arange(0, C)[None, :]
    tl.store(bits_ptr + offs, x.to(tl.int64))
    tl.store(g_ptr + offs, gumbel_tile(key.to(tl.uint32), rows, cols))


@pytest.mark.parametrize("seed,row0,col0", [(0, 0, 0), (3_000_000_000, 123_456, 151_900), (2**40 + 7, 9, 77)])
def test_hash_bits_match_between_torch_and_triton(seed, row0, col0):
    bits = torch.empty(16, 32, dtype=torch.int64)
    g = torch.empty(16, 32)
    _bits_kernel[(1,)](bits, g, seed_key(seed), row0, col0, 16, 32)
    rows = torch.arange(16).unsqueeze(1) + row0
    cols = torch.arange(32).unsqueeze(0) + col0
    ref = _mix(_mix((rows & MASK32) ^ seed_key(seed)) ^ cols)
    assert torch.equal(bits, ref)
    # u is bit-identical; the two -log(-log u) may differ by float32 rounding of the library's log.
    u = ((ref >> U_SHIFT).float() + 0.5) * U_SCALE
    assert bool(((u > 0) & (u < 1)).all())
    torch.testing.assert_close(g, gumbel_noise(seed, rows, cols), rtol=0, atol=2e-6)


def test_seed_key_folds_high_bits():
    assert seed_key(1) != seed_key(1 + 2**32) != seed_key(2**32)
    assert all(0 <= seed_key(s) <= MASK32 for s in (0, 1, 2**31, 2**63, 2**64 - 1))


def test_gumbel_noise_statistics():
    g = gumbel_noise(7, torch.arange(200).unsqueeze(1), torch.arange(500).unsqueeze(0))
    assert torch.isfinite(g).all()
    # Gumbel(0, 1): mean = Euler-Mascheroni 0.5772, variance pi^2 / 6 = 1.6449; 1e5 draws -> s.e. ~0.004.
    assert abs(g.mean().item() - 0.5772) < 0.02 and abs(g.var().item() - 1.6449) < 0.05
