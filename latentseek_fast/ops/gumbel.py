"""Counter-based Gumbel noise keyed on (seed, row, token id), bit-identical on torch and triton.

The noise for a row is a pure function of three integers, so any backend, chunking or
launch order draws exactly the same sample. The hash is a chain of 32-bit integer mixers
(xor-shift / multiply, all arithmetic modulo 2**32):

    key  = mix(fold(seed) ^ 0x9E3779B9)        # once per call, in Python
    bits = mix(mix(key ^ row) ^ token)         # per element, torch or triton
    u    = ((bits >> 9) + 0.5) / 2**23          # in (0, 1), exact in fp32 (24 significant bits)
    g    = -log(-log(u))

In torch the uint32 arithmetic runs in int64 with ``& 0xFFFFFFFF`` after each step: the
product of two values below 2**32 can wrap int64, but its low 32 bits stay correct.
Triton computes the same steps in ``tl.uint32`` (``kernels/lpg/_common.py``). ``u`` is the
same fp32 number on both sides; ``log`` may differ by an ulp between libraries, which can
flip a sample only when two candidates are within ~1e-7 of each other.
"""

from __future__ import annotations

import torch

MASK32 = 0xFFFFFFFF
# Multipliers of a well-known low-bias 32-bit integer finaliser (xor-shift 16/15/16).
MUL1 = 0x7FEB352D
MUL2 = 0x846CA68B
GOLDEN = 0x9E3779B9
U_SHIFT = 9  # keep the top 23 bits so (k + 0.5) / 2**23 is exact in fp32
U_SCALE = 1.0 / (1 << 23)


def _mix_int(x: int) -> int:
    """The 32-bit mixer on a Python int."""
    x &= MASK32
    x ^= x >> 16
    x = (x * MUL1) & MASK32
    x ^= x >> 15
    x = (x * MUL2) & MASK32
    x ^= x >> 16
    return x


def seed_key(seed: int) -> int:
    """The per-call 32-bit key derived from a (possibly 64-bit) non-negative seed."""
    folded = (seed ^ (seed >> 32)) & MASK32
    return _mix_int(folded ^ GOLDEN)


def _mix(x: torch.Tensor) -> torch.Tensor:
    """The 32-bit mixer on an int64 tensor holding values in [0, 2**32)."""
    x = x ^ (x >> 16)
    x = (x * MUL1) & MASK32
    x = x ^ (x >> 15)
    x = (x * MUL2) & MASK32
    return x ^ (x >> 16)


def gumbel_noise(seed: int, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Gumbel(0, 1) noise in fp32 for the broadcast grid ``rows x cols`` (int64 tensors of ids)."""
    key = seed_key(seed)
    h = _mix((rows.to(torch.int64) & MASK32) ^ key)
    h = _mix(h ^ (cols.to(torch.int64) & MASK32))
    u = ((h >> U_SHIFT).to(torch.float32) + 0.5) * U_SCALE
    return -torch.log(-torch.log(u))
