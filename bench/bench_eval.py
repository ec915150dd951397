"""Problems per hour: sequential ``seek`` against the batched engine, drafts off and on.

On the first ``--limit`` (16) GSM8K test problems, embedded SmolLM2 in fp32, each problem's
own PSRM (its gold answer), the paper's ``SeekConfig`` except ``max_steps`` 4 and
``max_new_tokens`` 256, all configurations in one run on one commit:

- ``seq-nodraft``: ``seek`` one problem after the other, ``draft_tokens=0`` (the baseline);
- ``seq-draft``: the same with ``draft_tokens=--draft-tokens`` (default 8);
- ``batch4`` / ``batch8`` / ``batch16``: ``seek_many`` with that ``batch_size``, drafts on
  (``draft_tokens`` is passed through to the engine); ``batch1``: the batched driver with one
  slot, against ``seq-draft`` the choice of driver for ``seek`` (docs/architecture.md);
- ``seq-cost``, ``batch4-cost`` / ``batch8-cost`` / ``batch16-cost``: the same with
  ``draft_policy="cost"`` (drafts cut to the width a cost model of the forward says pays off).

Per configuration (one row of ``results/eval.csv``): wall seconds, problems per hour, the
speed-up against the baseline, tokens per forward (the sum over problems of
``SeekResult.decode_stats`` ``tokens`` / ``forwards``; ``forwards`` counts the decoder's
forwards after the prefill that gives each generation's first token, so plain decoding reads
slightly above 1), draft tokens fed and accepted, exact reuses (``SeekResult.reused``), the
1-minute load average before and after, and agreement with the baseline: identical final
answers and identical reward histories out of ``--limit``. For each problem whose answers
differ, ``diffs`` names the first iteration whose answer differs, the first differing token
and the top-2 logit gap there, rescored by one plain forward of the prompt and the common
prefix (``tie`` when the gap is below 1e-4, the two runs' tokens being the top two). A
divergence inside the re-decoded latent prefix (the first L tokens of an iteration, decoded
from optimised latents rather than by the model's forward) cannot be rescored and says
``latent prefix``.

Run (on a quiet 2-core CPU at 2 threads: 49 minutes for the first five configurations, the
baseline 24 of them; the four ``*-cost`` ones come on top): ``python bench/bench_eval.py
--threads 2``. Smoke run: ``python bench/bench_eval.py --quick`` (2 problems, 1 step, 24 new
tokens, writes outside bench/results unless ``--out`` says so).

Scaling run (``--scaling``, results ``scaling.csv``): the first 64 problems at 16, 32 and 64
seeks in flight and ``batch_size="auto"``, each with both draft policies (``batch16`` ...
``batchauto-cost``), the baseline ``seq-nodraft`` on the first ``--baseline-limit`` (16) of
them, and ``seq-draft`` (sequential ``seek``, drafts on, exact) on all 64 as the reference
answers. Its ``speedup`` compares problems per hour (the baseline's over its 16 problems); its
agreement columns compare with the baseline on those 16 (``same_answers``, ``same_rewards``),
with sequential ``seek`` on all 64 (``same_as_seq``: answers and reward histories both,
``seq_near_ties``, ``seq_diffs`` explained as above) and with ``batch16`` of the same policy on
all 64 (``same_as_batch16``). About 2 hours on a quiet 2-core CPU (``seq-draft`` ~35 minutes).
``python bench/plot.py`` draws problems per hour against the batch size.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import bench_device, check_at_least, markdown_table, write_rows  # noqa: E402

from latentseek_fast import SeekConfig, seek  # noqa: E402
from latentseek_fast.app.data import load_problems  # noqa: E402
from latentseek_fast.app.models import load_model  # noqa: E402
from latentseek_fast.engine.batched import Engine  # noqa: E402
from latentseek_fast.prompts import build_prompt  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DATA_NAME = "gsm8k_test.jsonl"
BASELINE = "seq-nodraft"
# ``--scaling``: the sequential reference every batched configuration's answers are compared with
SEQ_REFERENCE = "seq-draft"
# name -> (batch size or None for sequential seek, draft policy or None for drafts off)
CONFIGS = {
    "seq-nodraft": (None, None),
    "seq-draft": (None, "full"),
    "batch1": (1, "full"),
    "batch4": (4, "full"),
    "batch8": (8, "full"),
    "batch16": (16, "full"),
    "seq-cost": (None, "cost"),
    "batch4-cost": (4, "cost"),
    "batch8-cost": (8, "cost"),
    "batch16-cost": (16, "cost"),
    "batch32": (32, "full"),
    "batch64": (64, "full"),
    "batchauto": ("auto", "full"),
    "batch32-cost": (32, "cost"),
    "batch64-cost": (64, "cost"),
    "batchauto-cost": ("auto", "cost"),
}
# ``--scaling``: these configurations (and the baseline on the first --baseline-limit problems)
SCALING = ["batch16", "batch32", "batch64", "batchauto"]
SCALING = SCALING + [f"{c}-cost" for c in SCALING]
# the smallest value each integer option takes (bench_occupancy.py shares them)
MINIMUMS = {"limit": 1, "threads": 1, "max_steps": 0, "max_new_tokens": 1, "draft_tokens": 1}
# Below this top-2 logit gap (fp32) a different token is a rounding-order near-tie, not a bug.
NEAR_TIE = 1e-4
COLUMNS = [
    "config",
    "batch_size",
    "problems",
    "wall_s",
    "problems_per_hour",
    "speedup",
    "tokens_per_forward",
    "drafted",
    "accepted",
    "reused",
    "same_answers",
    "same_rewards",
    "same_as_seq",
    "seq_near_ties",
    "same_as_batch16",
    "near_ties",
    "load1_before",
    "load1_after",
]


def find_data(explicit: str | None) -> Path:
    """``--data``, else ``$LATENTSEEK_DATA/gsm8k_test.jsonl``, else the first ``shared/data``
    beside the repo or one of its parents (as tests/conftest.py looks for it)."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("LATENTSEEK_DATA")
    if env:
        return Path(env) / DATA_NAME
    for parent in REPO.parents:
        path = parent / "shared" / "data" / DATA_NAME
        if path.is_file():
            return path
    return REPO.parent / "shared" / "data" / DATA_NAME


