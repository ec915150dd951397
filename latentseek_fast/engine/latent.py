"""The latent step of many problems at once: one ``latent_policy_grad`` call over their
concatenated rows, ``latent_adam_`` with a per-row reward.

Each problem keeps the state ``steppers.FusedStepper`` keeps (latents, fp32 master when the
model dtype is not fp32, Adam moments, step count, the pending gradient direction), and
``fused_step`` does for all of them what ``FusedStepper.step`` does for one:

- Adam: rows are grouped by their Adam step count (bias correction ``1 - beta**step`` is one
  scalar per ``latent_adam_`` call) and each group is ONE call with a per-row reward tensor.
  In a round, problems that started together share a step count, so there is usually one
  group; exactness is kept instead of folding per-row corrections into the reward, which
  would change the rounding of every update. With ``grad_clip`` each problem is its own
  group, since the clip norm is the norm of that problem's whole gradient.
- Re-decode plus the next direction: ONE ``latent_policy_grad`` call over all rows (greedy
  mode). In ``sample`` mode the Gumbel noise is keyed on (seed + step, row within the call),
  so each problem gets its own call, keeping its tokens those of ``seek``.

Every operation is row-wise, so a problem's numbers do not depend on which others share the
call (up to the BLAS blocking of the LM-head matmul, ~1 ulp).
"""

from __future__ import annotations

import torch

from ..ops.latent_adam import latent_adam_
from ..ops.latent_policy_grad import latent_policy_grad


class FusedLatents:
    """One problem's latent state for the fused backends (that of ``FusedStepper``)."""

    def __init__(self, latents: torch.Tensor, weight: torch.Tensor):
        self.latents = latents.detach().to(weight.dtype).contiguous().clone()
        self.master = self.latents.float() if self.latents.dtype != torch.float32 else None
        self.exp_avg = torch.zeros(self.latents.shape, dtype=torch.float32, device=self.latents.device)
        self.exp_avg_sq = torch.zeros_like(self.exp_avg)
        self.steps = 0
        self.grad: torch.Tensor | None = None  # direction at the current latents (reward 1)

    @property
    def rows(self) -> int:
        return int(self.latents.shape[0])


class FusedBatch:
    """The LM head and options shared by every problem of a ``seek_many`` call."""

    def __init__(self, head, config, backend: str, softcap: float | None):
        self.weight = head.weight.detach()
        self.bias = head.bias.detach() if head.bias is not None else None
        self.config = config
        self.backend = backend
        self.softcap = softcap

    def _lpg(self, latents: torch.Tensor, steps: int, need_grad: bool):
        return latent_policy_grad(
            latents,
            self.weight,
            1.0,
            bias=self.bias,
            softcap=self.softcap,
            temperature=self.config.temperature,
            mode=self.config.mode,
            seed=self.config.seed + steps,
            backend=self.backend,
            need_grad=need_grad,
        )

    def _evaluate(self, states: list[FusedLatents], need_grad: bool) -> list[torch.Tensor]:
        """Evaluate every state at its current latents; set ``grad`` (when asked); return argmaxes."""
        if self.config.mode == "sample" or len(states) == 1:
            outs = [self._lpg(s.latents, s.steps, need_grad) for s in states]
            grads = [o.grad for o in outs]
            argmaxes = [o.argmax for o in outs]
        else:
            out = self._lpg(torch.cat([s.latents for s in states]), states[0].steps, need_grad)
            sizes = [s.rows for s in states]
            argmaxes = list(out.argmax.split(sizes))
            grads = list(out.grad.split(sizes)) if need_grad else [None] * len(states)
        for s, g in zip(states, grads):
            s.grad = g
        return argmaxes

    def init(self, states: list[FusedLatents]) -> None:
        """The first gradient direction of fresh states (what ``FusedStepper.__init__`` computes)."""
        if states:
            self._evaluate(states, need_grad=True)

    def step(
        self, states: list[FusedLatents], rewards: list[float], need_next: list[bool]
    ) -> list[list[int]]:
        """One Adam step per state with gradient ``reward * direction``, then the re-decoded tokens
        (argmax at the updated latents) and, where ``need_next``, the next direction."""
        groups: dict[object, list[int]] = {}
        for i, s in enumerate(states):
            s.steps += 1
            key = i if self.config.grad_clip else s.steps
            groups.setdefault(key, []).append(i)
        for members in groups.values():
            self._adam([states[i] for i in members], [rewards[i] for i in members])
        argmaxes = self._evaluate(states, need_grad=any(need_next))
        flat = torch.cat(argmaxes).tolist()
        out, o = [], 0
        for s in states:
            out.append(flat[o : o + s.rows])
            o += s.rows
        return out

    def _adam(self, group: list[FusedLatents], rewards: list[float]) -> None:
        cfg = self.config
        device = group[0].latents.device
        reward = torch.cat(
            [torch.full((s.rows,), r, dtype=torch.float32, device=device) for s, r in zip(group, rewards)]
        )
        if len(group) == 1:
            s = group[0]
            parts = (s.latents, s.grad, s.exp_avg, s.exp_avg_sq, s.master)
        else:
            has_master = group[0].master is not None
            parts = (
                torch.cat([s.latents for s in group]),
                torch.cat([s.grad for s in group]),
                torch.cat([s.exp_avg for s in group]),
                torch.cat([s.exp_avg_sq for s in group]),
                torch.cat([s.master for s in group]) if has_master else None,
            )
        latents, grad, exp_avg, exp_avg_sq, master = parts
        latent_adam_(
            latents,
            grad,
            reward,
            exp_avg,
            exp_avg_sq,
            group[0].steps,
            cfg.lr,
            max_grad_norm=cfg.grad_clip or None,
            master=master,
        )
        if len(group) > 1:
            o = 0
            for s in group:
                n = s.rows
                s.latents.copy_(latents[o : o + n])
                s.exp_avg.copy_(exp_avg[o : o + n])
                s.exp_avg_sq.copy_(exp_avg_sq[o : o + n])
                if master is not None:
                    s.master.copy_(master[o : o + n])
                o += n
