"""The latent step, written once for both drivers: state per problem, one call for many.

Each problem's L latents get a handle from ``LatentSteps.open``; ``LatentSteps.step`` takes one
Adam step on every due problem's latents with gradient ``reward * grad log softmax(W z)[x]`` and
returns each one's re-decoded tokens ``argmax(W z')`` with the top-2 logit gap of each of those
greedy decisions (soft-capped logits, before the temperature: the near-tie audit's input),
behind the seek's numeric guard.

- ``reference`` backend: ``ReferenceStepper`` per problem, autograd through the full ``[L, V]``
  logits and ``torch.optim.Adam``, the research code's way (its ``1e-8``/``1e-10`` epsilons
  included). With ``latent_dtype="model"`` the parameter is kept in the model dtype, reproducing
  the research code exactly; otherwise an fp32 master is optimised and cast to the model dtype
  for the head. It is the oracle, so it loops over problems. The gaps come from the same full
  logits the re-decode's argmax reads.
- ``torch``/``triton``: ``FusedLatents`` per problem (latents, fp32 master when the model dtype
  is not fp32, Adam moments, step count, the pending gradient direction) and ``FusedBatch`` for
  all of them. ``latent_policy_grad`` at the updated latents yields the re-decoded tokens *and*
  the next step's direction in one pass (before the reward is known; the gradient is linear in
  it), and ``latent_adam_`` forms ``reward * direction`` inside the update. The gaps are the
  op's ``gap``, computed in the same pass as the argmax.
  - Adam: rows are grouped by their Adam step count (bias correction ``1 - beta**step`` is one
    scalar per ``latent_adam_`` call) and each group is ONE call with a per-row reward tensor.
    Problems that started together share a step count, so there is usually one group; exactness
    is kept instead of folding per-row corrections into the reward, which would change the
    rounding of every update. With ``grad_clip`` each problem is its own group, since the clip
    norm is the norm of that problem's whole gradient.
  - Re-decode plus the next direction: ONE ``latent_policy_grad`` call over all rows (greedy
    mode). In ``sample`` mode the Gumbel noise is keyed on (seed + step, row within the call),
    so each problem gets its own call, keeping its tokens those of a problem alone.
  Every operation is row-wise, so a problem's numbers do not depend on which others share the
  call (up to the BLAS blocking of the LM-head matmul, ~1 ulp).

The guard (cost per step: one ``isfinite`` pass over the L x d latents and gradient and one
device sync for all problems, next to the step's own pass over the V x d head): a reward that is
not finite or exceeds ``REWARD_MAX`` in size, and NaN/inf latents or gradient after the update,
stop the problem with an error naming the step and the problem (``StepError``).
"""

from __future__ import annotations

import contextlib
import math

import torch

from .._util import REWARD_MAX
from ..config import SeekConfig
from ..decoding.model import lm_head_of, softcap_of
from ..ops.latent_adam import latent_adam_
from ..ops.latent_policy_grad import latent_policy_grad
from ..ops.lpg_reference import top2_gap


class StepError(Exception):
    """A latent step failed for the problem at ``position`` of the call; ``error`` is the
    exception to report (its message names the step and the problem), of the original type."""

    def __init__(self, position: int, error: BaseException):
        super().__init__(str(error))
        self.position = position
        self.error = error


def step_where(step: int, label: str) -> str:
    """How the guard names a step: ``seek step {step + 1} of {label}``."""
    return f"seek step {step + 1} of {label}"


def check_step_reward(reward: float, where: str) -> None:
    """The guard before a latent step: a reward that is not finite or has ``|reward| >
    REWARD_MAX`` (it would overflow the fp32 gradient) raises ``ValueError`` naming ``where``."""
    if not (math.isfinite(reward) and abs(reward) <= REWARD_MAX):
        raise ValueError(
            f"{where}: reward={reward!r}: expected a finite number with |reward| <= {REWARD_MAX:g} "
            "(larger rewards overflow the fp32 gradient)"
        )