def run_config(name, model, tok, problems, config: SeekConfig, draft_tokens: int) -> tuple[list, float, int]:
    """``(results, wall seconds, seeks in flight)`` of one configuration over ``problems``."""
    batch, policy = CONFIGS[name]
    overrides = {"draft_tokens": draft_tokens if policy else 0, "draft_policy": policy or "full"}
    t0 = time.perf_counter()
    if batch is None:
        results, size = [seek(model, tok, p, "psrm", config, **overrides) for p in problems], 1
    else:
        engine = Engine(model, tok, problems, "psrm", config, batch_size=batch, **overrides)
        results = [None] * len(problems)
        for i, res in engine.run():
            results[i] = res
        size = engine.batch_size
    return results, time.perf_counter() - t0, size


def _first_diff(a: list[int], b: list[int]) -> int | None:
    for j, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return j
    return None if len(a) == len(b) else min(len(a), len(b))


@torch.no_grad()
def top2_gap(model, prompt_ids: list[int], prefix: list[int]) -> tuple[float, list[int]]:
    """Top-2 logit gap (fp32) and the top-2 ids of the next token after ``prompt_ids + prefix``,
    by one plain forward without a cache (an oracle independent of both runs' decoding)."""
    ids = torch.tensor([prompt_ids + prefix], device=model.device)
    logits = model(input_ids=ids, use_cache=False).logits[0, -1].float()
    top = torch.topk(logits, 2)
    return float(top.values[0] - top.values[1]), top.indices.tolist()


