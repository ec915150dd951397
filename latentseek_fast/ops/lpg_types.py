"""The types every implementation of ``latent_policy_grad`` shares: its validated inputs and its result."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class LatentGrad:
    """Result of :func:`latent_policy_grad` (all tensors on the input's device).

    ``gap`` is the near-tie audit of the greedy decision ``argmax``: a gap within rounding noise
    means another machine, thread count or blocking may pick another token.
    """

    tokens: Tensor  # [N] int64: chosen token per row (argmax, Gumbel-max, or the given tokens)
    logprob: Tensor  # [N] fp32: log pi[token]
    lse: Tensor  # [N] fp32: logsumexp(s)
    grad: Tensor | None  # [N, d] fp32: d/dh of -sum_t r_t log pi_t[token_t]; None when need_grad=False
    argmax: Tensor  # [N] int64: argmax of s (lowest index on ties) in every mode
    # [N] fp32, every mode: the top-2 logit gap at ``argmax``, l[argmax] - (second largest l), with l
    # the logits the argmax is taken over (bias added, soft-capped, before the temperature:
    # T * (s[argmax] - second largest s)). 0 on an exact tie; +inf when V == 1 (no second logit).
    gap: Tensor


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
