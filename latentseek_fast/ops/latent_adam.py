"""``latent_adam_``: one fused Adam step on the LatentSeek latents, gradient = reward * direction.

Semantics are those of ``torch.optim.Adam`` with default options (no weight decay, no amsgrad,
not maximize) applied to a parameter whose ``.grad`` is ``reward * direction``, optionally
clipped first exactly like ``torch.nn.utils.clip_grad_norm_(max_norm)``.

Two implementations give the same results:

- ``"native"``: ``torch.ops.latentseek.latent_adam_`` from the compiled extension (CPU always,
  CUDA when built with it): one pass over memory, no gradient tensor; with clipping one extra
  read-only pass for the norm.
- ``"torch"``: the same steps with plain torch ops (the fallback, and the test oracle's twin).

``impl="auto"`` (default) picks the native op when the extension is built and has a kernel for
the latents' device, else the torch one (the reason is logged once).

Precision: the moments (``exp_avg``, ``exp_avg_sq``) and ``master`` are fp32. With ``master``
the fp32 master is the parameter Adam updates, and the latents are then written as
``master.to(latents.dtype)`` (round to nearest even); the latents' old values are not read.
Without ``master``, bf16/fp16 latents are read as fp32, updated in fp32 and rounded back, so
updates smaller than half an ulp of the latents are lost, as in the research code that keeps
latents in the model dtype. A bf16/fp16 ``direction`` is upcast to fp32 before it is multiplied
by the reward (torch would form a low-precision gradient).

Native fp32 parity with ``torch.optim.Adam``: the moments are bitwise equal without clipping;
the latents differ by at most ~1 ulp per step because ATen's vectorised CPU ``sqrt`` is not
always correctly rounded (ours is). With clipping the norm is summed in fp64, so ``clip_coef``
can differ from ``clip_grad_norm_``'s by an ulp.
"""

from __future__ import annotations

import math
import numbers
import operator

import torch

from latentseek_fast import _ext
from latentseek_fast._util import REWARD_MAX, check_finite_float, check_reward_range, say_once

__all__ = ["latent_adam_"]

_OP_NAME = "latent_adam_"
_LATENT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_IMPLS = ("auto", "native", "torch")


