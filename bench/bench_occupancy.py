"""Where a batched run's time goes: its forwards by rows fed, its LM head, the rest, over time.

The scaling run (``bench_eval.py --scaling``) gives problems per hour; this says why they do not
grow with the seeks in flight as the rows per forward do. The same workload (the first
``--limit`` (64) GSM8K test problems, embedded SmolLM2 fp32, each problem's PSRM, ``max_steps``
4, 256 new tokens, drafts on (8)) runs once per ``--configs`` entry (``bench_eval.CONFIGS``
names of batched configurations; default ``batch16-cost,batch64-cost``) with the decoder's
``trace`` on (``HFDecoder.trace``: start, seconds, slots computed, width, rows and tokens fed of
each backbone forward) and the LM head timed by module hooks. Results, in ``--out``
(``bench/results/occupancy/``):

- ``phases.csv``: per configuration, wall seconds split into the backbone forwards, the LM head
  over the decoded positions, and the rest (latent steps, rewards, drafting, bookkeeping);
  forwards, the mean rows fed per forward;
- ``occupancy.csv``: per configuration and band of rows fed, the forwards, their seconds and
  share of the wall, ms per forward, per row fed and per token fed, tokens fed per row;
- ``README.md``: both tables and each configuration's rows fed over its run (tenths of the
  wall time).

Run alone on the machine: ``python bench/bench_occupancy.py --threads 2`` (about 16 minutes on
the 2-core CPU). Smoke run: ``--quick`` (2 problems, 1 step, 24 new tokens, out of results/).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_eval import CONFIGS, MINIMUMS, find_data  # noqa: E402
from harness import bench_device, check_at_least, env_info, markdown_table, write_rows  # noqa: E402

from latentseek_fast import SeekConfig, seek  # noqa: E402
from latentseek_fast.app.data import load_problems  # noqa: E402
from latentseek_fast.app.models import load_model  # noqa: E402
from latentseek_fast.engine.batched import Engine  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "occupancy"
# upper ends of the bands of rows fed per forward
BANDS = [1, 4, 8, 16, 32, 48, 64, 128, 256]
PHASE_COLUMNS = ["config", "batch_size", "problems", "wall_s", "backbone_s", "head_s", "rest_s",
                 "forwards", "mean_rows_fed"]  # fmt: skip
BAND_COLUMNS = ["config", "rows_fed", "forwards", "seconds", "share_of_wall", "ms_per_forward",
                "ms_per_row", "ms_per_token", "tokens_per_row"]  # fmt: skip


def band_of(rows: int) -> str:
    low = 1
    for high in BANDS:
        if rows <= high:
            return str(high) if low == high else f"{low}-{high}"
        low = high + 1
    return f">{BANDS[-1]}"


class HeadClock:
    """Seconds spent in ``module``'s forward calls (pre- and post-forward hooks). On the engine's
    LM head this is decoding's logits only: the latent step's fused backends (``auto`` on a CPU
    resolves to ``torch``) read the head's weight without calling the module."""

    def __init__(self, module):
        self.seconds, self._t0 = 0.0, 0.0
        self._hooks = [
            module.register_forward_pre_hook(lambda *_: setattr(self, "_t0", time.perf_counter())),
            module.register_forward_hook(lambda *_: self._stop()),
        ]

    def _stop(self) -> None:
        self.seconds += time.perf_counter() - self._t0

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()


def run(name: str, model, tok, problems, config: SeekConfig, draft_tokens: int):
    """``(start, wall seconds, batch size, head seconds, trace)`` of one batched configuration."""
    batch, policy = CONFIGS[name]
    engine = Engine(model, tok, problems, "psrm", config, batch_size=batch, draft_tokens=draft_tokens,
                    draft_policy=policy)  # fmt: skip
    engine.decoder.trace = trace = []
    clock = HeadClock(engine.head)
    try:
        t0 = time.perf_counter()
        for _ in engine.run():
            pass
        wall = time.perf_counter() - t0
    finally:
        clock.remove()
    return t0, wall, engine.batch_size, clock.seconds, trace


