"""What both commands build from the flags: the ``SeekConfig``, torch's CPU threads, the model
(loaded on the chosen device) and each problem's reward."""

from __future__ import annotations

import os

from ... import __version__
from ...config import ConfigError, SeekConfig
from ..torchrun import cpu_cores
from .checks import CLIError, check_interpreter, default_device


def config_from(args) -> SeekConfig:
    """The ``SeekConfig`` of every field the command line sets (argparse dests are field names);
    a value out of range is named by its option (``--lr 1e+38: expected ...``)."""
    try:
        return SeekConfig(
            **{name: getattr(args, name) for name in SeekConfig.field_names() if hasattr(args, name)}
        )
    except ConfigError as exc:
        option = "--" + exc.field.replace("_", "-")
        raise CLIError(f"{option} {exc.value}: {exc.allowed}") from None


def run_settings(args, config: SeekConfig) -> dict:
    """The settings that change an eval's results, recorded in every row (``settings``) and
    compared on ``--resume``: the ``SeekConfig`` fields, the model as given (``smollm2`` for the
    embedded one, a local path made absolute) and its dtype, the reward flags, the prompt style
    and the package version. Known before the model loads. Threads, device and batch size are
    left out: they change results only where a decision is a near-tie."""
    from ..models import EMBEDDED_NAME, parse_dtype  # imports torch, as in checks.preflight

    model = args.model or EMBEDDED_NAME
    if model != EMBEDDED_NAME and os.path.exists(model):
        model = os.path.abspath(model)
    return {
        **config.to_dict(),
        "model": model,
        "dtype": str(parse_dtype(args.dtype)).removeprefix("torch."),
        "reward": args.reward or "auto",
        "format_rule": args.format_rule,
        "verifier_tokens": args.verifier_tokens,
        "prompt": args.prompt,
        "version": __version__,
    }


def default_cpu_threads(cores: int, load1: float) -> int:
    """CPU threads for decoding when nobody chose: the cores that the 1-minute load average
    leaves free (``cores - round(load1)``), at least 1.

    Decoding is one small forward per token, and torch's OpenMP threads wait for each other at
    every op, so a thread on a core that another process holds slows every token. Measured on
    the embedded SmolLM2 (fp32, 2-core machine, ``bench/bench_threads.py``, table in
    ``bench/results/threads.csv``): with other jobs loading it (1-minute load 5.7-9.8), 2 threads
    were 2.8-22x slower than 1 in every round for a 1 x 1, a 1 x 9 (draft verify) and an 8 x 1
    (batched) forward; idle (load 0.4-0.7), 2 threads took them from 87 / 195 / 213 ms to
    56 / 109 / 118 ms. Chosen once, when the model loads.
    """
    return max(1, min(cores, cores - round(load1)))


def cli_threads(args, device: str) -> int | None:
    """``--threads``, else on a CPU ``default_cpu_threads`` unless ``OMP_NUM_THREADS`` is set (the
    user's choice, or torchrun's, whose ranks ``torchrun.resolve_threads`` has already set); None
    leaves torch's threads as they are."""
    if args.threads:
        return args.threads
    if (
        not str(device).startswith("cpu")
        or os.environ.get("OMP_NUM_THREADS")
        or os.environ.get("LOCAL_WORLD_SIZE", "1") not in ("", "1")
    ):
        return None
    return default_cpu_threads(cpu_cores(), os.getloadavg()[0])


def load_model_for(args):
    """The model and tokenizer of ``--model``/``--dtype`` on the chosen device, torch's threads
    set first; ``--backend triton`` is checked against the LM head's shape before anything is
    decoded."""
    # Heavy (torch, and the modules that import it): imported once a command loads a model.
    import torch

    from ...decoding.model import lm_head_of
    from ..models import load_model

    device = default_device(args)
    threads = cli_threads(args, device)
    if threads:
        torch.set_num_threads(threads)
    try:
        model, tok = load_model(args.model, dtype=args.dtype, device=device)
    except OSError as exc:  # e.g. a Hub name that is not reachable or not a model
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CLIError(f"--model {args.model}: cannot load it ({first})") from None
    if args.backend == "triton":  # the head's shape is known now; nothing is decoded yet
        check_interpreter(args, device, tuple(lm_head_of(model).weight.shape))
    return model, tok


def reward_name(args, problem) -> str:
    """The reward a problem is scored with: ``--reward``, else PSRM when its gold is known, else self."""
    return args.reward or ("psrm" if problem.gold is not None else "self")


def reward_for(args, model, tokenizer, problem):
    """The reward ``--reward``/``--prompt``/``--format-rule`` ask for (``rewards.make_reward``)."""
    from ...rewards import make_reward  # imports torch: only once a model is loaded

    return make_reward(
        args.reward,
        model,
        tokenizer,
        gold=problem.gold,
        dataset=problem.dataset,
        style=args.prompt,
        format_rule=args.format_rule,
        verifier_tokens=args.verifier_tokens,
    )
