"""The latent policy gradient op: tokens, log-probs and d(-r log pi[token])/dh for an LM head.

Per row ``h`` (``docs/algorithm.md``, the gradient step of the seek loop):

    l = h W^T (+ b);  l = c tanh(l / c) with a soft-cap c;  s = l / T;  pi = softmax(s)
    token = argmax s (greedy) | argmax(s + Gumbel) (sample) | given (teacher forcing)
    grad  = (r / T) * sum_v (pi_v - [v == token]) * dl_v/dh

The gradient is linear in ``r``: the seek loop asks for the direction with ``reward=1.0``
before the reward is known and scales it later. ``argmax`` is returned in every mode because
the seek loop re-decodes with it, and with it ``gap``, the top-2 gap of the logits (soft-capped,
before the temperature) at that decision: the near-tie audit's input.
"""

from __future__ import annotations

import logging
import numbers
import weakref

import torch
from torch import Tensor

from latentseek_fast._util import (
    REWARD_MAX,
    check_finite_float,
    check_reward_range,
    check_temperature,
)
from latentseek_fast.backends import MODES, check_backend, resolve_backend
from latentseek_fast.ops.lpg_reference import lpg_reference
from latentseek_fast.ops.lpg_torch import lpg_torch
from latentseek_fast.ops.lpg_triton import lpg_triton
from latentseek_fast.ops.lpg_types import LatentGrad, LatentGradInputs

__all__ = ["FLOAT_DTYPES", "LatentGrad", "LatentGradInputs", "latent_policy_grad"]

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


# Weights found finite: id -> (weak reference, torch version counter at the check). An LM head
# is reused by every step of a seek; reading all of its V*d values costs as much as the op's
# own pass over W, so a weight is checked again only when it is a new tensor object or torch's
# version counter shows an in-place change (writes through ``.data`` bypass that counter).
_FINITE_WEIGHTS: dict[int, tuple[weakref.ref, int]] = {}
_FINITE_WEIGHTS_MAX = 64


def _weight_known_finite(weight: Tensor) -> bool:
    hit = _FINITE_WEIGHTS.get(id(weight))
    try:
        version = weight._version
    except RuntimeError:  # inference tensors have no version counter: check every call
        return False
    return hit is not None and hit[0]() is weight and hit[1] == version


def _remember_finite_weight(weight: Tensor) -> None:
    try:
        version = weight._version
    except RuntimeError:
        return
    if len(_FINITE_WEIGHTS) >= _FINITE_WEIGHTS_MAX:
        for key in [k for k, (ref, _) in _FINITE_WEIGHTS.items() if ref() is None]:
            del _FINITE_WEIGHTS[key]
        if len(_FINITE_WEIGHTS) >= _FINITE_WEIGHTS_MAX:
            _FINITE_WEIGHTS.clear()
    _FINITE_WEIGHTS[id(weight)] = (weakref.ref(weight), version)


def _check_finite_inputs(hidden: Tensor, weight: Tensor, bias: Tensor | None) -> None:
    """NaN/inf in ``hidden``, ``weight`` or ``bias`` would silently pick token 0: raise instead.

    One fused device sync; reads hidden (N*d) and bias (V) every call, the weight (V*d) only
    when it is not known finite (see ``_FINITE_WEIGHTS``).
    """
    check_weight = weight.numel() > 0 and not _weight_known_finite(weight)
    parts = [(name, t) for name, t in (("hidden", hidden), ("bias", bias)) if t is not None and t.numel()]
    if check_weight:
        parts.append(("weight", weight))
    if not parts:
        return
    flags = torch.stack([torch.isfinite(t).all() for _, t in parts])
    if bool(flags.all()):
        if check_weight:
            _remember_finite_weight(weight)
        return
    name, t = parts[int((~flags).nonzero()[0, 0])]
    where = (~torch.isfinite(t)).nonzero()[0].tolist()
    value = float(t[tuple(where)])
    raise ValueError(
        f"{name}[{', '.join(map(str, where))}]={value!r}: {name} must be finite (NaN/inf would "
        "make every logit of a row NaN or infinite and silently pick token 0)"
    )