def summarise(
    name: str, start: float, wall: float, size: int, problems: int, head_s: float, trace: list
) -> tuple:
    """``(phase row, band rows, timeline)`` of one configuration's trace (``start``: the run's
    ``perf_counter``)."""
    backbone = sum(t[1] for t in trace)
    phase = {"config": name, "batch_size": size, "problems": problems, "wall_s": round(wall, 1),
             "backbone_s": round(backbone, 1), "head_s": round(head_s, 1),
             "rest_s": round(wall - backbone - head_s, 1), "forwards": len(trace),
             "mean_rows_fed": round(sum(t[4] for t in trace) / max(1, len(trace)), 1)}  # fmt: skip
    bands: dict[str, list] = {}
    for _start, seconds, _slots, _width, rows, tokens in trace:
        b = bands.setdefault(band_of(rows), [0, 0.0, 0, 0])
        b[0] += 1
        b[1] += seconds
        b[2] += rows
        b[3] += tokens
    order = [band_of(r) for r in [1, *(h + 1 for h in BANDS)]]
    band_rows = [
        {
            "config": name,
            "rows_fed": label,
            "forwards": n,
            "seconds": round(s, 1),
            "share_of_wall": round(s / wall, 3),
            "ms_per_forward": round(1000 * s / n, 1),
            "ms_per_row": round(1000 * s / r, 2),
            "ms_per_token": round(1000 * s / t, 2),
            "tokens_per_row": round(t / r, 2),
        }  # fmt: skip
        for label in order
        if label in bands
        for n, s, r, t in [bands[label]]
    ]
    timeline, tenths = [], [[] for _ in range(10)]
    for at, _seconds, _slots, _width, rows, _tokens in trace:
        tenths[min(9, int(10 * (at - start) / wall))].append(rows)
    for i, rows in enumerate(tenths):
        mean = f"{sum(rows) / len(rows):.1f}" if rows else ""
        timeline.append({"tenth": f"{10 * i}-{10 * i + 10} %", "forwards": len(rows), "mean_rows_fed": mean})
    return phase, band_rows, timeline


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", default="batch16-cost,batch64-cost",
                    help="comma-separated batched configurations of bench_eval.CONFIGS")  # fmt: skip
    ap.add_argument("--limit", type=int, default=64, help="first N GSM8K test problems (default 64)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-steps", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--draft-tokens", type=int, default=8)
    ap.add_argument("--data", help="GSM8K test JSONL (default: ../shared/data/gsm8k_test.jsonl)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 problems, 1 step, 24 new tokens")
    ap.add_argument("--out", help="results folder (default bench/results/occupancy; --quick: /tmp/...)")
    args = ap.parse_args(argv)
    names = [c.strip() for c in args.configs.split(",") if c.strip()]
    batched = [c for c, (batch, policy) in CONFIGS.items() if batch is not None and policy]
    bad = [c for c in names if c not in batched]
    if not names or bad:
        ap.error(f"--configs {args.configs!r}: expected comma-separated names of {batched}")
    check_at_least(ap, args, MINIMUMS)
    if args.quick:
        args.limit, args.max_steps, args.max_new_tokens = min(args.limit, 2), 1, 24
    out = Path(args.out or ("/tmp/latentseek-bench-quick/occupancy" if args.quick else OUT))
    data = find_data(args.data)
    if not data.is_file():
        ap.error(f"--data {data}: no such file (set --data or LATENTSEEK_DATA)")
    bench_device(ap, "cpu", args.threads)

    problems = load_problems(data, dataset="gsm8k")[: args.limit]
    config = SeekConfig(max_steps=args.max_steps, max_new_tokens=args.max_new_tokens)
    model, tok = load_model(dtype="float32")
    seek(model, tok, problems[0], "psrm", config, max_steps=1, max_new_tokens=4)  # warm-up, untimed
    phases, bands, timelines = [], [], {}
    for name in names:
        start, wall, size, head_s, trace = run(name, model, tok, problems, config, args.draft_tokens)
        phase, band_rows, timelines[name] = summarise(name, start, wall, size, len(problems), head_s, trace)
        phases.append(phase)
        bands.extend(band_rows)
        print(phase, flush=True)
    write_rows(str(out / "phases.csv"), phases)
    write_rows(str(out / "occupancy.csv"), bands)
    env = env_info()
    text = [
        "# Where a batched run's time goes (`bench/bench_occupancy.py`)\n",
        f"Machine: {env['machine']}, {args.threads} threads; torch {env['torch']}, transformers "
        f"{env['transformers']}; commit {env['commit']}; run {env['run']}. The first {len(problems)} "
        f"GSM8K test problems, embedded SmolLM2 fp32, PSRM, max_steps {args.max_steps}, "
        f"max_new_tokens {args.max_new_tokens}, draft_tokens {args.draft_tokens}. Seconds of the wall: the "
        "backbone's forwards, the LM head over decoded positions, the rest (latent steps, rewards, "
        "drafting, bookkeeping).\n",
        markdown_table(phases, PHASE_COLUMNS),
        "\nThe forwards by rows fed (a token's cost is `ms_per_token`):\n",
        markdown_table(bands, BAND_COLUMNS),
    ]
    for name, timeline in timelines.items():
        text += [f"\n{name}: rows fed per forward over the run (tenths of the wall time)\n",
                 markdown_table(timeline, ["tenth", "forwards", "mean_rows_fed"])]  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    (out / "README.md").write_text("\n".join(text) + "\n")
    print(f"wrote {out}/phases.csv, occupancy.csv and README.md")


if __name__ == "__main__":
    main()