def finite_flags(latents: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
    """``[latents finite, gradient finite]`` (one entry without a gradient) as a bool tensor on the
    latents' device, so that a guard over many problems reads all flags in one sync."""
    finite = [torch.isfinite(latents).all()] + ([] if grad is None else [torch.isfinite(grad).all()])
    return torch.stack(finite)


def check_finite(ok: list[bool], reward: float, where: str, lr: float | None = None) -> None:
    """The guard after a latent step, from ``finite_flags(...).tolist()``: NaN/inf in the latents
    or the gradient raises ``overflow_error``'s RuntimeError."""
    if not all(ok):
        raise overflow_error(where, "latents" if not ok[0] else "gradient", reward, lr)


def overflow_error(where: str, what: str, reward: float, lr: float | None) -> RuntimeError:
    """The error of a latent step that left NaN/inf in the ``what`` (latents or gradient): it names
    ``where``, the reward and the likely cause, the learning rate ``lr`` (Adam moves every latent
    element by about lr per step)."""
    rate = "the learning rate" if lr is None else f"the learning rate lr={lr!r}"
    return RuntimeError(
        f"{where}: NaN or inf in the {what} after the update (reward {reward!r}); {rate} is the likely "
        "cause (Adam moves every latent element by about lr per step, so lr * steps must stay well "
        "inside the model dtype's range): lower lr (SeekConfig.lr, --lr), or check the model's "
        "hidden states"
    )


@contextlib.contextmanager
def _autograd_on():
    """Autograd on, whatever the caller's ``torch.no_grad()``/``torch.inference_mode()``: the
    reference step differentiates through the LM head (users wrap generation in those by habit)."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


def _plain(exc: BaseException) -> bool:
    """Errors the guard re-labels; subclasses (out of memory, ...) keep their type and message."""
    return type(exc) in (ValueError, RuntimeError)


class ReferenceStepper:
    """One problem's latents under autograd through full logits + ``torch.optim.Adam`` (see the
    module docstring); the oracle of the fused backends."""

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

    def step(self, reward: float, need_next: bool = True) -> tuple[list[int], list[float]]:
        """One Adam step; the re-decoded tokens ``argmax(W z')`` and their top-2 logit gaps (of the
        argmax's logits, soft-capped when the stepper soft-caps; 0 on an exact tie)."""
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
            logits = self.head(z)
            tokens = torch.argmax(logits, dim=-1).tolist()
            return tokens, top2_gap(logits, self.softcap).tolist()

    def state(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(latents, last gradient)``, for the seek loop's per-step finiteness check."""
        return self.param.detach(), self.param.grad


class FusedLatents:
    """One problem's latent state for the fused backends."""

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
    """The LM head and options shared by every problem of a run (fused backends)."""

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

    def _evaluate(self, states: list[FusedLatents], need_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Evaluate every state at its current latents; set ``grad`` (when asked); return the argmaxes
        and their gaps, all states' rows concatenated."""
        if self.config.mode == "sample" or len(states) == 1:
            outs = [self._lpg(s.latents, s.steps, need_grad) for s in states]
            grads = [o.grad for o in outs]
            argmax, gap = torch.cat([o.argmax for o in outs]), torch.cat([o.gap for o in outs])
        else:
            out = self._lpg(torch.cat([s.latents for s in states]), states[0].steps, need_grad)
            sizes = [s.rows for s in states]
            argmax, gap = out.argmax, out.gap
            grads = list(out.grad.split(sizes)) if need_grad else [None] * len(states)
        for s, g in zip(states, grads):
            s.grad = g
        return argmax, gap

    def init(self, states: list[FusedLatents]) -> None:
        """The first gradient direction of fresh states (at the original latents)."""
        if states:
            self._evaluate(states, need_grad=True)

    def step(
        self, states: list[FusedLatents], rewards: list[float], need_next: list[bool]
    ) -> list[tuple[list[int], list[float]]]:
        """One Adam step per state with gradient ``reward * direction``, then per state the
        re-decoded tokens (argmax at the updated latents) with their top-2 logit gaps and, where
        ``need_next``, the next direction."""
        groups: dict[object, list[int]] = {}
        for i, s in enumerate(states):
            s.steps += 1
            key = i if self.config.grad_clip else s.steps
            groups.setdefault(key, []).append(i)
        for members in groups.values():
            self._adam([states[i] for i in members], [rewards[i] for i in members])
        argmax, gap = self._evaluate(states, need_grad=any(need_next))
        flat, gaps = argmax.tolist(), gap.tolist()
        out, o = [], 0
        for s in states:
            out.append((flat[o : o + s.rows], gaps[o : o + s.rows]))
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


class LatentSteps:
    """The latent step of one run (a model head, a ``SeekConfig``, a concrete backend)."""

    def __init__(self, model, config: SeekConfig, backend: str):
        self.head = lm_head_of(model)
        self.config = config
        self.backend = backend
        self.softcap = softcap_of(model)
        self.fused = None if backend == "reference" else FusedBatch(self.head, config, backend, self.softcap)

    def open(self, latents: torch.Tensor):
        """The state of one problem's latents ``[L, d]`` (copied; the input is not modified)."""
        if self.fused is None:
            return ReferenceStepper(self.head, latents, self.config, softcap=self.softcap)
        return FusedLatents(latents, self.fused.weight)

    @staticmethod
    def latents_of(state) -> torch.Tensor:
        return state.latents if isinstance(state, FusedLatents) else state.param.detach()

    def step(
        self,
        states: list,
        rewards: list[float],
        steps: list[int],
        labels: list[str],
        need_next: list[bool],
    ) -> list[tuple[list[int], list[float]]]:
        """One guarded step of every state (``steps[i]`` steps taken so far, ``labels[i]`` names
        its problem); returns each one's ``(re-decoded tokens, their top-2 logit gaps)``, the gaps
        aligned with the tokens (0 on an exact tie). Raises ``StepError``."""
        wheres = [step_where(s, label) for s, label in zip(steps, labels)]
        lr = self.config.lr
        for i, (r, where) in enumerate(zip(rewards, wheres)):
            try:
                check_step_reward(r, where)
            except ValueError as e:
                raise StepError(i, e) from None
        if self.fused is None:
            out, flags = [], []
            for i, (st, r, nxt) in enumerate(zip(states, rewards, need_next)):
                try:
                    out.append(st.step(r, need_next=nxt))
                except (ValueError, RuntimeError) as exc:  # e.g. the op's checks on inf latents
                    if not _plain(exc):
                        raise
                    if not bool(torch.isfinite(self.latents_of(st)).all()):  # the update overflowed
                        raise StepError(i, overflow_error(wheres[i], "latents", r, lr)) from exc
                    raise StepError(i, type(exc)(f"{wheres[i]}: {exc}")) from exc
                flags.append(finite_flags(*st.state()))
        else:
            self.fused.init([s for s in states if s.grad is None])
            try:
                out = self.fused.step(states, rewards, need_next)
            except (ValueError, RuntimeError) as exc:
                if not _plain(exc):
                    raise
                self._blame(states, wheres, rewards, exc)
                raise
            flags = [finite_flags(s.latents, s.grad) for s in states]
        ok = torch.cat(flags).tolist()  # one sync for every problem's guard
        o = 0
        for i, (f, r) in enumerate(zip(flags, rewards)):
            try:
                check_finite(ok[o : o + len(f)], r, wheres[i], lr)
            except RuntimeError as e:
                raise StepError(i, e) from None
            o += len(f)
        return out

    def _blame(self, states: list, wheres: list[str], rewards: list[float], exc: BaseException) -> None:
        """A batched step raised: name the problem whose latents are no longer finite (its update
        overflowed: ``overflow_error``), or the only one stepping, and its step."""
        flags = torch.stack([torch.isfinite(s.latents).all() for s in states]).tolist()
        bad = [i for i, ok in enumerate(flags) if not ok] or ([0] if len(states) == 1 else [])
        if bad:
            i = bad[0]
            if not flags[i]:
                raise StepError(i, overflow_error(wheres[i], "latents", rewards[i], self.config.lr)) from exc
            raise StepError(i, type(exc)(f"{wheres[i]}: {exc}")) from exc
