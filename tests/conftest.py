"""Shared fixtures: the embedded model (real, cached conversion) and tiny random models."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

# The triton backend runs under the numpy interpreter on CPU-only machines.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


REPO = Path(__file__).resolve().parents[1]

# Printed first in every run (CI's log included), so a failure after a dependency release names
# what changed: a fresh venv resolves the newest versions each time.
RESOLVED = ("torch", "triton", "transformers", "kernels", "tokenizers", "huggingface-hub", "numpy")


def pytest_sessionstart(session):
    """One line with the resolved versions of the dependencies that move under us."""
    import importlib.metadata as md
    import platform

    def version(name):
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return "absent"

    line = f"python {platform.python_version()}, " + ", ".join(f"{n} {version(n)}" for n in RESOLVED)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"versions: {line}")


def data_file(name: str) -> Path:
    """A file of the evaluation data folder, or a skip that says where it was looked for.

    The folder is ``$LATENTSEEK_DATA`` when set (then a missing file fails), else the first
    ``shared/data`` beside the repo or beside one of its parent folders (in CI the repo and
    ``shared/`` are siblings, so it is ``../shared/data``).
    """
    env = os.environ.get("LATENTSEEK_DATA")
    if env:
        path = Path(env) / name
        assert path.is_file(), f"LATENTSEEK_DATA={env!r} has no {name}"
        return path
    for parent in REPO.parents:
        path = parent / "shared" / "data" / name
        if path.is_file():
            return path
    pytest.skip(f"{name} not found: no shared/data/{name} beside {REPO} or its parents; set LATENTSEEK_DATA")


def write_jsonl(path, rows) -> Path:
    """``rows`` written to ``path`` as JSON lines (a data or results file for a test)."""
    path = Path(path)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def smol():
    """``(model, tokenizer)``: the embedded SmolLM2-135M-Instruct, fp32 (first use converts the GGUF)."""
    from latentseek_fast.app.models import load_model

    torch.manual_seed(0)
    return load_model(None, dtype="float32")


@pytest.fixture(scope="session")
def tokenizer(smol):
    return smol[1]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer):
    """A tiny random Llama and the embedded tokenizer saved as a model directory, for tests
    that run real ``latentseek-fast`` processes (``--model DIR``)."""
    d = tmp_path_factory.mktemp("tiny-model")
    make_tiny_model(hidden=32, layers=1).save_pretrained(d)
    tokenizer.save_pretrained(d)
    return str(d)


def make_tiny_model(
    arch: str = "llama",
    vocab_size: int = 49152,
    hidden: int = 64,
    layers: int = 2,
    seed: int = 0,
    tie: bool = True,
    dtype=torch.float32,
    sliding_window: int | None = None,
    max_positions: int = 4096,
):
    """A random decoder-only model that shares the embedded tokenizer's vocabulary, with a
    context of ``max_positions`` (``config.max_position_embeddings``).

    ``sliding_window``: every layer attends to that many positions only (``arch`` "qwen2", whose
    config lists ``layer_types``, or "mistral", whose config has no ``layer_types``)."""
    from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig, Qwen2Config

    cls = {"llama": LlamaConfig, "qwen2": Qwen2Config, "mistral": MistralConfig}[arch]
    window = {}
    if arch == "qwen2" and sliding_window:
        window = {"use_sliding_window": True, "sliding_window": sliding_window, "max_window_layers": 0}
    elif arch == "mistral":
        window = {"sliding_window": sliding_window}
    elif sliding_window:
        raise ValueError(f"arch={arch!r} has no sliding window")
    cfg = cls(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        tie_word_embeddings=tie,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
        **window,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg).to(dtype)
    model.eval()
    return model


class SmallTokenizer:
    """Characters as ids 3..63 of a 64-token vocabulary, eos = 2: a seek at shapes small enough
    for the Triton interpreter (the embedded tokenizer's 49152 tokens take minutes there)."""

    eos_token, eos_token_id, pad_token_id = "<eos>", 2, 2

    def __len__(self):
        return 64

    def encode(self, text):
        return [3 + ord(c) % 61 for c in text]

    def __call__(self, text, return_tensors=None):
        ids = [self.encode(t) for t in text] if isinstance(text, list) else [self.encode(text)]
        return SimpleNamespace(input_ids=torch.tensor(ids))

    def decode(self, ids):
        ids = [ids] if isinstance(ids, int) else ids
        return "".join("<eos>" if i == 2 else chr(i) for i in ids if i >= 2)

    def batch_decode(self, seqs):
        return [self.decode(s) for s in seqs]


def small_model(max_positions: int = 4096, stops: bool = False):
    """A random model over SmallTokenizer's vocabulary; its greedy answer to "What is 2+3?" (12
    tokens) runs past 100 tokens, or (``stops``) ends with eos after 10 tokens (the eos row of its
    head made longer)."""
    model = make_tiny_model(
        vocab_size=64, hidden=32, layers=1, tie=False, seed=17, max_positions=max_positions
    )
    if stops:
        with torch.no_grad():
            model.lm_head.weight[2] *= 1.3
    return model


@pytest.fixture(scope="session")
def tiny(tokenizer):
    """``(model, tokenizer)``: a 2-layer random Llama over the SmolLM2 vocabulary."""
    return make_tiny_model(), tokenizer


# Smallest top-2 logit gap at which a test compares greedy tokens computed two ways (KV cache vs
# full recompute, batch vs single, backend vs backend). Such logits differ by rounding only
# (~1e-6 for the tiny fp32 models, ~4e-5 for the embedded model between batch and single), by an
# amount that depends on the CPU: a closer decision could flip on another machine.
DECISION_GAP = 1e-3


class DecisionGaps:
    """Records, while active, the top-2 gap of every greedy decision ``model.lm_head`` feeds: the
    last position of a 3-D call (a decode or prefill step), every row of a 1-D or 2-D call.

    ``assert_clear()`` is the precondition of a token-for-token comparison between two ways of
    computing the same thing: no decision of the recorded run was a near-tie.
    """

    def __init__(self, model):
        self.model = model
        self.gaps: list[float] = []

    def _record(self, module, args, out):
        logits = out.detach().float()
        logits = logits[:, -1] if logits.dim() == 3 else logits.reshape(-1, logits.shape[-1])
        top = logits.topk(2, dim=-1).values
        self.gaps.extend((top[:, 0] - top[:, 1]).tolist())

    def __enter__(self):
        self.handle = self.model.lm_head.register_forward_hook(self._record)
        return self

    def __exit__(self, *exc):
        self.handle.remove()

    def assert_clear(self, bound: float = DECISION_GAP):
        assert self.gaps, "no decision was recorded"
        low = min(self.gaps)
        assert low > bound, (
            f"a greedy decision had top-2 gap {low:.3g} <= {bound}: rounding may flip it on another "
            "CPU, so tokens cannot be compared exactly; choose inputs without near-ties"
        )


class AdamGradients:
    """While active, records the gradient of each ``torch.optim.Adam``'s first step (the
    reference stepper's). That step moves each entry by about ``lr * sign(grad)``, so an entry
    within rounding of 0 could move the other way on another backend or CPU. Later steps divide by
    the running root mean square of the entry, which the first step already bounds away from 0."""

    def __init__(self):
        self.grads = []

    def __enter__(self):
        self.step = torch.optim.Adam.step
        recorder = self

        def step(opt, *args, **kw):
            for group in opt.param_groups:
                recorder.grads.extend(p.grad.detach().clone() for p in group["params"] if p not in opt.state)
            return recorder.step(opt, *args, **kw)

        torch.optim.Adam.step = step
        return self

    def __exit__(self, *exc):
        torch.optim.Adam.step = self.step

    def assert_clear(self, rel: float = 1e-4):
        """Every first-step entry is above ``rel`` of the largest: the backends' fp32 gradients
        agree to ~1e-6 of it (test_latent_policy_grad's parity bounds)."""
        assert self.grads, "no Adam step was recorded"
        for g in self.grads:
            low = (g.abs().min() / g.abs().max()).item()
            assert low > rel, f"a gradient entry is {low:.3g} of the largest: its sign is not robust"

    def flip_reach(self, weight: torch.Tensor, lr: float, steps: int, rel: float = 1e-5) -> float:
        """How far flipping the sign of every fragile first-step entry (at most ``rel`` of its
        latent's largest: backends agree to ~1e-6 of it, so larger entries keep their sign) could move
        a re-decoded top-2 gap. Each Adam step moves an entry by about ``lr``, so a flipped entry ``j``
        ends at most ``2 * lr * steps`` away, which moves a logit difference by at most that times
        ``2 * max|weight[:, j]|``; the largest sum over one latent's fragile entries is returned."""
        assert self.grads, "no Adam step was recorded"
        col = 2 * weight.detach().abs().amax(dim=0).double()
        reach = 0.0
        for g in self.grads:
            g = g.reshape(-1, g.shape[-1]).abs().double()
            fragile = g <= rel * g.amax(dim=-1, keepdim=True)
            reach = max(reach, float((2 * lr * steps * fragile.double() @ col).max()))
        return reach


class LatentDecisions:
    """While active, records the top-2 gaps of every ``lm_head`` call over a batch of rows (2-D, or
    ``(rows, 1, vocab)`` as the research code calls it). ``gaps(rows)`` is, per latent position, the
    smallest gap of the calls over exactly ``rows`` rows: the argmaxes over the optimised latents,
    which pick each step's gradient tokens and re-decoded tokens."""

    def __init__(self, model):
        self.model, self.calls = model, []

    def _record(self, module, args, out):
        if out.dim() == 2 or (out.dim() == 3 and out.shape[1] == 1):
            top = out.detach().double().reshape(-1, out.shape[-1]).topk(2, dim=-1).values
            self.calls.append(top[:, 0] - top[:, 1])

    def gaps(self, rows: int) -> list[float]:
        calls = [c for c in self.calls if len(c) == rows]
        assert calls, f"no lm_head call over {rows} latent rows was recorded"
        return torch.stack(calls).amin(dim=0).tolist()

    def __enter__(self):
        self.handle = self.model.lm_head.register_forward_hook(self._record)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


# Top-2 logit gap below which two ways of running the embedded model (fp32) may legitimately pick
# different greedy tokens: their logits differ by rounding only, at most ~4e-5 apart (batch vs single
# rows; KV cache vs full recompute and backend vs backend are closer), an amount that depends on the
# CPU's blocking. 1e-4 is 2.5x that. Measured here (``pytest -s -m slow`` prints each): every
# comparison came out identical; the smallest gap along the compared tokens was 0.022 (drop-in, torch
# backend), 0.11 (seek, backends), 0.14-0.33 (drop-in vs research way), 0.22 (batch vs single); the
# re-decoded latents' smallest gap was 0.025. All are >= 200x the bound.
NEAR_TIE = 1e-4


def top2_gaps(model, ids: list[int]) -> list[float]:
    """The top-2 gap of the model's greedy decision after each prefix ``ids[: i + 1]``: one fp32
    forward over ``ids`` (a full recompute, the oracle the compared runs approximate), gaps in fp64."""
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double()
    top = logits.topk(2, dim=-1).values
    return (top[:, 0] - top[:, 1]).tolist()


def assert_same_or_near_tie(
    model, context_ids, a_ids, b_ids, bound: float = NEAR_TIE, *, redecoded=None, what: str = "tokens"
):
    """Two greedy token sequences after ``context_ids``, computed two ways, are identical, or they
    first differ where the model's top-2 gap is below ``bound`` (a near-tie rounding may flip).

    The gap is the model's own, recomputed from the shared prefix ``context_ids + a_ids[:k]``.
    ``redecoded=(start, gaps, bound)`` says that positions ``start ..`` were decided by re-decoding
    optimised latents, not by a forward over the prefix: a difference there is excused only by that
    measured gap being below that bound. Returns the first differing position (None when identical):
    what follows a legitimately different token may differ too, so the caller stops comparing there.
    Prints the gap(s), so a bound can be re-measured with ``pytest -s``.
    """
    context, a, b = list(context_ids), list(a_ids), list(b_ids)
    start, latent_gaps, latent_bound = redecoded if redecoded is not None else (0, [], 0.0)
    free = range(start, start + len(latent_gaps))
    if a == b:
        gaps = top2_gaps(model, context + a)[len(context) - 1 : -1]
        own = [g for i, g in enumerate(gaps) if i not in free]
        low = min(own, default=float("inf"))
        print(f"{what}: identical, {len(a)} tokens, smallest top-2 gap {low:.3g}", end="")
        print(f", re-decoded {min(latent_gaps):.3g} (bound {latent_bound:.3g})" if latent_gaps else "")
        return None
    k = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    if k in free:
        gap, limit = latent_gaps[k - start], latent_bound
    else:
        gap, limit = top2_gaps(model, context + a[:k])[-1], bound
    print(f"{what}: first differ at {k} ({a[k : k + 1]} vs {b[k : k + 1]}), top-2 gap {gap:.3g}")
    assert gap < limit, (
        f"{what} differ at position {k} ({a[k : k + 1]} vs {b[k : k + 1]}) where the top-2 gap is "
        f"{gap:.3g} >= {limit:.3g}: not a near-tie, a real disagreement"
    )
    return k


def overflow_updates(monkeypatch):
    """Make every latent update overflow (what too large an lr does to fp16 latents, say): the
    fused path's ``latent_adam_`` and ``torch.optim.Adam.step`` (the reference stepper's) fill
    the latents with inf after their own update."""
    from latentseek_fast.engine import latent

    real_adam = latent.latent_adam_

    def adam(latents, *args, **kwargs):
        real_adam(latents, *args, **kwargs)
        latents.fill_(float("inf"))
        if kwargs.get("master") is not None:
            kwargs["master"].fill_(float("inf"))

    real_step = torch.optim.Adam.step

    def step(self, *args, **kwargs):
        out = real_step(self, *args, **kwargs)
        with torch.no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    p.fill_(float("inf"))
        return out

    monkeypatch.setattr(latent, "latent_adam_", adam)
    monkeypatch.setattr(torch.optim.Adam, "step", step)
