"""Numbers that overflow fp32 are caught before they do harm (ops, SeekConfig, the seek loop)."""

import re

import pytest
import torch
from conftest import overflow_updates

from latentseek_fast import SeekConfig, latent_adam_, latent_policy_grad, seek
from latentseek_fast._ext import ext_available
from latentseek_fast._util import LR_MAX, REWARD_MAX, TEMPERATURE_MIN
from latentseek_fast.app.data import Problem

PROMPT = "<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n"
IMPLS = ["torch"] + (["native"] if ext_available() else [])


def _head(n=3, v=20, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randn(v, d, generator=g), torch.randn(v, generator=g)


# ---------------------------------------------------------------- rewards


@pytest.mark.parametrize("reward", [-1e300, 3.5e38, 1e300, -(REWARD_MAX * 1.0001)])
def test_lpg_reward_out_of_range_names_it(reward):
    h, w, _ = _head()
    with pytest.raises(ValueError, match=re.escape(f"reward={reward!r}: expected |reward| <= 1e+06")):
        latent_policy_grad(h, w, reward, backend="torch")


def test_lpg_reward_tensor_out_of_range_names_row():
    h, w, _ = _head()
    r = torch.tensor([0.5, -1e300, 1.0], dtype=torch.float64)
    with pytest.raises(ValueError, match=r"reward=-1e\+300 at row 1"):
        latent_policy_grad(h, w, r, backend="torch")


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("reward", [-1e300, 3.5e38])
def test_adam_reward_out_of_range_names_it(impl, reward):
    x, m, v, d = (torch.zeros(4, 8) for _ in range(4))
    with pytest.raises(ValueError, match=re.escape(f"reward={reward!r}: expected |reward| <= 1e+06")):
        latent_adam_(x, d, reward, m, v, 1, 0.1, impl=impl)
    r = torch.tensor([0.0, 0.0, 3.5e38, 0.0], dtype=torch.float64)
    with pytest.raises(ValueError, match=r"reward=3\.5e\+38 at row 2"):
        latent_adam_(x, d, r, m, v, 1, 0.1, impl=impl)
    assert not x.any() and not m.any() and not v.any()  # nothing was touched


@pytest.mark.parametrize("impl", IMPLS)
def test_limits_keep_fp32_finite(impl):
    """At the extreme allowed reward and temperature, on an exact tie (two tokens with equal
    logits, so pi = 1/2 each and the gradient is as large as it gets, 1/(2T) * |W_1 - W_0|),
    the gradient, Adam's squared moment and the update all stay finite in fp32."""
    h = torch.tensor([[1.0, 0.0]])
    w = torch.tensor([[1.0, 3.0], [1.0, -3.0], [-1.0, 0.0]])  # logits 1, 1, -1
    out = latent_policy_grad(h, w, 1.0, temperature=TEMPERATURE_MIN, backend="torch")
    assert out.tokens.tolist() == [0]
    expected = torch.tensor([[0.0, -3.0 / (2 * TEMPERATURE_MIN) * 2]])  # (pi - onehot) @ W / T
    torch.testing.assert_close(out.grad, expected, rtol=1e-5, atol=0)
    for reward in (REWARD_MAX, -REWARD_MAX):
        x, m, v = h.clone(), torch.zeros_like(h), torch.zeros_like(h)
        latent_adam_(x, out.grad, reward, m, v, 1, 0.03, impl=impl)
        assert torch.isfinite(v).all() and torch.isfinite(x).all() and torch.isfinite(m).all()
        assert float(v.max()) == pytest.approx(1e-3 * (3e4 * REWARD_MAX) ** 2, rel=1e-5)


# ---------------------------------------------------------------- temperature


def test_tiny_temperature_rejected_by_config_and_op():
    with pytest.raises(ValueError, match=r"SeekConfig.temperature=1e-39: expected >= 0\.0001"):
        SeekConfig(temperature=1e-39)
    h, w, _ = _head()
    with pytest.raises(ValueError, match=r"temperature=1e-39: expected a finite number >= 0\.0001"):
        latent_policy_grad(h, w, temperature=1e-39, backend="torch")
    SeekConfig(temperature=TEMPERATURE_MIN)  # the bound itself is allowed


# ---------------------------------------------------------------- non-finite inputs


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("name,where", [("hidden", (1, 4)), ("weight", (7, 2)), ("bias", (11,))])
def test_lpg_non_finite_inputs_raise(name, where, bad):
    h, w, b = _head()
    t = {"hidden": h, "weight": w, "bias": b}[name]
    t[where] = bad
    at = ", ".join(map(str, where))
    with pytest.raises(ValueError, match=rf"{name}\[{at}\]={bad!r}: {name} must be finite"):
        latent_policy_grad(h, w, bias=b, backend="torch")


def test_lpg_weight_checked_again_after_in_place_change():
    h, w, _ = _head()
    latent_policy_grad(h, w, backend="torch")  # checked and remembered as finite
    latent_policy_grad(h, w, backend="torch")
    w[5, 1] = float("nan")  # an in-place write bumps torch's version counter
    with pytest.raises(ValueError, match=r"weight\[5, 1\]=nan"):
        latent_policy_grad(h, w, backend="torch")


# ---------------------------------------------------------------- memory overlap


def _adam_args():
    g = torch.Generator().manual_seed(3)
    return torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)


