"""Autograd reference of the latent policy gradient: full [N, V] fp32 logits, the test oracle.

Memory is O(N * V); use it for checks and for the research-code-compatible path, not for speed.
Inputs are validated by ``latent_policy_grad``; this function trusts them.
"""

from __future__ import annotations

import torch

from latentseek_fast.ops.gumbel import gumbel_noise


def lpg_reference(hidden, weight, reward, bias, softcap, temperature, mode, seed, tokens, need_grad):
    """Return ``(tokens, logprob, lse, grad_or_None, argmax)``; ``reward`` is an fp32 [N] tensor."""
    h = hidden.detach().to(torch.float32).clone().requires_grad_(need_grad)
    w = weight.detach().to(torch.float32)
    with torch.enable_grad():
        logits = h @ w.T
        if bias is not None:
            logits = logits + bias.detach().to(torch.float32)
        if softcap is not None:
            logits = softcap * torch.tanh(logits / softcap)
        s = logits / temperature
        logp = torch.log_softmax(s, dim=-1)
        argmax = torch.argmax(s.detach(), dim=-1)  # first maximal index on ties
        if tokens is not None:
            tok = tokens.to(torch.int64)
        elif mode == "sample":
            n, v = s.shape
            rows = torch.arange(n, device=s.device).unsqueeze(1)
            cols = torch.arange(v, device=s.device).unsqueeze(0)
            tok = torch.argmax(s.detach() + gumbel_noise(seed, rows, cols), dim=-1)
        else:
            tok = argmax
        lp = logp.gather(1, tok.unsqueeze(1)).squeeze(1)
        grad = None
        if need_grad:
            loss = -(reward.to(torch.float32) * lp).sum()
            (grad,) = torch.autograd.grad(loss, h)
    lse = torch.logsumexp(s.detach(), dim=-1)
    return tok, lp.detach(), lse, grad, argmax
