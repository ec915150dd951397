"""The types every implementation of ``latent_policy_grad`` shares: its validated inputs and its result."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class LatentGrad:
    """Result of :func:`latent_policy_grad` (all tensors on the input's device)."""

    tokens: Tensor  # [N] int64: chosen token per row (argmax, Gumbel-max, or the given tokens)
    logprob: Tensor  # [N] fp32: log pi[token]
    lse: Tensor  # [N] fp32: logsumexp(s)
    grad: Tensor | None  # [N, d] fp32: d/dh of -sum_t r_t log pi_t[token_t]; None when need_grad=False
    argmax: Tensor  # [N] int64: argmax of s (lowest index on ties) in every mode


@dataclass(frozen=True)
class LatentGradInputs:
    """The validated arguments every backend (``lpg_reference``, ``lpg_torch``, triton) receives.

    Built by :func:`latent_policy_grad` after its checks; the backends trust it. ``reward`` is
    an fp32 ``[N]`` tensor (a scalar reward is broadcast), ``softcap`` None or > 0.
    """

    hidden: Tensor  # [N, d] fp32/fp16/bf16, detached
    weight: Tensor  # [V, d], same dtype and device, detached
    reward: Tensor  # [N] fp32
    bias: Tensor | None = None  # [V] or None
    softcap: float | None = None
    temperature: float = 1.0
    mode: str = "greedy"  # "greedy" or "sample"
    seed: int = 0
    tokens: Tensor | None = None  # [N] integer ids to score instead of choosing
    need_grad: bool = True
