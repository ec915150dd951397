"""Backend choice up front: ``seek`` and ``seek_many`` refuse a ``triton`` backend that cannot run, or
that would run Triton's interpreter on a large LM head, before decoding anything."""

import pytest
import torch
from conftest import make_tiny_model

import latentseek_fast as lsf
from latentseek_fast.backends import INTERPRET_LARGE_ENV, INTERPRETER_MAX_WEIGHTS, interpreter_refusal

triton = pytest.importorskip("triton")


@pytest.fixture(scope="module")
def wide(tokenizer):
    """A 1-layer random model whose 49152 x 128 head (6.3M weights) is above the interpreter's limit."""
    return make_tiny_model(hidden=128, layers=1), tokenizer


class Forwards:
    """Counts the model's forwards while active."""

    def __init__(self, model):
        self.model, self.n = model, 0

    def __enter__(self):
        self.handle = self.model.model.register_forward_pre_hook(lambda *a: setattr(self, "n", self.n + 1))
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def test_interpreter_refusal_states_the_estimate(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.delenv(INTERPRET_LARGE_ENV, raising=False)
    why = interpreter_refusal("cpu", (49152, 576), 2)
    assert "49152 x 576 LM head (28.3M weights" in why and "per latent step" in why
    assert "for max_steps=2" in why and f"{INTERPRET_LARGE_ENV}=1" in why
    assert 49152 * 64 <= INTERPRETER_MAX_WEIGHTS  # the tests' tiny models still run the kernels
    assert interpreter_refusal("cpu", (49152, 64), 2) is None
    assert interpreter_refusal("cuda", (49152, 576), 2) is None  # compiled kernels, not the interpreter
    monkeypatch.setenv(INTERPRET_LARGE_ENV, "1")
    assert interpreter_refusal("cpu", (49152, 576), 2) is None
    monkeypatch.setenv(INTERPRET_LARGE_ENV, "0")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert interpreter_refusal("cpu", (49152, 576), 2) is None  # not interpreting (cannot run at all)


@pytest.mark.parametrize("run", ["seek", "seek_many"])
def test_interpreter_on_a_large_head_is_refused_before_decoding(wide, monkeypatch, run):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.delenv(INTERPRET_LARGE_ENV, raising=False)
    model, tok = wide
    reward = lambda q, a: -1.0  # noqa: E731
    with Forwards(model) as fwd, pytest.raises(ValueError, match=r"backend='triton' refused: .*128 LM head"):
        if run == "seek":
            lsf.seek(model, tok, "What is 1 + 1?", reward, backend="triton", max_new_tokens=2, max_steps=1)
        else:
            lsf.seek_many(
                model, tok, ["What is 1 + 1?"], reward, backend="triton", max_new_tokens=2, max_steps=1
            )
    assert fwd.n == 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="the tiny model lives on the CPU")
def test_triton_without_interpreter_on_cpu_fails_before_decoding(tiny, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    model, tok = tiny
    with Forwards(model) as fwd, pytest.raises(ValueError, match="backend='triton' cannot run"):
        lsf.seek(model, tok, "What is 1 + 1?", lambda q, a: -1.0, backend="triton", max_new_tokens=2)
    assert fwd.n == 0