def _validate(hidden, weight, reward, bias, softcap, temperature, mode, seed, tokens, backend, need_grad):
    """Check every argument; return ``(reward [N] fp32 tensor, softcap, temperature)``."""
    if not isinstance(hidden, Tensor):
        raise ValueError(f"hidden={type(hidden).__name__}: expected a torch.Tensor [N, d]")
    if not isinstance(weight, Tensor):
        raise ValueError(f"weight={type(weight).__name__}: expected a torch.Tensor [V, d]")
    if hidden.dim() != 2:
        raise ValueError(f"hidden.shape={tuple(hidden.shape)}: expected 2 dims [N, d]")
    if weight.dim() != 2:
        raise ValueError(f"weight.shape={tuple(weight.shape)}: expected 2 dims [V, d]")
    if hidden.dtype not in FLOAT_DTYPES:
        raise ValueError(f"hidden.dtype={hidden.dtype}: allowed dtypes are {FLOAT_DTYPES}")
    if weight.dtype != hidden.dtype:
        raise ValueError(f"weight.dtype={weight.dtype}: must equal hidden.dtype={hidden.dtype}")
    n, d = hidden.shape
    v = weight.shape[0]
    if d < 1:
        raise ValueError(f"hidden.shape={tuple(hidden.shape)}: expected d >= 1")
    if weight.shape[1] != d or v < 1:
        raise ValueError(
            f"weight.shape={tuple(weight.shape)}: expected [V >= 1, {d}] to match "
            f"hidden.shape={tuple(hidden.shape)}"
        )
    if weight.device != hidden.device:
        raise ValueError(f"weight.device={weight.device}: must equal hidden.device={hidden.device}")
    if bias is not None:
        if not isinstance(bias, Tensor):
            raise ValueError(f"bias={type(bias).__name__}: expected None or a torch.Tensor [V]")
        if tuple(bias.shape) != (v,):
            raise ValueError(f"bias.shape={tuple(bias.shape)}: expected ({v},)")
        if not bias.dtype.is_floating_point:
            raise ValueError(f"bias.dtype={bias.dtype}: expected a floating dtype")
        if bias.device != hidden.device:
            raise ValueError(f"bias.device={bias.device}: must equal hidden.device={hidden.device}")
    if softcap is not None:
        softcap = check_finite_float("softcap", softcap)
        if softcap <= 0:
            raise ValueError(f"softcap={softcap!r}: expected None or a finite number > 0")
    temperature = check_temperature("temperature", check_finite_float("temperature", temperature))
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}: allowed values are {MODES}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**64:
        raise ValueError(f"seed={seed!r}: expected an integer in [0, 2**64)")
    check_backend(backend)
    if not isinstance(need_grad, bool):
        raise ValueError(f"need_grad={need_grad!r}: expected True or False")
    if tokens is not None:
        if not isinstance(tokens, Tensor):
            raise ValueError(f"tokens={type(tokens).__name__}: expected None or an integer torch.Tensor [N]")
        if tuple(tokens.shape) != (n,):
            raise ValueError(f"tokens.shape={tuple(tokens.shape)}: expected ({n},)")
        if tokens.dtype.is_floating_point or tokens.dtype.is_complex or tokens.dtype == torch.bool:
            raise ValueError(f"tokens.dtype={tokens.dtype}: expected an integer dtype")
        if tokens.device != hidden.device:
            raise ValueError(f"tokens.device={tokens.device}: must equal hidden.device={hidden.device}")
        if n > 0:
            lo, hi = int(tokens.min()), int(tokens.max())
            if lo < 0 or hi >= v:
                raise ValueError(f"tokens range [{lo}, {hi}]: token ids must lie in [0, {v})")
    if isinstance(reward, Tensor) and reward.dim() > 0:
        if tuple(reward.shape) != (n,):
            raise ValueError(
                f"reward.shape={tuple(reward.shape)}: expected a float or a tensor of shape ({n},)"
            )
        if not reward.dtype.is_floating_point:
            raise ValueError(f"reward.dtype={reward.dtype}: expected a floating dtype")
        if reward.device != hidden.device:
            raise ValueError(f"reward.device={reward.device}: must equal hidden.device={hidden.device}")
        if n > 0:
            bad = ~torch.isfinite(reward) | (reward.abs() > REWARD_MAX)
            if bool(bad.any()):
                i = int(bad.nonzero()[0, 0])
                raise ValueError(
                    f"reward={float(reward[i])!r} at row {i}: expected finite values with |reward| <= "
                    f"{REWARD_MAX:g} (larger ones can overflow the fp32 gradient)"
                )
        reward_t = reward.detach().to(torch.float32)
    else:
        r = check_reward_range("reward", check_finite_float("reward", reward))
        reward_t = torch.full((n,), r, dtype=torch.float32, device=hidden.device)
    _check_finite_inputs(hidden, weight, bias)
    return reward_t, softcap, temperature