def _check_tensor(name: str, t, *, shape, device, dtypes) -> None:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(t.shape)}; expected {tuple(shape)} (the latents' shape)")
    if t.dtype not in dtypes:
        allowed = ", ".join(str(d).removeprefix("torch.") for d in dtypes)
        raise ValueError(f"{name} has dtype {t.dtype}; allowed: {allowed}")
    if t.device != device:
        raise ValueError(f"{name} is on {t.device}; expected the latents' device {device}")


def _byte_span(t: torch.Tensor) -> tuple[int, int, int] | None:
    """``(storage address, first byte, end byte)`` that ``t``'s elements can touch; None if empty."""
    if t.numel() == 0:
        return None
    last = t.storage_offset() + sum((n - 1) * st for n, st in zip(t.shape, t.stride()))
    size = t.element_size()
    return t.untyped_storage().data_ptr(), t.storage_offset() * size, (last + 1) * size


def _internal_overlap(t: torch.Tensor) -> bool:
    """True when two elements of ``t`` may share memory (conservative: any stride pattern that
    cannot be proven disjoint, e.g. a zero stride, counts)."""
    reach = 1  # offsets covered by the dimensions seen so far, in elements
    for st, n in sorted((st, n) for n, st in zip(t.shape, t.stride()) if n > 1):
        if st < reach:
            return True
        reach += st * (n - 1)
    return False


def _validate(
    latents, direction, reward, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, max_grad_norm, master, impl
):
    """Check everything before any work; return normalised (reward, step, max_norm, ...)."""
    if impl not in _IMPLS:
        raise ValueError(f"impl={impl!r}; allowed: {', '.join(map(repr, _IMPLS))}")
    if not isinstance(latents, torch.Tensor):
        raise ValueError(f"latents must be a torch.Tensor, got {type(latents).__name__}")
    if latents.dim() != 2:
        raise ValueError(f"latents must be 2-D [N, d]; got shape {tuple(latents.shape)}")
    if latents.dtype not in _LATENT_DTYPES:
        raise ValueError(f"latents have dtype {latents.dtype}; allowed: float32, bfloat16, float16")
    shape, device = latents.shape, latents.device
    f32 = (torch.float32,)
    _check_tensor(
        "direction",
        direction,
        shape=shape,
        device=device,
        dtypes=tuple(dict.fromkeys((torch.float32, latents.dtype))),
    )
    _check_tensor("exp_avg", exp_avg, shape=shape, device=device, dtypes=f32)
    _check_tensor("exp_avg_sq", exp_avg_sq, shape=shape, device=device, dtypes=f32)
    if master is not None:
        _check_tensor("master", master, shape=shape, device=device, dtypes=f32)
    mutated = {"latents": latents, "exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}
    if master is not None:
        mutated["master"] = master
    for name, t in mutated.items():
        if _internal_overlap(t):
            raise ValueError(
                f"{name} has strides {t.stride()} for shape {tuple(t.shape)}: its elements overlap "
                "in memory (e.g. an expand()ed view); an in-place update needs distinct elements"
            )
    operands = [*mutated.items(), ("direction", direction)]
    if isinstance(reward, torch.Tensor):
        operands.append(("reward", reward))
    spans = [(name, _byte_span(t)) for name, t in operands]
    for i, (name, a) in enumerate(spans):
        for other, b in spans[:i]:
            if a is not None and b is not None and a[0] == b[0] and a[1] < b[2] and b[1] < a[2]:
                raise ValueError(
                    f"{name} shares memory with {other} (bytes [{a[1]}, {a[2]}) and [{b[1]}, {b[2]}) "
                    "of one storage overlap); the tensors updated in place must not overlap each "
                    "other or direction/reward"
                )

    if isinstance(reward, torch.Tensor):
        if not reward.is_floating_point():
            raise ValueError(f"reward tensor has dtype {reward.dtype}; expected a floating dtype")
        if reward.device != device:
            raise ValueError(f"reward is on {reward.device}; expected the latents' device {device}")
        if reward.dim() == 0:
            reward = reward.reshape(1).expand(shape[0])
        elif tuple(reward.shape) != (shape[0],):
            raise ValueError(
                f"reward has shape {tuple(reward.shape)}; expected a float or a [{shape[0]}] "
                "tensor (one reward per latent row)"
            )
        bad = ~torch.isfinite(reward) | (reward.abs() > REWARD_MAX)
        if reward.numel() and bool(bad.any()):  # one device sync on N values
            i = int(bad.reshape(-1).nonzero()[0, 0])
            value = float(reward.reshape(-1)[i])
            raise ValueError(
                f"reward={value!r} at row {i}: expected finite values with |reward| <= {REWARD_MAX:g} "
                "(larger ones can overflow the fp32 gradient reward * direction)"
            )
        reward = reward.to(torch.float32).contiguous()
    else:
        reward = check_reward_range("reward", check_finite_float("reward", reward))

    if isinstance(step, bool):
        raise ValueError(f"step={step!r}: expected an int >= 1 (the 1-based update count)")
    if isinstance(step, torch.Tensor) or (
        isinstance(step, numbers.Real) and not isinstance(step, numbers.Integral)
    ):
        value = float(step)
        if not (math.isfinite(value) and value.is_integer()):
            raise ValueError(f"step={step!r}: expected an int >= 1 (the 1-based update count)")
        step = int(value)
    else:
        try:
            step = operator.index(step)
        except TypeError:
            raise ValueError(f"step={step!r}: expected an int >= 1 (the 1-based update count)") from None
    if step < 1:
        raise ValueError(
            f"step={step}: expected an int >= 1 (torch.optim.Adam's state['step'] after its increment)"
        )

    lr = check_finite_float("lr", lr)
    if lr < 0:
        raise ValueError(f"lr={lr}: expected >= 0")
    for name, b in (("beta1", beta1), ("beta2", beta2)):
        b = check_finite_float(name, b)
        if not 0.0 <= b < 1.0:
            raise ValueError(f"{name}={b}: expected 0 <= {name} < 1")
    beta1, beta2 = float(beta1), float(beta2)
    eps = check_finite_float("eps", eps)
    if eps < 0:
        raise ValueError(f"eps={eps}: expected >= 0")
    max_norm = check_finite_float("max_grad_norm", max_grad_norm, allow_none=True)
    if max_norm is None:
        max_norm = 0.0
    if max_norm < 0:
        raise ValueError(f"max_grad_norm={max_norm}: expected None or 0 (no clipping) or > 0")
    return reward, step, lr, beta1, beta2, eps, max_norm


@torch.no_grad()
def _latent_adam_torch(
    latents, direction, reward, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, max_norm, master
) -> None:
    """Plain-torch twin of the native op (arguments already validated and normalised)."""
    d32 = direction.to(torch.float32)
    grad = reward[:, None] * d32 if isinstance(reward, torch.Tensor) else reward * d32
    if max_norm > 0:
        # torch.nn.utils.clip_grad_norm_ for a single tensor.
        total_norm = torch.linalg.vector_norm(grad, 2)
        clip_coef = torch.clamp(max_norm / (total_norm + 1e-6), max=1.0)
        grad.mul_(clip_coef)
    if master is not None:
        param = master
    elif latents.dtype == torch.float32:
        param = latents
    else:
        param = latents.to(torch.float32)
    # torch.optim.Adam, single-tensor path, default options.
    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    step_size = lr / bias_correction1
    bias_correction2_sqrt = bias_correction2**0.5
    denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
    param.addcdiv_(exp_avg, denom, value=-step_size)
    if param is not latents:
        latents.copy_(param)


def _native_ok(device: torch.device) -> tuple[bool, str | None]:
    if not _ext.load():
        return False, _ext.ext_unavailable_reason()
    if not _ext.ext_has_kernel(_OP_NAME, device.type):
        return False, f"the extension was built without a {device.type} kernel for {_ext.LATENT_ADAM}"
    return True, None


def latent_adam_(
    latents: torch.Tensor,
    direction: torch.Tensor,
    reward: float | torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    step: int,
    lr: float,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    max_grad_norm: float | None = None,
    master: torch.Tensor | None = None,
    *,
    impl: str = "auto",
) -> torch.Tensor:
    """One Adam step on ``latents`` (in place) with gradient ``reward * direction``.

    Args:
        latents: [N, d] fp32/bf16/fp16, updated in place (written from ``master`` when given).
        direction: [N, d] fp32 (or the latents' dtype); the gradient is ``reward * direction``.
            Not modified.
        reward: a float, or an [N] tensor of per-row rewards (any float dtype, same device).
        exp_avg, exp_avg_sq: [N, d] fp32 Adam moments, updated in place (start from zeros).
        step: the 1-based number of this update (``torch.optim.Adam``'s ``state['step']`` after
            its increment), used for bias correction.
        lr, beta1, beta2, eps: Adam hyper-parameters (``lr >= 0``, ``0 <= beta < 1``, ``eps >= 0``).
        max_grad_norm: None or 0 for no clipping; else the gradient is scaled like
            ``clip_grad_norm_(max_norm)`` before the Adam step.
        master: optional [N, d] fp32 master copy, updated in place; the latents become
            ``master.to(latents.dtype)``.
        impl: ``"auto"`` (native op when available), ``"native"`` (error if unavailable) or
            ``"torch"`` (plain torch ops).

    Returns:
        ``latents`` (the same tensor object).

    Non-contiguous mutated tensors are updated through a contiguous copy that is copied back.
    The mutated tensors must not overlap each other, ``direction`` or ``reward`` in memory (any
    shared byte range of one storage is rejected, not only equal start pointers). ``reward``
    must be finite with ``|reward| <= 1e6`` (``_util.REWARD_MAX``: beyond it ``reward *
    direction`` can overflow fp32); a tensor reward costs one device sync for that check. The
    values of ``direction``, the moments and the latents are not checked (that would read all
    of them again): NaN/inf there propagate as in ``torch.optim.Adam``; the seek loop checks
    the latents and the direction once per step.
    """
    reward, step, lr, beta1, beta2, eps, max_norm = _validate(
        latents,
        direction,
        reward,
        exp_avg,
        exp_avg_sq,
        step,
        lr,
        beta1,
        beta2,
        eps,
        max_grad_norm,
        master,
        impl,
    )

    use_native = False
    if impl != "torch":
        ok, why = _native_ok(latents.device)
        if ok:
            use_native = True
        elif impl == "native":
            raise RuntimeError(f"latent_adam_(impl='native') is unavailable: {why}")
        else:
            say_once(
                f"latent_adam-fallback-{latents.device.type}",
                f"latent_adam_: using the torch fallback ({why})",
            )

    if not use_native:
        _latent_adam_torch(
            latents, direction, reward, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, max_norm, master
        )
        return latents

    mutated = [latents, exp_avg, exp_avg_sq, master]
    work = [t if t is None or t.is_contiguous() else t.contiguous() for t in mutated]
    reward_t = reward if isinstance(reward, torch.Tensor) else None
    reward_s = 0.0 if reward_t is not None else reward
    torch.ops.latentseek.latent_adam_.default(
        work[0],
        work[1],
        work[2],
        work[3],
        direction.contiguous(),
        reward_t,
        reward_s,
        step,
        lr,
        beta1,
        beta2,
        eps,
        max_norm,
    )
    for orig, w in zip(mutated, work):
        if w is not orig:
            orig.copy_(w)
    return latents