def explain_diff(model, tok, problem, base, other) -> str:
    """Where ``other``'s answers first differ from ``base``'s, and whether it was a near-tie."""
    k = next(
        (i for i, (x, y) in enumerate(zip(base.texts, other.texts)) if x != y),
        min(len(base.texts), len(other.texts)),
    )
    if k == 0:
        a, b, L = base.original_ids, other.original_ids, 0
    else:
        last = k == len(base.texts) - 1 and k == len(other.texts) - 1
        if last:
            a, b = base.answer_ids, other.answer_ids
        else:  # an intermediate iteration: only its text is kept; re-tokenise both the same way
            a = tok(base.texts[k], add_special_tokens=False).input_ids if k < len(base.texts) else []
            b = tok(other.texts[k], add_special_tokens=False).input_ids if k < len(other.texts) else []
        L = base.update_length
    j = _first_diff(a, b)
    if j is None:
        return f"it{k}: same tokens, different history length"
    if k > 0 and j < L:
        return f"it{k}@t{j}: latent prefix"
    if j >= len(a) or j >= len(b):
        return f"it{k}@t{j}: one answer ends first"
    prompt = tok(build_prompt(tok, problem.question, dataset="gsm8k", style="boxed")).input_ids
    gap, top = top2_gap(model, prompt, list(a[:j]))
    tie = gap < NEAR_TIE and {a[j], b[j]} == set(top)
    return f"it{k}@t{j}: gap {gap:.2e}" + (" tie" if tie else " NOT a tie")


def summarise(name, results, wall, base, model, tok, problems, load, size) -> dict:
    stats = [r.decode_stats or {} for r in results]
    tokens = sum(s.get("tokens", 0) for s in stats)
    forwards = sum(s.get("forwards", 0) for s in stats)
    row = {
        "config": name,
        "batch_size": size,
        "problems": len(results),
        "wall_s": wall,
        "problems_per_hour": 3600.0 * len(results) / wall,
        "tokens_per_forward": tokens / forwards if forwards else "",
        "tokens": tokens if forwards else "",
        "forwards": forwards or "",
        "drafted": sum(s.get("drafted", 0) for s in stats) if forwards else "",
        "accepted": sum(s.get("accepted", 0) for s in stats) if forwards else "",
        "reused": sum(r.reused for r in results),
        "iterations": sum(r.iterations for r in results),
        "load1_before": load[0],
        "load1_after": load[1],
    }
    if base is not None:
        base_results, base_wall = base
        row["speedup"] = row["problems_per_hour"] / (3600.0 * len(base_results) / base_wall)
        row["same_answers"] = sum(a.answer == b.answer for a, b in zip(base_results, results))
        row["same_rewards"] = sum(a.rewards == b.rewards for a, b in zip(base_results, results))
        diffs = differences(model, tok, problems, base_results, results)
        row["near_ties"] = sum(d.endswith(" tie") for d in diffs)
        row["diffs"] = "; ".join(diffs)
    return row


def differences(model, tok, problems, reference: list, results: list) -> list[str]:
    """``p<i>: <explain_diff>`` for each problem whose final answer or reward history differs
    from ``reference``'s (compared over the shorter of the two lists)."""
    return [
        f"p{i}: {explain_diff(model, tok, problems[i], a, b)}"
        for i, (a, b) in enumerate(zip(reference, results))
        if a.answer != b.answer or a.rewards != b.rewards
    ]


