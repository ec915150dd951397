"""Latent steppers: one Adam step on the L latents, then their greedy re-decode.

- ``ReferenceStepper``: autograd through the full ``[L, V]`` logits and ``torch.optim.Adam``,
  the research code's way (its ``1e-8``/``1e-10`` epsilons included). With
  ``latent_dtype="model"`` the parameter is kept in the model dtype, reproducing the research
  code exactly; otherwise an fp32 master is optimised and cast to the model dtype for the head.
- ``FusedStepper`` (``torch``/``triton``): ``latent_policy_grad`` yields the re-decoded tokens and
  the *next* step's gradient direction in the same pass (before the reward is known; the
  gradient is linear in it), and ``latent_adam_`` forms ``reward * direction`` inside the update.
"""

from __future__ import annotations

import contextlib

import torch

from . import decode
from .config import SeekConfig
from .ops.latent_adam import latent_adam_
from .ops.latent_policy_grad import latent_policy_grad


@contextlib.contextmanager
def _autograd_on():
    """Autograd on, whatever the caller's ``torch.no_grad()``/``torch.inference_mode()``: the
    reference step differentiates through the LM head (users wrap generation in those by habit)."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


def make_stepper(model, latents: torch.Tensor, config: SeekConfig, backend: str):
    """The stepper of the concrete ``backend`` (see ``backends.resolve_backend``) for ``latents``."""
    head = decode.lm_head_of(model)
    if backend == "reference":
        return ReferenceStepper(head, latents, config, softcap=decode.softcap_of(model))
    return FusedStepper(head, latents, config, backend, softcap=decode.softcap_of(model))


class ReferenceStepper:
    """Autograd through full logits + ``torch.optim.Adam`` (see the module docstring)."""

    def __init__(self, head, latents: torch.Tensor, config: SeekConfig, softcap: float | None = None):
        self.head = head
        self.config = config
        self.exact = config.latent_dtype == "model"
        with _autograd_on():  # a normal tensor even when the latents were made in inference mode
            init = latents.detach().clone()
            self.param = torch.nn.Parameter(init if self.exact else init.float())
        self.optimizer = torch.optim.Adam([self.param], lr=config.lr)
        # The research code ignores a soft-cap (it calls lm_head directly); the exact mode does too.
        self.softcap = None if self.exact else softcap
        self.steps = 0

    def _logits(self) -> torch.Tensor:
        z = self.param if self.exact else self.param.to(self.head.weight.dtype)
        logits = self.head(z)
        if not self.exact:
            logits = logits.float()
        if self.softcap:
            logits = self.softcap * torch.tanh(logits / self.softcap)
        if self.config.temperature != 1.0:
            logits = logits / self.config.temperature
        return logits

    def _tokens(self, probs: torch.Tensor) -> torch.Tensor:
        """The gradient's tokens: argmax of ``probs``, or the shared Gumbel-max sample."""
        if self.config.mode == "greedy":
            return torch.argmax(probs, dim=-1)
        z = self.param.detach().to(self.head.weight.dtype)
        bias = self.head.bias.detach() if self.head.bias is not None else None
        return latent_policy_grad(
            z,
            self.head.weight.detach(),
            1.0,
            bias=bias,
            softcap=self.softcap,
            temperature=self.config.temperature,
            mode="sample",
            seed=self.config.seed + self.steps,
            backend="reference",
            need_grad=False,
        ).tokens

    def step(self, reward: float, need_next: bool = True) -> list[int]:
        with _autograd_on():
            self.optimizer.zero_grad()
            logits = self._logits()
            probs = torch.softmax(logits, dim=-1) + 1e-8
            tokens = self._tokens(probs)
            logp = torch.log(probs[torch.arange(probs.shape[0]), tokens] + 1e-10)
            loss = -reward * logp.sum()
            loss.backward()
            if self.config.grad_clip:
                torch.nn.utils.clip_grad_norm_([self.param], self.config.grad_clip)
            self.optimizer.step()
        self.steps += 1
        with torch.no_grad():
            z = self.param if self.exact else self.param.to(self.head.weight.dtype)
            return torch.argmax(self.head(z), dim=-1).tolist()

    def state(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(latents, last gradient)``, for the seek loop's per-step finiteness check."""
        return self.param.detach(), self.param.grad


class FusedStepper:
    """``latent_policy_grad`` + ``latent_adam_`` (see the module docstring)."""

    def __init__(
        self, head, latents: torch.Tensor, config: SeekConfig, backend: str, softcap: float | None = None
    ):
        self.config = config
        self.backend = backend
        self.weight = head.weight.detach()
        self.bias = head.bias.detach() if head.bias is not None else None
        self.softcap = softcap
        self.latents = latents.detach().to(self.weight.dtype).contiguous().clone()
        self.master = self.latents.float() if self.latents.dtype != torch.float32 else None
        self.exp_avg = torch.zeros(self.latents.shape, dtype=torch.float32, device=self.latents.device)
        self.exp_avg_sq = torch.zeros_like(self.exp_avg)
        self.steps = 0
        self.pending = self._evaluate(need_grad=True)

    def _evaluate(self, need_grad: bool):
        return latent_policy_grad(
            self.latents,
            self.weight,
            1.0,
            bias=self.bias,
            softcap=self.softcap,
            temperature=self.config.temperature,
            mode=self.config.mode,
            seed=self.config.seed + self.steps,
            backend=self.backend,
            need_grad=need_grad,
        )

    def step(self, reward: float, need_next: bool = True) -> list[int]:
        self.steps += 1
        latent_adam_(
            self.latents,
            self.pending.grad,
            reward,
            self.exp_avg,
            self.exp_avg_sq,
            self.steps,
            self.config.lr,
            max_grad_norm=self.config.grad_clip or None,
            master=self.master,
        )
        # One pass at the updated latents: the re-decoded tokens now, the next direction for later.
        self.pending = self._evaluate(need_grad=need_next)
        return self.pending.argmax.tolist()

    def state(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(latents, next gradient direction or None)``, for the seek loop's finiteness check."""
        return self.latents, self.pending.grad
