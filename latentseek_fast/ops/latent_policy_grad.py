"""The latent policy gradient op: tokens, log-probs and d(-r log pi[token])/dh for an LM head.

Per row ``h`` (LATENTSEEK.md section 2, the gradient step of the seek loop):

    l = h W^T (+ b);  l = c tanh(l / c) with a soft-cap c;  s = l / T;  pi = softmax(s)
    token = argmax s (greedy) | argmax(s + Gumbel) (sample) | given (teacher forcing)
    grad  = (r / T) * sum_v (pi_v - [v == token]) * dl_v/dh

The gradient is linear in ``r``: the seek loop asks for the direction with ``reward=1.0``
before the reward is known and scales it later. ``argmax`` is returned in every mode because
the seek loop re-decodes with it.
"""

from __future__ import annotations

import logging
import numbers
from dataclasses import dataclass

import torch
from torch import Tensor

from latentseek_fast._util import check_finite_float, say_once
from latentseek_fast.kernels import interpreting

BACKENDS = ("auto", "reference", "torch", "triton")
MODES = ("greedy", "sample")
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@dataclass
class LatentGrad:
    """Result of :func:`latent_policy_grad` (all tensors on the input's device)."""

    tokens: Tensor  # [N] int64: chosen token per row (argmax, Gumbel-max, or the given tokens)
    logprob: Tensor  # [N] fp32: log pi[token]
    lse: Tensor  # [N] fp32: logsumexp(s)
    grad: Tensor | None  # [N, d] fp32: d/dh of -sum_t r_t log pi_t[token_t]; None when need_grad=False
    argmax: Tensor  # [N] int64: argmax of s (lowest index on ties) in every mode


def triton_unavailable_reason(device: torch.device | str) -> str | None:
    """Why the triton backend cannot run on ``device``, or None when it can."""
    device = torch.device(device)
    if device.type != "cuda" and not interpreting():
        return f"the latents are on {device} (triton needs CUDA, or TRITON_INTERPRET=1 on CPU)"
    try:
        import triton  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install
        return f"triton does not import ({type(exc).__name__}: {exc})"
    return None


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
    temperature = check_finite_float("temperature", temperature)
    if temperature <= 0:
        raise ValueError(f"temperature={temperature!r}: expected a finite number > 0")
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}: allowed values are {MODES}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**64:
        raise ValueError(f"seed={seed!r}: expected an integer in [0, 2**64)")
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r}: allowed values are {BACKENDS}")
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
        if n > 0 and not bool(torch.isfinite(reward).all()):
            raise ValueError(f"reward={reward}: expected finite values")
        reward_t = reward.detach().to(torch.float32)
    else:
        r = check_finite_float("reward", reward)
        reward_t = torch.full((n,), r, dtype=torch.float32, device=hidden.device)
    return reward_t, softcap, temperature


def _pick_backend(backend: str, hidden: Tensor) -> str:
    if backend == "triton":
        reason = triton_unavailable_reason(hidden.device)
        if reason is not None:
            raise ValueError(f"backend='triton' cannot run: {reason}")
        return backend
    if backend != "auto":
        return backend
    reason = None if hidden.device.type == "cuda" else f"hidden is on {hidden.device}, not CUDA"
    if reason is None:
        reason = triton_unavailable_reason(hidden.device)
    if reason is not None:
        say_once("lpg-auto-no-triton", f"latent_policy_grad: triton backend not used: {reason}")
        say_once("lpg-auto-choice-torch", "latent_policy_grad: backend='auto' chose 'torch'")
        return "torch"
    say_once("lpg-auto-choice-triton", "latent_policy_grad: backend='auto' chose 'triton'")
    return "triton"


def _lpg_triton(hidden, weight, reward_t, bias, softcap, temperature, mode, seed, tokens, need_grad):
    from latentseek_fast.kernels.lpg_forward import lpg_forward
    from latentseek_fast.kernels.lpg_grad import lpg_grad
    from latentseek_fast.ops.gumbel import seed_key

    tok, logprob, lse, argmax = lpg_forward(
        hidden, weight, bias, tokens, softcap, temperature, mode, seed_key(int(seed))
    )
    grad = None
    if need_grad:
        grad = lpg_grad(hidden, weight, bias, tok, lse, reward_t / temperature, softcap, temperature)
    return tok, logprob, lse, grad, argmax


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
    - ``need_grad=False`` skips the gradient (``grad`` is None): tokens, log-probs and argmax only.

    Inputs are never modified. Every check runs before any compute and raises ``ValueError``.
    """
    reward_t, softcap, temperature = _validate(
        hidden, weight, reward, bias, softcap, temperature, mode, seed, tokens, backend, need_grad
    )
    chosen = _pick_backend(backend, hidden)
    n, d = hidden.shape
    dev = hidden.device
    if n == 0:
        empty_i = torch.empty(0, dtype=torch.int64, device=dev)
        empty_f = torch.empty(0, dtype=torch.float32, device=dev)
        grad = torch.zeros(0, d, dtype=torch.float32, device=dev) if need_grad else None
        return LatentGrad(empty_i, empty_f, empty_f.clone(), grad, empty_i.clone())
    args = (
        hidden.detach(),
        weight.detach(),
        reward_t,
        None if bias is None else bias.detach(),
        softcap,
        temperature,
        mode,
        int(seed),
        tokens,
        need_grad,
    )
    if chosen == "reference":
        from latentseek_fast.ops.lpg_reference import lpg_reference

        out = lpg_reference(*args)
    elif chosen == "torch":
        from latentseek_fast.ops.lpg_torch import lpg_torch

        with torch.no_grad():
            out = lpg_torch(*args)
    else:
        with torch.no_grad():
            out = _lpg_triton(*args)
    tok, logprob, lse, grad, argmax = out
    logging.getLogger("latentseek_fast").debug("latent_policy_grad: backend=%s N=%d", chosen, n)
    return LatentGrad(tok, logprob, lse, grad, argmax)