def latent_policy_grad(
    hidden,
    weight,
    reward=1.0,
    *,
    bias=None,
    softcap=None,
    temperature=1.0,
    mode="greedy",
    seed=0,
    tokens=None,
    backend="auto",
    need_grad=True,
) -> LatentGrad:
    """Choose (or score) one token per latent row and return the policy gradient w.r.t. the latents.

    - ``hidden`` [N, d] and ``weight`` [V, d]: fp32/fp16/bf16, same dtype and device, any strides.
    - ``reward``: a finite float or an [N] float tensor; the loss is ``-sum_n r_n log pi_n[tok_n]``.
    - ``bias`` [V] (any float dtype), ``softcap`` (> 0: ``c tanh(l / c)``), ``temperature`` (> 0).
    - ``mode``: ``"greedy"`` (argmax, lowest index on ties) or ``"sample"`` (Gumbel-max with noise
      keyed on (seed, row, token id), identical across backends). ``tokens`` [N] (integer ids in
      [0, V)) scores the given tokens instead and then ``mode``/``seed`` are unused.
    - ``backend``: ``"reference"`` (autograd over full fp32 logits), ``"torch"`` (chunked analytic),
      ``"triton"`` (fused kernels; CUDA, or CPU under TRITON_INTERPRET=1) or ``"auto"``.
    - ``need_grad=False`` skips the gradient (``grad`` is None): tokens, log-probs, argmax and gap only.

    ``gap`` [N] fp32, in every mode: the largest minus the second largest logit (bias added,
    soft-capped, before the temperature), 0 on an exact tie and +inf when V == 1. Every backend
    computes it in the same pass as the argmax, without an [N, V] tensor outside ``reference``.

    Inputs are never modified. Every check runs before any compute and raises ``ValueError``.

    Ranges (chosen so fp32 cannot overflow, see ``_util.REWARD_MAX``): ``|reward| <= 1e6``,
    ``temperature >= 1e-4``. Non-finite values: NaN/inf in ``hidden``, ``weight``, ``bias`` or
    ``reward`` raise ``ValueError`` naming the first bad element. Cost: one device sync and a
    read of hidden and bias per call; the weight (V*d values, as much as the op's own pass) is
    read on its first use and again only after torch's version counter shows an in-place change.
    """
    reward_t, softcap, temperature = _validate(
        hidden, weight, reward, bias, softcap, temperature, mode, seed, tokens, backend, need_grad
    )
    chosen = resolve_backend(backend, hidden.device)
    n, d = hidden.shape
    dev = hidden.device
    if n == 0:
        empty_i = torch.empty(0, dtype=torch.int64, device=dev)
        empty_f = torch.empty(0, dtype=torch.float32, device=dev)
        grad = torch.zeros(0, d, dtype=torch.float32, device=dev) if need_grad else None
        return LatentGrad(empty_i, empty_f, empty_f.clone(), grad, empty_i.clone(), empty_f.clone())
    inputs = LatentGradInputs(
        hidden=hidden.detach(),
        weight=weight.detach(),
        reward=reward_t,
        bias=None if bias is None else bias.detach(),
        softcap=softcap,
        temperature=temperature,
        mode=mode,
        seed=int(seed),
        tokens=tokens,
        need_grad=need_grad,
    )
    if chosen == "reference":
        out = lpg_reference(inputs)
    elif chosen == "torch":
        with torch.no_grad():
            out = lpg_torch(inputs)
    else:
        with torch.no_grad():
            out = lpg_triton(inputs)
    logging.getLogger("latentseek_fast").debug("latent_policy_grad: backend=%s N=%d", chosen, n)
    return out
