"""Plots and a markdown summary from the benchmark CSVs in bench/results/.

- ``step*.csv`` (bench_step.py): speedup against ``reference`` and peak extra memory per provider
  and shape -> ``step_<machine>_<dtype>.png``.
- ``update*.csv`` (bench_update.py): time per provider, with and without clipping ->
  ``update_<machine>.png``.
- ``seek_iteration.csv`` / ``seek_whole.csv`` (bench_seek.py): the research way against ours ->
  ``seek_<machine>.png``; ``seek_gpu*.csv`` (bench_seek_gpu.py): per-iteration phases per backend
  -> ``seek_gpu_<machine>.png``.
- ``eval.csv`` (bench_eval.py): problems per hour per configuration (sequential ``seek`` with
  and without drafts, ``seek_many`` per batch size), speed-up and agreement with the baseline ->
  ``eval_<machine>.png``.
- ``scaling.csv`` (bench_eval.py --scaling): problems per hour against the seeks in flight, one
  line per draft policy (``batchauto`` marked) -> ``scaling_<machine>.png``.
- ``threads.csv`` (bench_threads.py): decode forwards per thread count; tabulated as the median
  over the rounds whose 1-minute load was at most the lowest seen + ``THREADS_LOAD_SLACK`` ->
  ``threads_<machine>.png``.
- ``summary.md``: one markdown table per CSV (the newest run of each configuration per machine),
  which bench/README.md links to.

CSV files accumulate rows over runs; for each machine and configuration only the newest run's
row (the ``run`` stamp) is kept. Run: ``python bench/plot.py [--results DIR] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import csv
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import RESULTS, SEEK_GPU_COLUMNS, STEP_COLUMNS, markdown_table  # noqa: E402

# Per bench: the columns naming one configuration (for de-duplication) and those tabulated.
SPECS = {
    "step": (["provider", "model", "N", "dtype", "device"], STEP_COLUMNS),
    "update": (
        ["provider", "N", "d", "clip", "device"],
        ["provider", "N", "d", "clip", "median_s", "iqr_s", "speedup", "gbps", "pct_peak_bw", "status"],
    ),
    "seek_iteration": (
        ["way", "new_tokens"],
        ["way", "new_tokens", "T", "L", "seconds", "speedup_vs_research", "same_answer"],
    ),
    "seek_whole": (
        ["problem"],
        ["problem", "T", "iterations", "research_s", "ours_s", "speedup", "same_answer", "same_rewards"],
    ),
    "seek_gpu": (["model", "backend", "dtype", "device"], SEEK_GPU_COLUMNS),
    "eval": (
        ["config", "problems", "max_steps", "max_new_tokens"],
        [
            "config",
            "problems",
            "wall_s",
            "problems_per_hour",
            "speedup",
            "tokens_per_forward",
            "reused",
            "same_answers",
            "same_rewards",
            "near_ties",
            "load1_before",
            "load1_after",
            "diffs",
        ],
    ),
    "scaling": (
        ["config", "problems", "max_steps", "max_new_tokens"],
        [
            "config",
            "batch_size",
            "problems",
            "wall_s",
            "problems_per_hour",
            "speedup",
            "tokens_per_forward",
            "same_answers",
            "same_rewards",
            "same_as_seq",
            "seq_near_ties",
            "same_as_batch16",
            "load1_before",
            "load1_after",
        ],
    ),
    # every round of every run is kept; ``aggregate_threads`` reduces them for the table
    "threads": (
        ["run", "round", "shape", "threads", "context"],
        ["shape", "threads", "median_ms", "rounds", "load1", "loads_seen"],
    ),
}
# Rounds of bench_threads.py whose load is at most the lowest seen + this count as quiet.
THREADS_LOAD_SLACK = 0.5


def kind_of(path: Path) -> str | None:
    stem = path.stem
    if stem.endswith(".old") or re.search(r"\.\d+\.old$", stem):
        return None
    for kind in sorted(SPECS, key=len, reverse=True):  # seek_gpu before seek_*
        if (
            stem == kind
            or stem.startswith(kind + "_")
            or (kind in ("step", "update") and stem.startswith(kind))
        ):
            return kind
    return None


def num(v):
    """CSV text back to int/float where it is one (for formatting and plotting)."""
    if not isinstance(v, str) or v == "":
        return v
    try:
        return int(v)
    except ValueError:
        pass
    try:
        return float(v)
    except ValueError:
        return v


def read(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: num(v) for k, v in r.items()} for r in csv.DictReader(f)]


def newest(rows: list[dict], key_cols: list[str]) -> list[dict]:
    """The newest row of each (machine, configuration), in first-seen order."""
    best: dict[tuple, dict] = {}
    for r in rows:
        key = (r.get("machine"),) + tuple(r.get(c) for c in key_cols)
        if key not in best or str(r.get("run", "")) >= str(best[key].get("run", "")):
            best[key] = r
    return list(best.values())


def slug(text) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", str(text)).strip("-")[:60] or "x"


def by(rows, *cols):
    groups = defaultdict(list)
    for r in rows:
        groups[tuple(r.get(c) for c in cols)].append(r)
    return groups


def ok(r) -> bool:
    return r.get("status", "ok") == "ok" and isinstance(r.get("median_s", 0.0), (int, float))


def _bars(ax, cats, series: dict, ylabel, log=False):
    """Grouped bars: ``series`` maps a label to one value per category (None: no bar)."""
    width = 0.8 / max(len(series), 1)
    for i, (label, vals) in enumerate(series.items()):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(cats))]
        pts = [(x, v) for x, v in zip(xs, vals) if isinstance(v, (int, float))]
        if pts:
            ax.bar([p[0] for p in pts], [p[1] for p in pts], width, label=label)
    ax.set_xticks(range(len(cats)))
    ax.set_xticklabels(
        cats, fontsize=7, rotation=45 if len(cats) > 8 else 0, ha="right" if len(cats) > 8 else "center"
    )
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)


def _save(fig, path: Path, plt) -> Path:
    """Write ``fig`` as a 120-dpi PNG at ``path`` and free it."""
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_step(rows, out: Path, plt) -> list[Path]:
    made = []
    for (machine, dtype), grp in by(rows, "machine", "dtype").items():
        grp = [r for r in grp if ok(r)]
        if not grp:
            continue
        cats = list(dict.fromkeys((r["model"], r["N"]) for r in grp))
        providers = list(dict.fromkeys(r["provider"] for r in grp))
        cell = {(r["provider"], r["model"], r["N"]): r for r in grp}
        labels = [f"{m}\nN={n}" for m, n in cats]
        fig, (a1, a2) = plt.subplots(2, 1, figsize=(max(7, 1.2 * len(cats)), 7), sharex=True)
        _bars(
            a1,
            labels,
            {p: [cell.get((p, *c), {}).get("speedup") for c in cats] for p in providers if p != "reference"},
            "speedup vs reference (x)",
        )
        a1.axhline(1.0, color="k", lw=0.8)
        a1.set_title(f"latent step: {machine}, {dtype}", fontsize=9)
        _bars(
            a2,
            labels,
            {p: [cell.get((p, *c), {}).get("peak_mem_mb") or None for c in cats] for p in providers},
            "peak extra memory (MiB)",
            log=True,
        )
        fig.tight_layout()
        made.append(_save(fig, out / f"step_{slug(machine)}_{slug(dtype)}.png", plt))
    return made


def plot_update(rows, out: Path, plt) -> list[Path]:
    made = []
    for (machine,), grp in by(rows, "machine").items():
        grp = [r for r in grp if ok(r)]
        if not grp:
            continue
        cats = list(dict.fromkeys((r["N"], r["d"], str(r["clip"])) for r in grp))
        providers = list(dict.fromkeys(r["provider"] for r in grp))
        cell = {(r["provider"], r["N"], r["d"], str(r["clip"])): r for r in grp}
        labels = [f"N={n} d={d}\n{'clip' if c == 'True' else 'no clip'}" for n, d, c in cats]
        fig, ax = plt.subplots(figsize=(max(7, 1.1 * len(cats)), 4.5))
        series = {p: [(cell.get((p, *c)) or {}).get("median_s") for c in cats] for p in providers}
        series = {
            p: [v * 1e6 if isinstance(v, (int, float)) else None for v in vals] for p, vals in series.items()
        }
        _bars(ax, labels, series, "time per update (us)", log=True)
        ax.set_title(f"latent update (fp32 Adam): {machine}", fontsize=9)
        fig.tight_layout()
        made.append(_save(fig, out / f"update_{slug(machine)}.png", plt))
    return made


def plot_seek(iteration, whole, out: Path, plt) -> list[Path]:
    made = []
    machines = list(dict.fromkeys(r.get("machine") for r in iteration + whole))
    for machine in machines:
        it = [r for r in iteration if r.get("machine") == machine]
        wh = [r for r in whole if r.get("machine") == machine]
        panels = [p for p in (it, wh) if p]
        fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
        axes = list(axes[0])
        if it:
            ax = axes.pop(0)
            _bars(ax, [r["way"] for r in it], {"seconds": [r["seconds"] for r in it]}, "one iteration (s)")
            ax.set_title(f"one seek iteration, {it[0].get('new_tokens')} new tokens", fontsize=9)
        if wh:
            ax = axes.pop(0)
            cats = [f"problem {r['problem']}" for r in wh]
            _bars(
                ax,
                cats,
                {"research": [r["research_s"] for r in wh], "ours": [r["ours_s"] for r in wh]},
                "whole seek (s)",
            )
            ax.set_title("whole seeks with self-reward", fontsize=9)
        fig.suptitle(str(machine), fontsize=9)
        fig.tight_layout()
        made.append(_save(fig, out / f"seek_{slug(machine)}.png", plt))
    return made


def plot_seek_gpu(rows, out: Path, plt) -> list[Path]:
    made = []
    for (machine,), grp in by(rows, "machine").items():
        fig, ax = plt.subplots(figsize=(6, 4))
        names = [r["backend"] for r in grp]
        bottom = [0.0] * len(grp)
        for phase in ("latent_s_per_iter", "decode_s_per_iter", "reward_s_per_iter"):
            vals = [float(r.get(phase) or 0.0) for r in grp]
            ax.bar(names, vals, bottom=bottom, label=phase.removesuffix("_s_per_iter"))
            bottom = [b + v for b, v in zip(bottom, vals)]
        ax.set_ylabel("seconds per seek iteration")
        ax.set_title(
            f"{grp[0].get('model')}: T={grp[0].get('T')}, L={grp[0].get('L')}; {machine}", fontsize=9
        )
        ax.legend(fontsize=7)
        fig.tight_layout()
        made.append(_save(fig, out / f"seek_gpu_{slug(machine)}.png", plt))
    return made


def aggregate_threads(rows: list[dict]) -> list[dict]:
    """Per machine, shape and thread count: the median of the rounds' medians over the quiet
    rounds (1-minute load before the round <= the lowest seen on that machine + slack)."""
    out = []
    for grp in by(rows, "machine").values():
        loads = [r["load1_before"] for r in grp if isinstance(r.get("load1_before"), (int, float))]
        if not loads:
            continue
        quiet = [r for r in grp if r.get("load1_before", 1e9) <= min(loads) + THREADS_LOAD_SLACK]
        for (shape, threads), cell in by(quiet, "shape", "threads").items():
            lo, hi = min(r["load1_before"] for r in cell), max(r["load1_before"] for r in cell)
            out.append(
                {
                    **cell[0],
                    "shape": shape,
                    "threads": threads,
                    "median_ms": statistics.median(r["median_ms"] for r in cell),
                    "rounds": len(cell),
                    "load1": f"{lo:.2f}-{hi:.2f}",
                    "loads_seen": f"{min(loads):.2f}-{max(loads):.2f}",
                }
            )
    return out


AGGREGATE = {"threads": aggregate_threads}


def plot_eval(rows, out: Path, plt) -> list[Path]:
    made = []
    for (machine,), grp in by(rows, "machine").items():
        fig, ax = plt.subplots(figsize=(7, 4))
        names = [r["config"] for r in grp]
        ax.bar(names, [r["problems_per_hour"] for r in grp])
        for i, r in enumerate(grp):
            note = []
            if isinstance(r.get("speedup"), (int, float)):
                note.append(f"{r['speedup']:.2f}x")
            if isinstance(r.get("same_answers"), int):
                note.append(f"{r['same_answers']}/{r['problems']} same")
            ax.annotate("\n".join(note), (i, r["problems_per_hour"]), ha="center", va="bottom", fontsize=7)
        ax.set_ylim(0, 1.15 * max(r["problems_per_hour"] for r in grp))  # room for the notes
        ax.tick_params(axis="x", labelsize=8, labelrotation=20)  # 7+ config names stay apart
        ax.set_ylabel("problems per hour")
        ax.set_title(
            f"GSM8K, {grp[0].get('problems')} problems, max_steps {grp[0].get('max_steps')}, "
            f"{grp[0].get('max_new_tokens')} new tokens; {machine}, threads {grp[0].get('threads')}",
            fontsize=8,
        )
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        made.append(_save(fig, out / f"eval_{slug(machine)}.png", plt))
    return made


def plot_scaling(rows, out: Path, plt) -> list[Path]:
    """Problems per hour against the batch size (seeks in flight), one line per draft policy;
    ``auto`` is drawn at the size it chose, and the baseline as a dashed level."""
    made = []
    for (machine,), grp in by(rows, "machine").items():
        fig, ax = plt.subplots(figsize=(6, 4))
        for policy in ("full", "cost"):
            pts = sorted(
                (r["batch_size"], r["problems_per_hour"])
                for r in grp
                if r.get("draft_policy") == policy and not str(r["config"]).startswith("batchauto")
            )
            if pts:
                ax.plot(*zip(*pts), marker="o", label=f"drafts, policy {policy}")
            for r in grp:
                if r["config"] == "batchauto" + ("-cost" if policy == "cost" else ""):
                    ax.plot([r["batch_size"]], [r["problems_per_hour"]], marker="*", ms=12, ls="none",
                            label=f"auto ({policy}): {r['batch_size']}")  # fmt: skip
        for r in grp:
            if r["config"] == "seq-nodraft":
                ax.axhline(r["problems_per_hour"], ls="--", color="gray", label="sequential, no drafts")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("seeks in flight (batch size)")
        ax.set_ylabel("problems per hour")
        ax.set_ylim(bottom=0)
        ax.set_title(
            f"GSM8K, first {max(r['problems'] for r in grp)} problems, max_steps "
            f"{grp[0].get('max_steps')}, {grp[0].get('max_new_tokens')} new tokens; {machine}",
            fontsize=8,
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        made.append(_save(fig, out / f"scaling_{slug(machine)}.png", plt))
    return made


def plot_threads(rows, out: Path, plt) -> list[Path]:
    made = []
    for (machine,), grp in by(aggregate_threads(rows), "machine").items():
        shapes = list(dict.fromkeys(r["shape"] for r in grp))
        cell = {(r["shape"], r["threads"]): r["median_ms"] for r in grp}
        threads = sorted({r["threads"] for r in grp})
        fig, ax = plt.subplots(figsize=(6, 4))
        _bars(
            ax,
            shapes,
            {f"{t} thread(s)": [cell.get((s, t)) for s in shapes] for t in threads},
            "ms per forward",
        )
        ax.set_title(
            f"decode forwards (rows x tokens), quiet rounds, load {grp[0]['load1']}; {machine}", fontsize=8
        )
        fig.tight_layout()
        made.append(_save(fig, out / f"threads_{slug(machine)}.png", plt))
    return made


def summary(tables: dict[str, list[tuple[Path, list[dict]]]]) -> str:
    lines = [
        "# Benchmark summary",
        "",
        "Generated by `python bench/plot.py` from the CSVs in this folder "
        "(newest run of each configuration per machine). Column definitions: bench/README.md.",
        "",
    ]
    for kind, files in tables.items():
        cols = SPECS[kind][1]
        for path, rows in files:
            rows = AGGREGATE.get(kind, list)(rows)
            lines.append(f"## {path.name}")
            lines.append("")
            for (machine,), grp in by(rows, "machine").items():
                stamp = grp[0]
                lines.append(
                    f"**{machine}** (torch {stamp.get('torch')}, triton {stamp.get('triton')}, "
                    f"threads {'per row' if kind == 'threads' else stamp.get('threads')}, "
                    f"commit {stamp.get('commit')}, "
                    f"run {stamp.get('run', '')})"
                )
                peaks = stamp.get("peak_gemm_tflops")
                if isinstance(peaks, (int, float)):
                    lines.append(
                        f"measured ceilings: {peaks:.4g} TFLOP/s {stamp.get('peak_gemm_dtype')} GEMM, "
                        f"{stamp.get('peak_copy_gbps'):.4g} GB/s copy"
                    )
                lines.append("")
                lines.append(markdown_table(grp, [c for c in cols if any(c in r for r in grp)]))
    return "\n".join(lines) + "\n"


def _pivot(rows, row_cols, cell) -> list[str]:
    """Rows = configurations, columns = providers, each cell ``cell(row)`` ('-' when not ok)."""
    providers = list(dict.fromkeys(r["provider"] for r in rows))
    cells = {(tuple(r.get(c) for c in row_cols), r["provider"]): r for r in rows}
    keys = list(dict.fromkeys(tuple(r.get(c) for c in row_cols) for r in rows))
    out = ["  " + " ".join(f"{c:>12}" for c in row_cols) + "".join(f"{p[:20]:>21}" for p in providers)]
    for k in keys:
        vals = [cell(cells[(k, p)]) if (k, p) in cells and ok(cells[(k, p)]) else "-" for p in providers]
        out.append("  " + " ".join(f"{str(x)[:12]:>12}" for x in k) + "".join(f"{v:>21}" for v in vals))
    return out


def _step_cell(r) -> str:
    sp, mr = r.get("speedup"), r.get("mem_ratio")
    out = f"{r['median_s'] * 1e3:.3g}"
    if isinstance(sp, (int, float)):
        out += f" ({sp:.2f}x" + (f" m{mr:.2f}" if isinstance(mr, (int, float)) else "") + ")"
    return out


def digest(tables) -> str:
    """A compact text digest of the newest rows (short enough for the end of a device run's output)."""
    lines = []
    for kind, files in tables.items():
        for path, rows in files:
            lines.append(f"{path.name}:")
            if kind == "step":
                for (machine, dtype), grp in by(rows, "machine", "dtype").items():
                    lines.append(f" {machine}, {dtype}: ms per step (speedup, m = memory ratio vs reference)")
                    lines += _pivot(grp, ["model", "N"], _step_cell)
            elif kind == "update":
                for (machine,), grp in by(rows, "machine").items():
                    lines.append(f" {machine}: us per update")
                    lines += _pivot(grp, ["N", "d", "clip"], lambda r: f"{r['median_s'] * 1e6:.4g}")
            else:
                rows = AGGREGATE.get(kind, list)(rows)
                cols = SPECS[kind][1][:8]
                lines.append("  " + " | ".join(cols))
                lines += ["  " + " | ".join(f"{r.get(c)}"[:10] for c in cols) for r in rows]
    return "\n".join(lines)


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        print(f"matplotlib unavailable ({exc}): writing summary.md only")
        return None
    return plt


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--results", type=Path, default=RESULTS, help="folder of the CSVs (default bench/results)"
    )
    ap.add_argument("--out", type=Path, help="where PNGs and summary.md go (default: --results)")
    ap.add_argument("--no-png", action="store_true", help="write summary.md only")
    ap.add_argument("--digest", action="store_true", help="also print a compact text digest")
    args = ap.parse_args(argv)
    out = args.out or args.results
    out.mkdir(parents=True, exist_ok=True)

    tables: dict[str, list[tuple[Path, list[dict]]]] = defaultdict(list)
    for path in sorted(args.results.glob("*.csv")):
        kind = kind_of(path)
        if kind is None:
            continue
        rows = newest(read(path), SPECS[kind][0])
        if rows:
            tables[kind].append((path, rows))
    if not tables:
        print(f"no benchmark CSVs in {args.results}")
        return

    made: list[Path] = []
    if args.no_png:
        plt = None
    else:
        plt = _pyplot()
    if plt is not None:
        flat = {k: [r for _, rows in v for r in rows] for k, v in tables.items()}
        made += plot_step(flat.get("step", []), out, plt)
        made += plot_update(flat.get("update", []), out, plt)
        if flat.get("seek_iteration") or flat.get("seek_whole"):
            made += plot_seek(flat.get("seek_iteration", []), flat.get("seek_whole", []), out, plt)
        made += plot_seek_gpu(flat.get("seek_gpu", []), out, plt)
        made += plot_eval(flat.get("eval", []), out, plt)
        made += plot_scaling(flat.get("scaling", []), out, plt)
        made += plot_threads(flat.get("threads", []), out, plt)
    (out / "summary.md").write_text(summary(tables))
    for p in made + [out / "summary.md"]:
        print(f"wrote {p}")
    if args.digest:
        print(digest(tables))


if __name__ == "__main__":
    main()
