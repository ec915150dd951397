"""The command line's flags: ``run``, ``eval`` and ``report``, with the seek's flags shared."""

from __future__ import annotations

import argparse

from ...backends import BACKENDS, MODES
from ...config import DRAFT_POLICIES, LATENT_DTYPES, REWARD_NAMES, SeekConfig

DESCRIPTION = "``latentseek-fast``: ``run`` one problem, or ``eval`` a data set with resumable JSONL output."


def batch_size_arg(text: str) -> int | str:
    """``--batch-size``: an integer, or the text as given (``auto``; anything else is refused in
    one line by ``checks.check_eval_flags``)."""
    try:
        return int(text)
    except ValueError:
        return text


def add_seek_args(p: argparse.ArgumentParser) -> None:
    """The model, seek and task flags that ``run`` and ``eval`` share; their dests are
    ``SeekConfig`` field names, their defaults its defaults."""
    d = SeekConfig()
    g = p.add_argument_group("model")
    g.add_argument(
        "--model",
        default=None,
        help="'smollm2' (default: the embedded GGUF), a .gguf file, or an HF model directory/name",
    )
    g.add_argument("--dtype", default="float32", help="model dtype: float32, bfloat16, float16")
    g.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    g.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default on a CPU: the cores the load average leaves free, at least 1)",
    )
    g = p.add_argument_group("seek")
    g.add_argument("--lr", type=float, default=d.lr)
    g.add_argument("--rho", type=float, default=d.rho, help="fraction of the answer latents optimised (k)")
    g.add_argument("--max-steps", type=int, default=d.max_steps)
    g.add_argument("--reward-threshold", type=float, default=d.reward_threshold)
    g.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens)
    g.add_argument("--grad-clip", type=float, default=d.grad_clip)
    g.add_argument("--start-index", type=int, default=d.start_index)
    g.add_argument("--backend", choices=BACKENDS, default=d.backend)
    g.add_argument("--latent-dtype", choices=LATENT_DTYPES, default=d.latent_dtype)
    g.add_argument("--mode", choices=MODES, default=d.mode)
    g.add_argument("--temperature", type=float, default=d.temperature)
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument(
        "--draft-tokens",
        type=int,
        default=d.draft_tokens,
        help="tokens drafted from the prompt and earlier answers per forward, verified greedily "
        "(same answer, fewer forwards); 0: off",
    )
    g.add_argument(
        "--draft-policy",
        choices=DRAFT_POLICIES,
        default=d.draft_policy,
        help="full: feed every draft; cost: only as many as a cost model of the forward says pay off",
    )
    g.add_argument(
        "--tie-gap",
        type=float,
        default=d.tie_gap,
        help="near-tie audit: decisions whose top-2 logit gap is below this are flagged "
        "(default: measured per dtype, fp32 5e-4, bf16 5)",
    )
    g = p.add_argument_group("task")
    g.add_argument(
        "--reward",
        choices=REWARD_NAMES,
        default=None,
        help="default: psrm when a ground truth is known, else self",
    )
    g.add_argument("--format-rule", action="store_true", help="self-reward: require \\boxed{} (-2)")
    g.add_argument(
        "--verifier-tokens",
        type=int,
        default=None,
        help="self-reward: new-token cap of each verifier reply (default 4096, the paper's)",
    )
    g.add_argument("--prompt", choices=("boxed", "json"), default="boxed", help="solver prompt style")
    g.add_argument("--dataset", default=None, help="gsm8k, math500 or aime (default: detected)")


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``latentseek-fast [-v] {run,eval,report} ...``."""
    p = argparse.ArgumentParser(prog="latentseek-fast", description=DESCRIPTION)
    p.add_argument("-v", "--verbose", action="store_true", help="log which fast paths are used and why")
    sub = p.add_subparsers(dest="command")
    r = sub.add_parser("run", help="seek on one problem (default: demo problem 1)")
    r.add_argument("--problem", default=None, help="question text (default: a demo problem)")
    r.add_argument("--gold", default=None, help="ground-truth answer of --problem (enables PSRM)")
    r.add_argument(
        "--demo", type=int, default=1, help="index of the demo problem (default 1: greedy gets it wrong)"
    )
    r.add_argument("--json", action="store_true", help="machine-readable output")
    add_seek_args(r)
    e = sub.add_parser("eval", help="seek over a data-set file, one JSONL row per problem")
    e.add_argument("--data", required=True, help="JSONL/JSON/Parquet file or datasets.save_to_disk folder")
    e.add_argument(
        "--question-field", default=None, help="the rows' question field (default: the data set's own)"
    )
    e.add_argument(
        "--answer-field", default=None, help="the rows' gold-answer field (default: the data set's own)"
    )
    e.add_argument(
        "--split", default=None, help="the split of a DatasetDict folder (default: test, or its only split)"
    )
    e.add_argument("--start", type=int, default=0, help="index of the first problem (default 0)")
    e.add_argument("--limit", type=int, default=None, help="at most this many problems (default: all)")
    e.add_argument("--out", default="results.jsonl")
    e.add_argument("--resume", action="store_true", help="continue --out, skipping problems already in it")
    e.add_argument(
        "--allow-mixed-settings",
        action="store_true",
        help="--resume: add rows with settings other than the file's (report shows each group apart)",
    )
    e.add_argument("--json", action="store_true", help="also print the summary as JSON")
    e.add_argument(
        "--batch-size",
        type=batch_size_arg,
        default="auto",
        help="seeks in flight (continuous batching, one forward for all decoding rows); "
        "auto (default): as many as memory allows, at most 64 decoder rows on a CPU; "
        "1: one problem at a time",
    )
    add_seek_args(e)
    rp = sub.add_parser(
        "report", help="the paper's table and test-time-scaling/reward plots of a results file"
    )
    rp.add_argument("results", help="a results JSONL file written by eval")
    rp.add_argument(
        "--out", default="report.png", help="PNG path stem: writes <stem>_scaling.png and <stem>_rewards.png"
    )
    rp.add_argument("--compare", default=None, help="a second results file, drawn beside the first")
    return p
