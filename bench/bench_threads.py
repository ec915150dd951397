"""Decode forwards of the embedded SmolLM2 at 1 and 2 CPU threads, with the machine's load.

Three forwards of what the seek loop runs per decode step (backbone + head + argmax, on a KV
cache of ``--context`` positions that is cropped back after every call):

- ``1x1``: plain greedy decoding, one token of one row;
- ``1x9``: a draft-verify forward, the next token plus 8 drafts of one row;
- ``8x1``: the batched engine, one token of each of 8 rows.

The thread counts alternate inside every round, so that both see the same load; each round
records the 1-minute load average (``os.getloadavg``) before and after it and ``uptime``'s line.
On a machine others share, run several rounds and read the ones with the lowest load
(``python bench/plot.py`` tabulates per thread count and shape the median over the rounds whose
load is at most the lowest load seen + 0.5).

Run: ``python bench/bench_threads.py --rounds 5`` (about a minute per round on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import check_at_least, markdown_table, time_fn, write_rows  # noqa: E402

from latentseek_fast.app.models import load_model  # noqa: E402
from latentseek_fast.decoding.model import cache_keyword, lm_head_of, new_cache, truncate_cache  # noqa: E402

SHAPES = {"1x1": (1, 1), "1x9": (1, 9), "8x1": (8, 1)}


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def make_forward(model, rows: int, tokens: int, context: int, seed: int = 0):
    """``fn()`` running one cached forward of ``rows x tokens`` new tokens after ``context``
    cached positions, then the head and argmax at every new position, and cropping the cache back."""
    g = torch.Generator().manual_seed(seed)
    V = model.config.vocab_size
    cache = new_cache(model)
    backbone, head = model.model, lm_head_of(model)
    kw = cache_keyword(backbone)
    with torch.no_grad():
        backbone(input_ids=torch.randint(0, V, (rows, context), generator=g), use_cache=True, **{kw: cache})
    new = torch.randint(0, V, (rows, tokens), generator=g)

    @torch.no_grad()
    def fn():
        h = backbone(input_ids=new, use_cache=True, **{kw: cache})[0]
        head(h).argmax(-1).tolist()  # the host sync a stop test needs
        truncate_cache(cache, context)

    return fn


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--shapes", default=",".join(SHAPES), help=f"comma-separated, of {list(SHAPES)}")
    ap.add_argument("--context", type=int, default=256, help="cached positions before each forward")
    ap.add_argument("--repeats", type=int, default=10, help="timed calls per shape, thread count and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default="threads", help="results name or CSV path (default threads)")
    args = ap.parse_args(argv)
    try:
        threads = [int(t) for t in args.threads.split(",")]
    except ValueError:
        ap.error(f"--threads {args.threads!r}: expected comma-separated integers >= 1")
    if not threads or min(threads) < 1:
        ap.error(f"--threads {args.threads!r}: expected comma-separated integers >= 1")
    shapes = args.shapes.split(",")
    for s in shapes:
        if s not in SHAPES:
            ap.error(f"--shapes: {s!r} is not one of {list(SHAPES)}")
    check_at_least(ap, args, {"context": 1, "repeats": 1, "rounds": 1})

    model, _ = load_model()
    fns = {s: make_forward(model, *SHAPES[s], args.context) for s in shapes}
    flat = []
    for rnd in range(args.rounds):
        load_before, up = os.getloadavg()[0], _uptime()
        got = []
        for s in shapes:
            for t in threads:
                torch.set_num_threads(t)
                got.append((t, s, time_fn(fns[s], warmup=2, repeats=args.repeats)))
        load_after = os.getloadavg()[0]
        for t in threads:  # written per round (a long run on a busy machine keeps what it measured)
            rows = [
                {
                    "shape": s,
                    "rows": SHAPES[s][0],
                    "new_tokens": SHAPES[s][1],
                    "context": args.context,
                    "round": rnd,
                    "median_ms": r["median_s"] * 1e3,
                    "min_ms": r["min_s"] * 1e3,
                    "iqr_ms": r["iqr_s"] * 1e3,
                    "repeats": r["runs"],
                    "load1_before": load_before,
                    "load1_after": load_after,
                    "cores": len(os.sched_getaffinity(0)),
                    "uptime": up,
                }
                for tt, s, r in got
                if tt == t
            ]
            torch.set_num_threads(t)  # the harness stamps torch's current thread count on each row
            path = write_rows(args.out, rows)
            flat += [r | {"threads": t} for r in rows]
        print(
            f"round {rnd}: load {load_before:.2f} -> {load_after:.2f}; "
            + "; ".join(f"{s} t={t}: {r['median_s'] * 1e3:.1f} ms" for t, s, r in got),
            flush=True,
        )
    print(f"wrote {path}")
    print(
        markdown_table(
            flat, ["round", "shape", "threads", "median_ms", "iqr_ms", "load1_before", "load1_after"]
        )
    )


if __name__ == "__main__":
    main()