def parse_configs(text: str, ap) -> list[str]:
    names = [c.strip() for c in text.split(",") if c.strip()]
    bad = [c for c in names if c not in CONFIGS]
    if not names or bad:
        ap.error(f"--configs {text!r}: expected comma-separated names of {list(CONFIGS)}")
    return [c for c in CONFIGS if c in names]  # the baseline first, whatever the given order


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help=f"GSM8K test JSONL (default: ../shared/data/{DATA_NAME})")
    ap.add_argument("--limit", type=int, default=16, help="first N problems (default 16)")
    ap.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated, of {list(CONFIGS)}")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--max-steps", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--draft-tokens", type=int, default=8, help="draft_tokens of the drafts-on configs")
    ap.add_argument(
        "--quick", action="store_true", help="smoke run: 2 problems, 1 step, 24 new tokens, out of results/"
    )
    ap.add_argument("--out", help="results name or CSV path (default eval; --quick: /tmp/.../eval.csv)")
    ap.add_argument(
        "--scaling",
        action="store_true",
        help="the scaling run: --limit 64, the batch16..batchauto(-cost) configs, baseline on the first 16, "
        "sequential seek with drafts on all 64 as the reference answers",
    )
    ap.add_argument("--baseline-limit", type=int, default=16, help="--scaling: the baseline's problems")
    args = ap.parse_args(argv)
    if args.scaling:
        if args.limit == 16:
            args.limit = 64
        if args.configs == ",".join(CONFIGS):
            args.configs = ",".join([BASELINE, SEQ_REFERENCE, *SCALING])
    else:
        args.baseline_limit = args.limit
    if args.quick:
        args.limit, args.max_steps, args.max_new_tokens = min(args.limit, 2), 1, 24
        args.baseline_limit = min(args.baseline_limit, args.limit)
    check_at_least(ap, args, MINIMUMS | {"baseline_limit": 1})
    configs = parse_configs(args.configs, ap)
    data = find_data(args.data)
    if not data.is_file():
        ap.error(f"--data {data}: no such file (set --data or LATENTSEEK_DATA)")
    name = "scaling" if args.scaling else "eval"
    out = args.out or (f"/tmp/latentseek-bench-quick/{name}.csv" if args.quick else name)
    bench_device(ap, "cpu", args.threads)

    problems = load_problems(data, dataset="gsm8k")[: args.limit]
    config = SeekConfig(max_steps=args.max_steps, max_new_tokens=args.max_new_tokens)
    model, tok = load_model(dtype="float32")
    seek(model, tok, problems[0], "psrm", config, max_steps=1, max_new_tokens=4)  # warm-up, untimed

    rows, base, by_name = [], None, {}
    for name in configs:
        load0 = os.getloadavg()[0]
        todo = problems[: args.baseline_limit] if name == BASELINE else problems
        results, wall, size = run_config(name, model, tok, todo, config, args.draft_tokens)
        load = (load0, os.getloadavg()[0])
        row = summarise(name, results, wall, base, model, tok, problems, load, size)
        first = by_name.get("batch16" + ("-cost" if name.endswith("-cost") else ""))
        if args.scaling and first is not None:
            row["same_as_batch16"] = sum(
                a.answer == b.answer and a.rewards == b.rewards for a, b in zip(first, results)
            )
        reference = by_name.get(SEQ_REFERENCE)
        if args.scaling and reference is not None and CONFIGS[name][0] is not None:
            diffs = differences(model, tok, problems, reference, results)
            row["same_as_seq"] = len(results) - len(diffs)
            row["seq_near_ties"] = sum(d.endswith(" tie") for d in diffs)
            row["seq_diffs"] = "; ".join(diffs)
        by_name[name] = results
        row.update(
            max_steps=args.max_steps,
            max_new_tokens=args.max_new_tokens,
            draft_tokens=args.draft_tokens if CONFIGS[name][1] else 0,
            draft_policy=CONFIGS[name][1] or "",
        )
        if name == BASELINE:
            base = (results, wall)
        rows.append(row)
        print(f"{name}: {wall:.1f} s, {row['problems_per_hour']:.1f} problems/h", flush=True)
    if base is None:
        print(f"note: {BASELINE} not among --configs: no speed-up or agreement columns")
    print(markdown_table(rows, [c for c in COLUMNS if any(c in r for r in rows)]))
    for r in rows:
        if r.get("diffs"):
            print(f"{r['config']} differs: {r['diffs']}")
        if r.get("seq_diffs"):
            print(f"{r['config']} differs from {SEQ_REFERENCE}: {r['seq_diffs']}")
    print(f"wrote {write_rows(out, rows)}")


if __name__ == "__main__":
    main()