@pytest.mark.parametrize("impl", IMPLS)
def test_adam_partial_overlap_rejected(impl):
    x, d = _adam_args()
    buf = torch.zeros(48)
    m, v = buf[:32].view(4, 8), buf[8:40].view(4, 8)  # rows 1..3 of m are rows 0..2 of v
    with pytest.raises(ValueError, match="exp_avg_sq shares memory with exp_avg"):
        latent_adam_(x, d, -1.0, m, v, 1, 0.1, impl=impl)
    lat = torch.randn(5, 8)
    with pytest.raises(ValueError, match="direction shares memory with latents"):
        latent_adam_(lat[:4], lat[1:], -1.0, torch.zeros(4, 8), torch.zeros(4, 8), 1, 0.1, impl=impl)
    with pytest.raises(ValueError, match="exp_avg has strides"):
        latent_adam_(x, d, -1.0, torch.zeros(8).expand(4, 8), torch.zeros(4, 8), 1, 0.1, impl=impl)


@pytest.mark.parametrize("impl", IMPLS)
def test_adam_disjoint_views_of_one_buffer_allowed(impl):
    """Views that share a storage but not a byte work, and match separate tensors."""
    x, d = _adam_args()
    buf = torch.zeros(64)
    m, v = buf[:32].view(4, 8), buf[32:].view(4, 8)
    x2, m2, v2 = x.clone(), torch.zeros(4, 8), torch.zeros(4, 8)
    for step in (1, 2):
        latent_adam_(x, d, -1.0, m, v, step, 0.1, impl=impl)
        latent_adam_(x2, d, -1.0, m2, v2, step, 0.1, impl=impl)
    assert torch.equal(x, x2) and torch.equal(m, m2) and torch.equal(v, v2)


# ---------------------------------------------------------------- the seek loop


def _seek(tiny, reward, problem="What is 2+3?", **kw):
    model, tok = tiny
    kw = {"max_new_tokens": 8, "rho": 0.5, "lr": 0.5, "backend": "torch", "max_steps": 2, **kw}
    return seek(model, tok, problem, reward, prompt=PROMPT, **kw)


@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_seek_huge_reward_stops_naming_step_and_problem(tiny, backend):
    p = Problem(id="p7", question="What is 2+3?", gold=None, dataset="gsm8k")
    with pytest.raises(ValueError, match=r"seek step 1 of problem 'p7': reward=-1e\+300"):
        _seek(tiny, lambda q, a: -1e300, problem=p, backend=backend)
    rewards = iter([-1.0, -5e6])
    with pytest.raises(ValueError, match=r"seek step 2 of question 'What is 2\+3\?': reward=-5000000\.0"):
        _seek(tiny, lambda q, a: next(rewards), backend=backend)


@pytest.mark.parametrize("lr", [1e38, 1e39, LR_MAX * 1.0001, 0.0, -0.03])
def test_lr_out_of_range_is_refused_up_front(tiny, lr):
    """lr=1e38 used to fail mid-run with internals (``hidden must be finite`` on torch, an
    overflow converting Adam's step size on reference): SeekConfig names lr and its range."""
    message = re.escape(f"SeekConfig.lr={lr!r}: expected 0 < lr <= {LR_MAX:g} (Adam moves every latent")
    with pytest.raises(ValueError, match=message):
        SeekConfig(lr=lr)
    with pytest.raises(ValueError, match=message):
        _seek(tiny, lambda q, a: -1.0, lr=lr)
    assert SeekConfig(lr=LR_MAX).lr == LR_MAX


@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_seek_non_finite_latents_stop_naming_step_and_lr(tiny, monkeypatch, backend):
    """Latents that overflow in an update stop the seek with an error that names the step, the
    problem and the likely cause, the learning rate (on torch the op's own check on its input,
    ``hidden must be finite``, used to be the message)."""
    overflow_updates(monkeypatch)
    p = Problem(id="p9", question="What is 2+3?", gold=None, dataset="gsm8k")
    with pytest.raises(
        RuntimeError,
        match=r"seek step 1 of problem 'p9': NaN or inf in the latents after the update \(reward -1.0\); "
        r"the learning rate lr=0.5 is the likely cause .* lower lr \(SeekConfig.lr, --lr\)",
    ):
        _seek(tiny, lambda q, a: -1.0, problem=p, backend=backend)


class _Stub:
    """A reference-backend latent state whose values after the step are given."""

    def __init__(self, latents, grad):
        self.latents, self.grad = latents, grad

    def step(self, reward, need_next=True):
        return [0], [1.5]

    def state(self):
        return self.latents, self.grad


def test_step_guard_names_latents_or_gradient(tiny):
    from latentseek_fast.engine.latent import LatentSteps, StepError

    steps = LatentSteps(tiny[0], SeekConfig(backend="reference"), "reference")

    def step(state, reward=-1.0, taken=0):
        try:
            return steps.step([state], [reward], [taken], ["problem 'x'"], [True])
        except StepError as e:
            raise e.error from None

    ok, bad = torch.zeros(2, 3), torch.tensor([[0.0, float("nan"), 0.0], [0.0, 0.0, 0.0]])
    assert step(_Stub(ok, ok)) == [([0], [1.5])]
    assert step(_Stub(ok, None)) == [([0], [1.5])]
    with pytest.raises(RuntimeError, match="seek step 4 of problem 'x': NaN or inf in the latents"):
        step(_Stub(bad, ok), taken=3)
    with pytest.raises(RuntimeError, match="seek step 1 of problem 'x': NaN or inf in the gradient"):
        step(_Stub(ok, bad * float("inf")))
    with pytest.raises(ValueError, match=r"seek step 1 of problem 'x': reward=nan"):
        step(_Stub(ok, ok), reward=float("nan"))
