"""The triton implementation of ``latent_policy_grad``: the launchers of ``kernels/lpg/``.

The kernels are imported on first call, so that importing the ops never imports triton's
compiler (``backends.resolve_backend`` decides whether triton can run at all).
"""

from __future__ import annotations

from latentseek_fast.ops.gumbel import seed_key
from latentseek_fast.ops.lpg_types import LatentGrad, LatentGradInputs


def lpg_triton(x: LatentGradInputs) -> LatentGrad:
    """Tokens, log-probs, logsumexp, argmax and its gap in one fused pass over W, the gradient in a second."""
    from latentseek_fast.kernels.lpg_forward import lpg_forward  # lazy: imports triton
    from latentseek_fast.kernels.lpg_grad import lpg_grad

    tok, logprob, lse, argmax, gap = lpg_forward(
        x.hidden, x.weight, x.bias, x.tokens, x.softcap, x.temperature, x.mode, seed_key(x.seed)
    )
    grad = None
    if x.need_grad:
        grad = lpg_grad(
            x.hidden, x.weight, x.bias, tok, lse, x.reward / x.temperature, x.softcap, x.temperature
        )
    return LatentGrad(tok, logprob, lse, grad, argmax, gap)
