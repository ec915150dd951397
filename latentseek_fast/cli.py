"""``latentseek-fast``: ``run`` one problem, or ``eval`` a data set with resumable JSONL output."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

from .config import BACKENDS, LATENT_DTYPES, MODES, SeekConfig


class CLIError(Exception):
    """A user error reported as one line and exit status 2."""


def _add_seek_args(p: argparse.ArgumentParser) -> None:
    d = SeekConfig()
    g = p.add_argument_group("model")
    g.add_argument(
        "--model",
        default=None,
        help="'smollm2' (default: the embedded GGUF), a .gguf file, or an HF model directory/name",
    )
    g.add_argument("--dtype", default="float32", help="model dtype: float32, bfloat16, float16")
    g.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads")
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
    g = p.add_argument_group("task")
    g.add_argument(
        "--reward",
        choices=("psrm", "self"),
        default=None,
        help="default: psrm when a ground truth is known, else self",
    )
    g.add_argument("--format-rule", action="store_true", help="self-reward: require \\boxed{} (-2)")
    g.add_argument("--prompt", choices=("boxed", "json"), default="boxed", help="solver prompt style")
    g.add_argument("--dataset", default=None, help="gsm8k, math500 or aime (default: detected)")


def _config(args) -> SeekConfig:
    return SeekConfig(
        lr=args.lr,
        rho=args.rho,
        max_steps=args.max_steps,
        reward_threshold=args.reward_threshold,
        max_new_tokens=args.max_new_tokens,
        grad_clip=args.grad_clip,
        start_index=args.start_index,
        backend=args.backend,
        latent_dtype=args.latent_dtype,
        mode=args.mode,
        temperature=args.temperature,
        seed=args.seed,
        draft_tokens=args.draft_tokens,
    )


def _load(args):
    import torch

    from .models import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return load_model(args.model, dtype=args.dtype, device=device)


def _reward(args, model, tokenizer, problem):
    from .rewards import PSRM, SelfReward

    kind = args.reward or ("psrm" if problem.gold is not None else "self")
    if kind == "psrm":
        if problem.gold is None:
            raise CLIError("--reward psrm needs a ground truth (--gold, or a data set with answers)")
        return PSRM(problem.gold, dataset=problem.dataset, style=args.prompt)
    return SelfReward(model, tokenizer, format_rule=args.format_rule)


def _judge(problem, text, style):
    from .answers import extract_answer, is_correct

    pred = extract_answer(text, problem.dataset, style)
    return pred, (problem.gold is not None and is_correct(pred, problem.gold, problem.dataset))


def cmd_run(args) -> int:
    from .data import Problem
    from .demo import demo_problems
    from .loop import seek

    if args.problem is not None:
        problem = Problem(
            id="cli", question=args.problem, gold=args.gold, dataset=args.dataset or "gsm8k", meta={}
        )
    else:
        demos = demo_problems()
        if not 0 <= args.demo < len(demos):
            raise CLIError(f"--demo {args.demo}: allowed 0..{len(demos) - 1}")
        problem = demos[args.demo]
    config = _config(args)
    model, tok = _load(args)
    reward = _reward(args, model, tok, problem)
    res = seek(model, tok, problem, reward, config, dataset=problem.dataset, style=args.prompt)
    orig_pred, orig_ok = _judge(problem, res.original_answer, args.prompt)
    pred, ok = _judge(problem, res.answer, args.prompt)
    if args.json:
        out = res.to_dict() | {
            "question": problem.question,
            "gold": problem.gold,
            "original_pred": orig_pred,
            "pred": pred,
            "original_correct": orig_ok,
            "correct": ok,
        }
        print(json.dumps(out, indent=2))
        return 0
    print(f"Question: {problem.question}")
    if problem.gold is not None:
        print(f"Ground truth: {problem.gold}")
    print(f"\n--- original answer (reward {res.rewards[0]:+.3f}, {res.original_length} tokens) ---")
    print(res.original_answer)
    for i, r in enumerate(res.rewards[1:], 1):
        print(f"iteration {i}: reward {r:+.3f}")
    print(
        f"\n--- final answer after {res.iterations} iteration(s), stop: {res.stopped}, "
        f"L={res.update_length}, backend={res.backend} ---"
    )
    print(res.answer)
    if problem.gold is not None:
        print(
            f"\noriginal: {orig_pred!r} ({'correct' if orig_ok else 'wrong'})  "
            f"final: {pred!r} ({'correct' if ok else 'wrong'})"
        )
    print("time: " + ", ".join(f"{k} {v:.2f}s" for k, v in res.timings.items()))
    return 0


def read_rows(path: str) -> list[dict]:
    """The complete rows of a results file; a torn last line (a killed write) is dropped."""
    rows = []
    if not os.path.exists(path):
        return rows
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                break
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return rows


def _rewrite(path: str, rows: list[dict]) -> None:
    """Atomically replace ``path`` with exactly ``rows`` (drops a torn tail before appending)."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def summarize(rows: list[dict]) -> dict:
    n = len(rows)
    if n == 0:
        return {"problems": 0}
    mean = lambda k: sum(r[k] for r in rows) / n
    return {
        "problems": n,
        "original_accuracy": mean("original_correct"),
        "optimized_accuracy": mean("correct"),
        "mean_iterations": mean("iterations"),
        "mean_original_length": mean("original_length"),
        "mean_optimized_length": mean("final_length"),
    }


