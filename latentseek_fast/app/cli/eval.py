"""``latentseek-fast eval``: seek over a data-set file, one results row per problem, resumable,
sharded under torchrun."""

from __future__ import annotations

import json
import os

from ..data import load_problems
from ..results import ResultsError, eval_row, format_summary, problem_fingerprint, read_results, summarize
from ..torchrun import sharded_results
from .checks import (
    CLIError,
    Interrupted,
    check_backend,
    check_eval_flags,
    check_gold,
    check_rows_match_files,
    preflight,
    select_rows,
)
from .load import config_from, load_model_for, reward_for, reward_name, run_settings
from .progress import EvalProgress

# How data-loading errors name the options when eval loads --data (data.OPTION_NAMES).
DATA_FLAGS = {
    "dataset": "--dataset",
    "question_field": "--question-field",
    "answer_field": "--answer-field",
    "split": "--split",
}


def interrupted_line(path: str) -> str:
    """``eval``'s line after Ctrl-C: how many rows ``path`` holds and how to finish."""
    if not os.path.exists(path):
        return f"no rows were written (no {path} is left behind); run the same command again"
    try:
        n = len(read_results(path))
    except (ResultsError, OSError):
        return f"rows are in {path}; run the same command with --resume to finish"
    return f"{n} row{'' if n == 1 else 's'} written to {path}; run the same command with --resume to finish"


def cmd_eval(args) -> int:
    """Seek every selected problem; rows are written as problems finish (in any order).

    ``--batch-size`` seeks run in flight on ``iter_seek`` (continuous batching); ``--batch-size 1``
    runs ``seek``, one problem at a time. Both draft as ``--draft-tokens`` says and write the
    same rows. Under torchrun each rank runs its shard of the problems into its own file and
    rank 0 merges them (``torchrun.sharded_results``). Rows carry their problem's fingerprint
    and the run's settings; a resume checks both against the rows already written, before the
    model loads. Ctrl-C ends with one line saying how many
    rows the file holds (``Interrupted``).
    """
    check_eval_flags(args)
    problems = load_problems(
        args.data,
        dataset=args.dataset,
        question_field=args.question_field,
        answer_field=args.answer_field,
        split=args.split,
        option_names=DATA_FLAGS,
    )
    selected = select_rows(args, problems)
    check_gold(args, problems, selected)
    if args.resume:
        check_rows_match_files(args.out, problems)
    preflight(args)
    config = config_from(args)
    settings = run_settings(args, config)
    check_backend(args)
    run = None
    try:
        with sharded_results(
            args.out,
            selected,
            resume=args.resume,
            device=args.device,
            threads=args.threads,
            fingerprints=[problem_fingerprint(p.question, p.gold) for p in problems],
            settings=settings,
            allow_mixed_settings=args.allow_mixed_settings,
        ) as run:
            if run.todo:
                args.device = run.device
                model, tok = load_model_for(args)
                batch = [problems[i] for i in run.todo]
                eval_problems(args, config, settings, model, tok, batch, run)
    except KeyboardInterrupt:
        raise Interrupted(interrupted_line(run.path if run is not None else args.out)) from None
    if run.env.is_main:
        summary = summarize(run.rows, selected)
        print(format_summary(summary))
        chosen = set(selected)
        no_gold = len({r["index"] for r in run.rows if r["index"] in chosen and r.get("gold") is None})
        if no_gold:
            summary["no_gold"] = no_gold
            print(
                f"{no_gold} of {summary['problems']} problems had no gold answer: scored with "
                "self-reward, and counted as wrong in both accuracies"
            )
        if args.json:
            print(json.dumps(summary))
    return 0


def eval_problems(args, config, settings, model, tok, batch, run) -> None:
    """Seek ``batch`` (this rank's problems, ``run.todo`` order) and append each row as it ends."""
    # The seek's modules import torch: imported once a model is loaded, not when flags are checked.
    from ...engine import iter_seek
    from ...engine.context import check_prompt_fits, context_limit
    from ...engine.sequential import seek
    from ...prompts import build_prompt

    context = context_limit(model)
    for j, p in enumerate(batch):  # every prompt must fit the model's context, before any decoding
        ids = tok(build_prompt(tok, p.question, dataset=p.dataset, style=args.prompt)).input_ids
        try:
            check_prompt_fits(len(ids), context, f"problem {run.todo[j]} (id {p.id!r})")
        except ValueError as exc:
            raise CLIError(str(exc)) from None
    rewards = [reward_for(args, model, tok, p) for p in batch]
    progress = EvalProgress(len(batch), enabled=run.env.is_main)
    common = dict(style=args.prompt, format_rule=args.format_rule, on_event=progress)
    if args.batch_size == 1:
        stream = ((j, seek(model, tok, p, rewards[j], config, **common)) for j, p in enumerate(batch))
    else:
        stream = iter_seek(model, tok, batch, rewards, config, batch_size=args.batch_size, **common)
    try:
        for j, res in stream:
            reward = reward_name(args, batch[j])
            row = eval_row(run.todo[j], batch[j], res, style=args.prompt, reward=reward, settings=settings)
            run.append(row)
            progress.finished(row)
    finally:
        progress.close()
