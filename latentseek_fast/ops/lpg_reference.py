"""Autograd reference of the latent policy gradient: full [N, V] fp32 logits, the test oracle.

Memory is O(N * V); use it for checks and for the research-code-compatible path, not for speed.
Inputs are validated by ``latent_policy_grad``; this function trusts them.
"""

from __future__ import annotations

import torch

from latentseek_fast.ops.gumbel import gumbel_noise
from latentseek_fast.ops.lpg_types import LatentGrad, LatentGradInputs


def lpg_reference(x: LatentGradInputs) -> LatentGrad:
    """The latent policy gradient of ``x`` by autograd through the full fp32 logits."""
    hidden, weight, bias, tokens = x.hidden, x.weight, x.bias, x.tokens
    softcap, temperature, need_grad = x.softcap, x.temperature, x.need_grad
    # Autograd must record even under the caller's no_grad()/inference_mode(): grad is enabled
    # and inference mode left locally, and inference tensors (which autograd cannot save) are
    # cloned into normal ones.
    with torch.inference_mode(False), torch.enable_grad():
        h = hidden.detach().to(torch.float32).clone().requires_grad_(need_grad)
        w = weight.detach().to(torch.float32)
        if need_grad and w.is_inference():
            w = w.clone()
        logits = h @ w.T
        if bias is not None:
            logits = logits + bias.detach().to(torch.float32)
        if softcap is not None:
            logits = softcap * torch.tanh(logits / softcap)
        s = logits / temperature
        logp = torch.log_softmax(s, dim=-1)
        argmax = torch.argmax(s.detach(), dim=-1)  # first maximal index on ties
        if tokens is not None:
            tok = tokens.to(torch.int64).clone()
        elif x.mode == "sample":
            n, v = s.shape
            rows = torch.arange(n, device=s.device).unsqueeze(1)
            cols = torch.arange(v, device=s.device).unsqueeze(0)
            tok = torch.argmax(s.detach() + gumbel_noise(x.seed, rows, cols), dim=-1)
        else:
            tok = argmax
        lp = logp.gather(1, tok.unsqueeze(1)).squeeze(1)
        grad = None
        if need_grad:
            loss = -(x.reward.to(torch.float32).clone() * lp).sum()
            (grad,) = torch.autograd.grad(loss, h)
    lse = torch.logsumexp(s.detach(), dim=-1)
    return LatentGrad(tok, lp.detach(), lse, grad, argmax, top2_gap(logits.detach()))


def top2_gap(logits: torch.Tensor, softcap: float | None = None) -> torch.Tensor:
    """Per row of ``logits`` [N, V]: largest minus second largest (0 on a tie, +inf when V == 1),
    in at least fp32 (fp64 logits stay fp64). With ``softcap``, the gap of the capped logits
    ``softcap * tanh(s / softcap)`` (a monotone map: the same two logits are the top two). The
    one definition of a decision's top-2 gap: the decode step's (``decoding.rows``), the latent
    step's re-decode and this reference's."""
    if logits.shape[-1] < 2:
        dtype = torch.promote_types(logits.dtype, torch.float32)
        return torch.full(logits.shape[:-1], float("inf"), dtype=dtype, device=logits.device)
    top = logits.topk(2, dim=-1).values
    top = top.to(torch.promote_types(top.dtype, torch.float32))
    if softcap is not None:
        top = softcap * torch.tanh(top / softcap)
    return top[..., 0] - top[..., 1]
