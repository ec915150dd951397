"""The paper's table, a test-time-scaling plot and a reward-trajectory plot from ``eval`` results.

What a row must carry (``eval`` writes all of it):

- the table, per data set: ``original_correct``, ``correct``, ``iterations``,
  ``original_length``, ``final_length``; ``dataset`` (``gsm8k``, ``math500``, ...) groups the
  rows, and rows without it are grouped as ``all``;
- the reward trajectories: ``rewards``, the reward of the original answer, then of the answer
  after each iteration (``len(rewards) == iterations + 1``);
- the test-time scaling: ``iter_correct`` (``list[bool]``), whether the answer after ``k``
  iterations is correct, one entry per entry of ``rewards`` (index 0: the original answer, so
  ``iter_correct[0] == original_correct`` and ``iter_correct[-1] == correct``), and
  ``iter_preds`` (``list[str | None]``), the answer extracted from each (kept for inspection;
  the plot uses ``iter_correct``). Files written before these fields existed still give the
  table and the reward plot; the scaling plot says it cannot be drawn for them.

Test-time scaling: the accuracy at budget ``k`` is the accuracy had every seek been stopped
after at most ``k`` iterations. A seek that stopped earlier (its reward passed the threshold)
keeps its last answer, so the answer of a row at budget ``k`` is ``iter_correct[min(k, n)]``
with ``n`` its iterations; ``k = 0`` gives the original accuracy and ``k = K``, the most
iterations of any row, the optimised accuracy.

matplotlib is imported only to draw (``pip install 'latentseek-fast[report]'``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "Run",
    "ScalingUnavailable",
    "figure_paths",
    "format_table",
    "load_run",
    "plot_rewards",
    "plot_scaling",
    "reward_series",
    "scaling_series",
    "table",
    "write_report",
]

NO_DATASET = "all"


class ScalingUnavailable(ValueError):
    """The rows lack the per-iteration correctness the test-time-scaling plot needs."""


@dataclass
class Run:
    """One results file: its label in tables and legends, and its rows (one per problem, by index)."""

    label: str
    rows: list[dict]


def load_run(path: str | os.PathLike, label: str | None = None) -> Run:
    """The rows of results file ``path`` (the results module reads and checks it), one per problem."""
    from .results import read_results, unique_rows

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such results file")
    by_index = unique_rows(read_results(path))
    if not by_index:
        raise ValueError(f"{path}: no rows (an eval writes one per finished problem)")
    return Run(label or os.path.basename(path), [by_index[i] for i in sorted(by_index)])


def _by_dataset(rows: Sequence[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r.get("dataset") or NO_DATASET, []).append(r)
    return dict(sorted(groups.items()))


def table(rows: Sequence[dict]) -> list[dict]:
    """The paper's table: one summary (the results module's ``summarize``) per data set."""
    from .results import summarize

    return [{"dataset": name, **summarize(group)} for name, group in _by_dataset(rows).items()]


def format_table(runs: Sequence[Run]) -> str:
    """The tables of ``runs`` as one markdown table (a ``run`` column when there are several)."""
    head = ["dataset", "problems", "original acc", "optimised acc", "mean iterations"]
    head += ["mean original len", "mean final len"]
    if len(runs) > 1:
        head.insert(0, "run")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run in runs:
        for s in table(run.rows):
            cells = [
                s["dataset"],
                str(s["problems"]),
                f"{100 * s['original_accuracy']:.1f}",
                f"{100 * s['optimized_accuracy']:.1f}",
                f"{s['mean_iterations']:.2f}",
                f"{s['mean_original_length']:.1f}",
                f"{s['mean_optimized_length']:.1f}",
            ]
            if len(runs) > 1:
                cells.insert(0, run.label)
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _where(row: dict) -> str:
    return f"row of problem index {row.get('index')!r}"


def _rewards(row: dict) -> list[float]:
    rw = row.get("rewards")
    if not isinstance(rw, list) or not rw or len(rw) != row["iterations"] + 1:
        raise ValueError(
            f"{_where(row)}: rewards={rw!r}: expected iterations + 1 = {row['iterations'] + 1} numbers"
        )
    return [float(x) for x in rw]


def _iter_correct(row: dict) -> list[bool]:
    ic = row["iter_correct"]
    n = row["iterations"] + 1
    if not isinstance(ic, list) or len(ic) != n or not all(isinstance(x, bool) for x in ic):
        raise ValueError(f"{_where(row)}: iter_correct={ic!r}: expected {n} booleans (iterations + 1)")
    if ic[0] != row["original_correct"] or ic[-1] != row["correct"]:
        raise ValueError(
            f"{_where(row)}: iter_correct={ic} disagrees with original_correct="
            f"{row['original_correct']} / correct={row['correct']} (its first and last entries)"
        )
    return ic


def scaling_series(rows: Sequence[dict]) -> dict[str, tuple[list[int], list[float]]]:
    """Per data set, ``(ks, accuracies)``: accuracy (0..1) had every seek stopped after ``k``
    iterations, for ``k = 0 .. K`` (``K``: the most iterations of any row of the data set).

    Raises :class:`ScalingUnavailable` when rows lack ``iter_correct`` (older results files).
    """
    lacking = [r["index"] for r in rows if "iter_correct" not in r]
    if lacking:
        shown = ", ".join(map(str, lacking[:8])) + (" ..." if len(lacking) > 8 else "")
        raise ScalingUnavailable(
            f"{len(lacking)} of {len(rows)} rows (problem indices {shown}) have no per-iteration "
            "correctness (iter_correct); they were written by an eval that did not record it. "
            "Run eval again to draw test-time scaling; the table and the reward plot do not need it"
        )
    series = {}
    for name, group in _by_dataset(rows).items():
        ics = [_iter_correct(r) for r in group]
        top = max(len(ic) for ic in ics) - 1
        ks = list(range(top + 1))
        series[name] = (ks, [sum(ic[min(k, len(ic) - 1)] for ic in ics) / len(ics) for k in ks])
    return series


def reward_series(rows: Sequence[dict]) -> dict:
    """The reward trajectories: ``per_row`` (each row's ``rewards``), ``ks`` (0..K) and ``mean``,
    the mean reward at budget ``k`` (a seek that stopped earlier keeps its last reward)."""
    per_row = [_rewards(r) for r in rows]
    top = max(len(rw) for rw in per_row) - 1
    ks = list(range(top + 1))
    mean = [sum(rw[min(k, len(rw) - 1)] for rw in per_row) / len(per_row) for k in ks]
    return {"ks": ks, "mean": mean, "per_row": per_row, "correct": [bool(r["correct"]) for r in rows]}


def figure_paths(out: str | os.PathLike) -> tuple[str, str]:
    """``report.png`` -> (``report_scaling.png``, ``report_rewards.png``)."""
    out = os.fspath(out)
    stem, ext = os.path.splitext(out)
    if ext.lower() != ".png":
        raise ValueError(f"--out {out}: expected a path ending in .png")
    return f"{stem}_scaling{ext}", f"{stem}_rewards{ext}"


def _figure(**kwargs):
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise RuntimeError(
            f"the report's plots need matplotlib ({exc}): pip install 'latentseek-fast[report]'"
        ) from None
    return Figure(**kwargs)  # no pyplot: no global state, no GUI backend


def _save(fig, path: str) -> str:
    """Write ``fig`` as a 120-dpi PNG (as bench/plot.py does)."""
    fig.savefig(path, dpi=120)
    return path


def plot_scaling(series: dict[str, dict[str, tuple[list[int], list[float]]]], path: str) -> str:
    """Accuracy against the iteration budget, one line per (run, data set), all on one axes."""
    fig = _figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.subplots()
    styles = ["-", "--", ":", "-."]
    datasets = sorted({ds for per_ds in series.values() for ds in per_ds})
    for n, (run_label, per_ds) in enumerate(series.items()):  # a colour per run, a line style per data set
        for ds, (ks, acc) in per_ds.items():
            label = run_label if len(per_ds) == 1 else f"{run_label}: {ds}"
            style = styles[datasets.index(ds) % len(styles)]
            ax.plot(ks, [100 * a for a in acc], style, marker="o", color=f"C{n}", label=label)
    ax.set_xlabel("iteration budget k (every seek stopped after at most k iterations)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Test-time scaling")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_rewards(series: dict[str, dict], path: str) -> str:
    """Each run's reward trajectories side by side: one thin line per problem (green: final
    answer correct, red: wrong) and the mean reward at each budget."""
    fig = _figure(figsize=(5.2 * len(series), 4.2), layout="constrained")
    axes = fig.subplots(1, len(series), sharey=True, squeeze=False)[0]
    for ax, (run_label, s) in zip(axes, series.items()):
        for rw, ok in zip(s["per_row"], s["correct"]):
            ax.plot(
                range(len(rw)),
                rw,
                color="tab:green" if ok else "tab:red",
                alpha=0.35,
                lw=0.8,
                marker=".",
                ms=3,
            )
        ax.plot(
            s["ks"],
            s["mean"],
            color="black",
            lw=2.2,
            marker="o",
            label="mean (stopped seeks keep their reward)",
        )
        ax.set_title(f"{run_label} ({len(s['per_row'])} problems)")
        ax.set_xlabel("iteration")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    axes[0].set_ylabel("reward (green: final answer correct, red: wrong)")
    return _save(fig, path)


def write_report(paths: Sequence[str], out: str = "report.png", echo=print) -> dict:
    """Print the table of the results files ``paths`` (one, or two to compare) and write the
    two PNGs next to ``out``. Returns ``{"table": str, "scaling": path or None, "rewards": path,
    "notes": [...]}``; ``notes`` says why the scaling plot left a run out.
    """
    if not 1 <= len(paths) <= 2:
        raise ValueError(f"{len(paths)} results files: the report takes one, or two to compare")
    scaling_path, rewards_path = figure_paths(out)
    labels = [os.path.basename(os.fspath(p)) for p in paths]
    if len(set(labels)) < len(labels):
        labels = [os.fspath(p) for p in paths]
    runs = [load_run(p, label) for p, label in zip(paths, labels)]
    text = format_table(runs)
    echo(text)
    notes, scaling = [], {}
    for run in runs:
        try:
            scaling[run.label] = scaling_series(run.rows)
        except ScalingUnavailable as exc:
            notes.append(f"test-time scaling: cannot be drawn for {run.label}: {exc}")
    rewards = {run.label: reward_series(run.rows) for run in runs}
    for note in notes:
        echo(note)
    made_scaling = plot_scaling(scaling, scaling_path) if scaling else None
    made_rewards = plot_rewards(rewards, rewards_path)
    echo(f"wrote {made_scaling or '(no test-time-scaling plot)'} and {made_rewards}")
    return {"table": text, "scaling": made_scaling, "rewards": made_rewards, "notes": notes}
