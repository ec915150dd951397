"""Where a self-reward seek's time goes, by verifier cap.

On the first ``--limit`` (4) GSM8K test problems, embedded SmolLM2 in fp32, ``seek`` (the
sequential driver, drafts as configured by default) with ``SelfReward(max_new_tokens=CAP)``
and the paper's ``SeekConfig`` (``--max-steps`` 10, 1024 new tokens), one configuration per cap
of ``--caps`` (64, 256, 4096), all in one run on one commit. Per cap (one row of
``results/selfreward/selfreward.csv``; ``README.md`` beside it holds the table with the
machine, versions and commit): wall seconds, and the seconds of each phase summed over the
problems (``SeekResult.timings``): ``generate`` (the original answers), ``reward`` (the
verifier replies: 4 per freshly scored answer), ``decode`` (the continuations), ``latent``
(gradient, update and re-decode of the latents); the answers scored afresh, the verifier tokens
and their rate, the scored answers whose four replies all ran to the cap, iterations, and the
mean final reward.

``--budget SECONDS`` bounds each configuration (default 3600; 0: none): a seek still running
when it is spent is stopped at its next progress event, the row says ``cut`` and counts the
problems finished. The cut problem's phases are read from its events (``OriginalDone``,
``IterationDone``, ``VerifyProgress`` seconds); its remaining wall time counts as ``latent``
(as ``generate`` when the cut came before its original answer was scored).

Run (on a quiet 2-core CPU, 2 threads; the 4096 cap is what the budget is for):
``python bench/bench_selfreward.py --threads 2``. Smoke run: ``python bench/bench_selfreward.py
--quick`` (1 problem, cap 8, 1 step, 32 new tokens, under a minute; writes outside
bench/results unless ``--out`` says so).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_eval import find_data  # noqa: E402
from harness import RESULTS, bench_device, check_at_least, env_info, markdown_table, write_rows  # noqa: E402

from latentseek_fast import SeekConfig, seek  # noqa: E402
from latentseek_fast.app.data import load_problems  # noqa: E402
from latentseek_fast.app.models import load_model  # noqa: E402
from latentseek_fast.engine import IterationDone, OriginalDone, VerifyProgress  # noqa: E402
from latentseek_fast.rewards import SelfReward  # noqa: E402

PHASES = ("generate", "reward", "decode", "latent")
COLUMNS = [
    "cap",
    "problems",
    "cut",
    "wall_s",
    "generate_s",
    "reward_s",
    "decode_s",
    "latent_s",
    "reward_share",
    "scored_answers",
    "verifier_tokens",
    "verifier_tokens_per_s",
    "answers_all_at_cap",
    "iterations",
    "mean_final_reward",
]


NO_REPLIES = VerifyProgress(0, 0, 0, 4, 0, 0.0, 0.0)


class BudgetCut(Exception):
    """The configuration's time budget is spent (raised from ``on_event`` to stop the seek)."""


class Watch:
    """``on_event`` of one seek: the phase seconds and verifier tokens its events report, and
    the budget check."""

    def __init__(self, deadline: float | None):
        self.deadline = deadline
        self.phases = dict.fromkeys(PHASES, 0.0)
        self.verify: dict[int, VerifyProgress] = {}  # answer -> its last VerifyProgress
        self.original_done = False

    def __call__(self, event) -> None:
        if isinstance(event, OriginalDone):
            self.phases["generate"] += event.seconds
            self.original_done = True
        elif isinstance(event, IterationDone):
            self.phases["decode"] += event.seconds
        elif isinstance(event, VerifyProgress):
            self.verify[event.answer] = event
        if self.deadline is not None and time.perf_counter() > self.deadline:
            raise BudgetCut

    @property
    def verifier_tokens(self) -> int:
        return sum(e.tokens for e in self.verify.values())


def run_cap(cap: int, model, tok, problems, config: SeekConfig, budget: float) -> dict:
    """One configuration: ``seek`` on every problem with verifier replies capped at ``cap``."""
    t0 = time.perf_counter()
    deadline = t0 + budget if budget > 0 else None
    phases = dict.fromkeys(PHASES, 0.0)
    row = {"cap": cap, "problems": 0, "cut": "", "scored_answers": 0, "verifier_tokens": 0}
    row.update(answers_all_at_cap=0, iterations=0)
    finals = []
    for i, problem in enumerate(problems):
        watch = Watch(deadline)
        reward = SelfReward(model, tok, max_new_tokens=cap)
        p0 = time.perf_counter()
        try:
            res = seek(model, tok, problem, reward, config, on_event=watch)
        except BudgetCut:
            spent = time.perf_counter() - p0
            if not watch.original_done:  # cut while the original answer decoded or was scored
                phases["generate"] += spent - watch.verify.get(0, NO_REPLIES).seconds
                phases["reward"] += watch.verify.get(0, NO_REPLIES).seconds
            else:
                known = {k: v for k, v in watch.phases.items() if k != "latent"}
                known["reward"] = sum(e.seconds for e in watch.verify.values())
                for k, v in known.items():
                    phases[k] += v
                phases["latent"] += max(0.0, spent - sum(known.values()))
            row["cut"] = f"budget {budget:g} s spent in problem {i}"
            row["scored_answers"] += sum(e.replies_done == e.replies_total for e in watch.verify.values())
            row["verifier_tokens"] += watch.verifier_tokens
            break
        for k in PHASES:
            phases[k] += res.timings[k]
        row["problems"] += 1
        row["iterations"] += res.iterations
        row["scored_answers"] += len(watch.verify)
        row["verifier_tokens"] += watch.verifier_tokens
        # A reply that ran to the cap: the answer's replies made 4 * cap tokens only if all did.
        row["answers_all_at_cap"] += sum(e.tokens == e.replies_total * cap for e in watch.verify.values())
        finals.append(res.final_reward)
    wall = time.perf_counter() - t0
    row["wall_s"] = wall
    row.update({f"{k}_s": v for k, v in phases.items()})
    row["reward_share"] = phases["reward"] / wall if wall > 0 else 0.0
    row["verifier_tokens_per_s"] = row["verifier_tokens"] / phases["reward"] if phases["reward"] else 0.0
    row["mean_final_reward"] = sum(finals) / len(finals) if finals else ""
    return row


