"""``latentseek-fast run``: seek on one problem (``--problem``, or a demo problem) and show it."""

from __future__ import annotations

import json

from ...audit import fragile
from ..data import Problem
from ..demo import demo_problems
from ..extract import extract_answer
from ..judge import judge_reply
from .checks import CLIError, check_backend, preflight
from .load import config_from, load_model_for, reward_for, reward_name
from .progress import RunProgress


def run_problem(args):
    """``run``'s problem: ``--problem`` (with ``--gold``), else demo problem ``--demo``.

    ``--gold`` belongs to ``--problem``: with a demo problem it is an error, not ignored (the
    demo keeps its own ground truth). ``--reward psrm`` needs a gold answer. All before loading.
    """
    if args.gold is not None and not args.gold.strip():
        raise CLIError(f"--gold {args.gold!r}: expected a non-empty answer")
    if args.problem is not None:
        if not args.problem.strip():
            raise CLIError(f"--problem {args.problem!r}: expected the text of a question")
        if args.reward == "psrm" and args.gold is None:
            raise CLIError(
                "--reward psrm needs the ground truth of --problem: pass --gold, or use --reward self"
            )
        return Problem(
            id="cli", question=args.problem, gold=args.gold, dataset=args.dataset or "gsm8k", meta={}
        )
    demos = demo_problems()
    if not 0 <= args.demo < len(demos):
        raise CLIError(f"--demo {args.demo}: allowed 0..{len(demos) - 1}")
    problem = demos[args.demo]
    if args.gold is not None:
        raise CLIError(
            f"--gold {args.gold}: it is the ground truth of --problem, which is not given; demo "
            f"problem {args.demo} has its own ({problem.gold}): pass --problem too, or drop --gold"
        )
    return problem


def cmd_run(args) -> int:
    """Check the flags, load the model, seek, then print the answers (or ``--json``)."""
    from ...engine.sequential import seek  # imports torch: only once the command runs

    problem = run_problem(args)
    preflight(args)
    config = config_from(args)
    check_backend(args)
    model, tok = load_model_for(args)
    reward = reward_for(args, model, tok, problem)
    if not args.json:
        print(f"Question: {problem.question}")
        if problem.gold is not None:
            print(f"Ground truth: {problem.gold}")
        print("\n--- original answer (streamed as it is decoded) ---", flush=True)
    res = seek(
        model,
        tok,
        problem,
        reward,
        config,
        dataset=problem.dataset,
        style=args.prompt,
        on_event=None if args.json else RunProgress(),
    )
    orig_pred, orig_ok = judge_reply(res.original_answer, problem.gold, problem.dataset, args.prompt)
    pred, ok = judge_reply(res.answer, problem.gold, problem.dataset, args.prompt)
    if args.json:
        out = res.to_dict() | {
            "question": problem.question,
            "gold": problem.gold,
            "original_pred": orig_pred,
            "pred": pred,
            "original_correct": orig_ok,
            "correct": ok,
            "reward": reward_name(args, problem),
        }
        print(json.dumps(out, indent=2))
        return 0
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
    print(near_tie_line(res, lambda t: extract_answer(t, problem.dataset, args.prompt)))
    return 0


def near_tie_line(res, answer_of) -> str:
    """The run's near-tie audit in one line: the final answer's smallest top-2 gap, the near-tie
    decisions of all scored answers, and whether the result is fragile (``audit.fragile``)."""
    if not res.audit:
        return "near-ties: not audited"
    last = res.audit[-1]
    weak = [i for i, (a, t) in enumerate(zip(res.audit, res.texts)) if fragile(a, t, answer_of)]
    smallest = "none audited" if last.min_gap is None else f"{last.min_gap:.3g} at token {last.min_at}"
    near = sum(len(a.below) + a.reply_below for a in res.audit)
    verdict = f"fragile (answers {weak}; 0 = the original)" if weak else "not fragile"
    return (
        f"near-ties: final answer's smallest top-2 gap {smallest}; {near} decisions below "
        f"tie_gap {res.tie_gap:g} in {len(res.audit)} scored answers; {verdict}"
    )