def format_summary(s: dict) -> str:
    if s["problems"] == 0:
        return "no problems evaluated"
    return (
        "| problems | original acc | optimised acc | mean iterations | mean original len "
        "| mean optimised len |\n"
        "|---|---|---|---|---|---|\n"
        f"| {s['problems']} | {100 * s['original_accuracy']:.1f} | {100 * s['optimized_accuracy']:.1f} | "
        f"{s['mean_iterations']:.2f} | {s['mean_original_length']:.1f} | {s['mean_optimized_length']:.1f} |"
    )


def cmd_eval(args) -> int:
    from tqdm import tqdm

    from .data import load_problems
    from .loop import seek

    problems = load_problems(args.data, dataset=args.dataset)
    if args.start < 0 or (args.limit is not None and args.limit < 0):
        raise CLIError(f"--start {args.start} / --limit {args.limit}: expected >= 0")
    stop = len(problems) if args.limit is None else min(len(problems), args.start + args.limit)
    todo = list(range(args.start, stop))
    if os.path.exists(args.out) and not args.resume:
        raise CLIError(f"{args.out} exists: pass --resume to continue it, or choose another --out")
    rows = read_rows(args.out) if args.resume else []
    if args.resume:
        _rewrite(args.out, rows)
    done = {r["index"] for r in rows}
    todo = [i for i in todo if i not in done]
    config = _config(args)
    model, tok = _load(args) if todo else (None, None)
    with open(args.out, "a", encoding="utf-8") as f:
        for i in tqdm(todo, desc="latentseek", unit="problem"):
            p = problems[i]
            reward = _reward(args, model, tok, p)
            t0 = time.perf_counter()
            res = seek(model, tok, p, reward, config, dataset=p.dataset, style=args.prompt)
            orig_pred, orig_ok = _judge(p, res.original_answer, args.prompt)
            pred, ok = _judge(p, res.answer, args.prompt)
            row = {
                "index": i,
                "id": p.id,
                "question": p.question,
                "gold": p.gold,
                "original_answer": res.original_answer,
                "answer": res.answer,
                "original_pred": orig_pred,
                "pred": pred,
                "original_correct": orig_ok,
                "correct": ok,
                "rewards": res.rewards,
                "iterations": res.iterations,
                "stopped": res.stopped,
                "original_length": res.original_length,
                "final_length": res.final_length,
                "update_length": res.update_length,
                "backend": res.backend,
                "timings": res.timings,
                "seconds": time.perf_counter() - t0,
            }
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
            rows.append(row)
    selected = set(range(args.start, stop))
    summary = summarize([r for r in rows if r["index"] in selected])
    print(format_summary(summary))
    if args.json:
        print(json.dumps(summary))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="latentseek-fast", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="log which fast paths are used and why")
    sub = p.add_subparsers(dest="command")
    r = sub.add_parser("run", help="seek on one problem (default: demo problem 1)")
    r.add_argument("--problem", default=None, help="question text (default: a demo problem)")
    r.add_argument("--gold", default=None, help="ground-truth answer of --problem (enables PSRM)")
    r.add_argument(
        "--demo", type=int, default=1, help="index of the demo problem (default 1: greedy gets it wrong)"
    )
    r.add_argument("--json", action="store_true", help="machine-readable output")
    _add_seek_args(r)
    e = sub.add_parser("eval", help="seek over a data-set file, one JSONL row per problem")
    e.add_argument("--data", required=True, help="JSONL/JSON/Parquet file or datasets.save_to_disk folder")
    e.add_argument("--start", type=int, default=0)
    e.add_argument("--limit", type=int, default=None)
    e.add_argument("--out", default="results.jsonl")
    e.add_argument("--resume", action="store_true", help="continue --out, skipping problems already in it")
    e.add_argument("--json", action="store_true", help="also print the summary as JSON")
    _add_seek_args(e)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    if args.command is None:  # bare `latentseek-fast [-v]` runs the default demo
        args = build_parser().parse_args([*argv, "run"])
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return cmd_run(args) if args.command == "run" else cmd_eval(args)
    except (CLIError, ValueError, RuntimeError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