def write_readme(path: Path, rows: list[dict], args, env: dict) -> None:
    """The table with the machine, versions, commit and settings it came from."""
    text = (
        "# Where a self-reward seek's time goes, by verifier cap\n\n"
        f"`python bench/bench_selfreward.py {' '.join(sys.argv[1:])}`: the first {args.limit} GSM8K "
        f"test problems, `seek` with `SelfReward(max_new_tokens=cap)`, max_steps {args.max_steps}, "
        f"{args.max_new_tokens} new tokens, budget {args.budget:g} s per cap (0: none).\n\n"
        f"Machine: {env['machine']}, {env['threads']} threads; torch {env['torch']}, transformers "
        f"{env['transformers']}, triton {env['triton']}, Python {env['python']}; commit "
        f"{env['commit']}; run {env['run']}.\n\n"
        + markdown_table(rows, COLUMNS)
        + "\n`answers_all_at_cap`: scored answers whose four replies all ran to the cap. A `cut` row's "
        "last problem stopped when the budget was spent; its phases come from its events, the rest "
        "of its time counted as `latent` (as `generate` before its original answer was scored).\n"
    )
    path.write_text(text)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="GSM8K test JSONL (default: ../shared/data/gsm8k_test.jsonl)")
    ap.add_argument("--caps", default="64,256,4096", help="verifier caps (default 64,256,4096)")
    ap.add_argument("--limit", type=int, default=4, help="first N problems (default 4)")
    ap.add_argument("--max-steps", type=int, default=10, help="seek steps (default 10, the paper's)")
    ap.add_argument("--max-new-tokens", type=int, default=1024, help="answer cap (default 1024)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    ap.add_argument(
        "--budget", type=float, default=3600.0, help="seconds per cap, then it is cut (default 3600; 0: none)"
    )
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 problem, cap 8, 1 step, 32 tokens")
    ap.add_argument("--out", help="results folder (default bench/results/selfreward; --quick: /tmp/...)")
    args = ap.parse_args(argv)
    if args.quick:
        args.limit, args.max_steps, args.max_new_tokens = 1, 1, 32
        args.caps = "8"
    try:
        caps = [int(c) for c in args.caps.split(",") if c.strip()]
    except ValueError:
        caps = []
    if not caps or min(caps) < 1:
        ap.error(f"--caps {args.caps!r}: expected comma-separated integers >= 1")
    check_at_least(ap, args, {"limit": 1, "threads": 1, "max_steps": 0, "max_new_tokens": 1})
    if args.budget < 0:
        ap.error(f"--budget {args.budget}: expected seconds >= 0 (0: no budget)")
    data = find_data(args.data)
    if not data.is_file():
        ap.error(f"--data {data}: no such file (set --data or LATENTSEEK_DATA)")
    quick_out = "/tmp/latentseek-bench-quick/selfreward"
    out = Path(args.out or (quick_out if args.quick else RESULTS / "selfreward"))
    bench_device(ap, "cpu", args.threads)

    problems = load_problems(data, dataset="gsm8k")[: args.limit]
    config = SeekConfig(max_steps=args.max_steps, max_new_tokens=args.max_new_tokens)
    model, tok = load_model(dtype="float32")
    warm = SelfReward(model, tok, max_new_tokens=2)
    seek(model, tok, problems[0], warm, config, max_steps=1, max_new_tokens=4)  # warm-up, untimed

    rows = []
    for cap in caps:
        row = run_cap(cap, model, tok, problems, config, args.budget)
        row.update(max_steps=args.max_steps, max_new_tokens=args.max_new_tokens, budget_s=args.budget)
        rows.append(row)
        cut = f" (cut: {row['cut']})" if row["cut"] else ""
        print(
            f"cap {cap}: {row['wall_s']:.1f} s, {row['problems']}/{len(problems)} problems, verifiers "
            f"{row['reward_s']:.1f} s ({100 * row['reward_share']:.0f} %){cut}",
            flush=True,
        )
    print(markdown_table(rows, COLUMNS))
    out.mkdir(parents=True, exist_ok=True)
    csv_path = write_rows(str(out / "selfreward.csv"), rows)
    write_readme(out / "README.md", rows, args, env_info())
    print(f"wrote {csv_path} and {out / 'README.md'}")


if __name__ == "__main__":
    main()
