"""The paper's table, a test-time-scaling plot and a reward-trajectory plot from ``eval`` results.

What a row must carry (``eval`` writes all of it):

- the table, per data set: ``original_correct``, ``correct``, ``iterations``,
  ``original_length``, ``final_length``; ``dataset`` (``gsm8k``, ``math500``, ...) groups the
  rows, and rows without it are grouped as ``all``. A problem is its (data set, ``index``), never
  its index alone, so a file that joins the results of several data sets keeps every row;
- the reward trajectories: ``rewards``, the reward of the original answer, then of the answer
  after each iteration (``len(rewards) == iterations + 1``);
- the test-time scaling: ``iter_correct`` (``list[bool]``), whether the answer after ``k``
  iterations is correct, one entry per entry of ``rewards`` (index 0: the original answer, so
  ``iter_correct[0] == original_correct`` and ``iter_correct[-1] == correct``), and
  ``iter_preds`` (``list[str | None]``), the answer extracted from each (kept for inspection;
  the plot uses ``iter_correct``). Files written before these fields existed still give the
  table and the reward plot; the scaling plot says it cannot be drawn for them.

Runs: each results file is a run, unless its rows carry different ``settings`` (a resume with
``--allow-mixed-settings``: each settings group is reported apart, labelled by the fields that
differ) or it holds several runs one after another (files joined with ``cat``), which
:func:`load_runs` tells apart by order: a row whose problem already has a row with other
contents in the current run starts the next run (``file#1``, ``file#2``, ...); a row equal to an
earlier one is a copy and counted once. Each grouping, split and merge is said in one line. A
file compared with itself is refused (one run twice).

Test-time scaling: the accuracy at budget ``k`` is the accuracy had every seek been stopped
after at most ``k`` iterations. A seek that stopped earlier (its reward passed the threshold)
keeps its last answer, so the answer of a row at budget ``k`` is ``iter_correct[min(k, n)]``
with ``n`` its iterations; ``k = 0`` gives the original accuracy and ``k = K``, the most
iterations of any row, the optimised accuracy.

matplotlib is imported only to draw (``pip install 'latentseek-fast[report]'``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass

from .results import read_results, summarize

__all__ = [
    "Run",
    "ScalingUnavailable",
    "figure_paths",
    "format_table",
    "load_runs",
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
    """One run: its label in tables and legends, and its rows, one per problem (data set, index),
    sorted by data set, then index."""

    label: str
    rows: list[dict]


def _dataset(row: dict) -> str:
    ds = row.get("dataset")
    return str(ds) if ds else NO_DATASET


def _key(row: dict) -> tuple[str, int]:
    """What identifies a problem in a results file: its data set and its index there."""
    return _dataset(row), row["index"]


def _shown(keys: Sequence[tuple[str, int]], most: int = 6) -> str:
    text = ", ".join(f"{ds} {i}" for ds, i in keys[:most])
    return text + (f" and {len(keys) - most} more" if len(keys) > most else "")


def _value(v) -> str:
    return v if isinstance(v, str) else json.dumps(v)


Numbered = list[tuple[int, dict]]  # (line, row) pairs in file order


def _settings_groups(rows: list[dict], label: str) -> tuple[list[tuple[str, Numbered]], list[str]]:
    """``rows`` (file order) split by their ``settings``: ``[(label, [(line, row), ...])]`` and a
    note. One group, labelled ``label``, unless rows carry two or more distinct settings (a
    resume with ``--allow-mixed-settings``); then each group is labelled by the fields that
    differ (``label [lr=0.05]``), and rows without settings form a ``[settings not recorded]``
    group. Rows without settings join the only group when there is one."""
    distinct: list[dict] = []
    for r in rows:
        s = r.get("settings")
        if s is not None and s not in distinct:
            distinct.append(s)
    numbered = list(enumerate(rows, 1))  # read_results: one row per line, in file order
    if len(distinct) <= 1:
        return [(label, numbered)], []
    varying = [k for k in sorted(set().union(*distinct)) if len({_value(s.get(k)) for s in distinct}) > 1]
    keys: list[dict | None] = [*distinct] + ([None] if any(r.get("settings") is None for r in rows) else [])
    groups = []
    for n, key in enumerate(keys, 1):
        if key is None:
            name = "settings not recorded"
        else:  # fields that differ only in being absent or null: the group's number
            name = ", ".join(f"{k}={_value(key.get(k))}" for k in varying) or f"settings {n}"
        groups.append((f"{label} [{name}]", [(line, r) for line, r in numbered if r.get("settings") == key]))
    note = (
        f"{label}: rows of {len(distinct)} different settings (resumed with --allow-mixed-settings; "
        f"they differ in {', '.join(varying)}): reported apart as {', '.join(g[0] for g in groups)}"
    )
    return groups, [note]


def _split_runs(label: str, numbered: Numbered) -> tuple[list[Run], list[str]]:
    """One settings group's rows split into runs where a problem comes again with other contents."""
    parts: list[dict[tuple[str, int], tuple[int, dict]]] = [{}]  # key -> (line, row), per run
    copies: list[tuple[str, int]] = []
    starts: list[str] = []
    for line, row in numbered:
        key = _key(row)
        if any(part[key][1] == row for part in parts if key in part):
            copies.append(key)
            continue
        if key in parts[-1]:
            starts.append(f"line {line} ({key[0]} {key[1]}, first at line {parts[-1][key][0]})")
            parts.append({})
        parts[-1][key] = (line, row)
    labels = [label] if len(parts) == 1 else [f"{label}#{n}" for n in range(1, len(parts) + 1)]
    runs = [Run(lb, [part[k][1] for k in sorted(part)]) for lb, part in zip(labels, parts)]
    notes = []
    if starts:
        shown = "; ".join(starts[:3]) + (f"; and {len(starts) - 3} more" if len(starts) > 3 else "")
        notes.append(
            f"{label}: {len(parts)} runs one after another (a problem comes again with other results "
            f"at {shown}): reported as {', '.join(labels)}"
        )
    if copies:
        notes.append(
            f"{label}: {len(copies)} row(s) repeat an earlier row exactly ({_shown(copies)}): "
            "each counted once"
        )
    return runs, notes


def load_runs(path: str | os.PathLike, label: str | None = None) -> tuple[list[Run], list[str]]:
    """The runs in results file ``path`` (the results module reads and checks it) and ``notes``,
    one line per grouping, merge or split: ``(runs, notes)``.

    Rows of different ``settings`` (a resume with ``--allow-mixed-settings``) are reported
    apart, each group labelled by the fields that differ. Nothing is dropped unsaid: a row equal
    to an earlier row of the same problem is a copy, counted once (a note names them); a row of
    a problem that the current run already holds with other contents starts a new run (files
    joined one after another), and the runs are labelled ``label#1``, ``label#2``, ... (a note
    says where each starts).
    """
    path = os.fspath(path)
    label = label or os.path.basename(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such results file")
    rows = read_results(path)
    if not rows:
        raise ValueError(f"{path}: no rows (an eval writes one per finished problem)")
    groups, notes = _settings_groups(rows, label)
    runs: list[Run] = []
    for group_label, numbered in groups:
        group_runs, group_notes = _split_runs(group_label, numbered)
        runs += group_runs
        notes += group_notes
    return runs, notes


def _by_dataset(rows: Sequence[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(_dataset(r), []).append(r)
    return dict(sorted(groups.items()))


def _group_label(run_label: str, dataset: str) -> str:
    return run_label if dataset == NO_DATASET else f"{run_label}: {dataset}"


def table(rows: Sequence[dict]) -> list[dict]:
    """The paper's table: one summary (the results module's ``summarize``) per data set."""
    return [{"dataset": name, **summarize(group)} for name, group in _by_dataset(rows).items()]


def format_table(runs: Sequence[Run]) -> str:
    """The tables of ``runs`` as one markdown table (a ``run`` column when there are several)."""
    head = ["dataset", "problems", "original acc", "optimised acc", "mean iterations"]
    head += ["mean original len", "mean final len"]
    tables = [(run, table(run.rows)) for run in runs]
    audited = any("fragile" in s for _, t in tables for s in t)
    if audited:  # the near-tie audit: fragile answers counted as unknown give an interval
        head += ["fragile", "optimised acc range"]
    if len(runs) > 1:
        head.insert(0, "run")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run, summaries in tables:
        for s in summaries:
            cells = [
                s["dataset"],
                str(s["problems"]),
                f"{100 * s['original_accuracy']:.1f}",
                f"{100 * s['optimized_accuracy']:.1f}",
                f"{s['mean_iterations']:.2f}",
                f"{s['mean_original_length']:.1f}",
                f"{s['mean_optimized_length']:.1f}",
            ]
            if audited and "fragile" in s:
                lo, hi = 100 * s["accuracy_low"], 100 * s["accuracy_high"]
                cells += [f"{s['fragile']} of {s['audited']} audited", f"{lo:.1f}-{hi:.1f}"]
            elif audited:
                cells += ["not audited", "-"]
            if len(runs) > 1:
                cells.insert(0, run.label)
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _where(row: dict) -> str:
    ds = row.get("dataset")
    return f"row of {ds + ' ' if ds else ''}problem index {row.get('index')!r}"


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
    lacking = [_key(r) for r in rows if "iter_correct" not in r]
    if lacking:
        raise ScalingUnavailable(
            f"{len(lacking)} of {len(rows)} rows (problems {_shown(lacking)}) have no per-iteration "
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
        from matplotlib.figure import Figure  # optional (the [report] extra): only to draw
    except ImportError as exc:
        raise RuntimeError(
            f"the report's plots need matplotlib ({exc}): pip install 'latentseek-fast[report]'"
        ) from None
    return Figure(**kwargs)  # no pyplot: no global state, no GUI backend


def _save(fig, path: str) -> str:
    """Write ``fig`` as a 120-dpi PNG (as bench/plot.py does)."""
    fig.savefig(path, dpi=120)
    return path


def _percent_limits(values: Sequence[float]) -> tuple[float, float]:
    """y limits of an accuracy axis in percent: the values with a margin, clamped to 0..100 (left
    to autoscale, a run that is 0 % everywhere showed negative percentages)."""
    lo, hi = min(values), max(values)
    pad = max(0.08 * (hi - lo), 5.0)
    return max(0.0, lo - pad), min(100.0, hi + pad)


def plot_scaling(series: dict[str, dict[str, tuple[list[int], list[float]]]], path: str) -> str:
    """Accuracy against the iteration budget, one line per (run, data set), all on one axes."""
    fig = _figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.subplots()
    styles = ["-", "--", ":", "-."]
    datasets = sorted({ds for per_ds in series.values() for ds in per_ds})
    drawn: list[float] = []
    for n, (run_label, per_ds) in enumerate(series.items()):  # a colour per run, a line style per data set
        for ds, (ks, acc) in per_ds.items():
            style = styles[datasets.index(ds) % len(styles)]
            pct = [100 * a for a in acc]
            drawn += pct
            # clip_on=False: markers at 0 % or 100 %, on the axis limits, are drawn whole
            ax.plot(
                ks, pct, style, marker="o", color=f"C{n}", label=_group_label(run_label, ds), clip_on=False
            )
    ax.set_ylim(*_percent_limits(drawn))
    ax.set_xlabel("iteration budget k (every seek stopped after at most k iterations)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Test-time scaling")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_rewards(series: dict[str, dict[str, dict]], path: str) -> str:
    """The reward trajectories of every (run, data set) group (``series``: run -> data set ->
    ``reward_series``), a row of panels per run and a column per data set: one thin line per
    problem (green: final answer correct, red: wrong) and the mean reward at each budget."""
    datasets = sorted({ds for per_ds in series.values() for ds in per_ds})
    fig = _figure(figsize=(5.2 * len(datasets), 4.2 * len(series)), layout="constrained")
    grid = fig.subplots(len(series), len(datasets), squeeze=False)
    panels = []
    for row_axes, (run_label, per_ds) in zip(grid, series.items()):
        first = True
        for ax, ds in zip(row_axes, datasets):
            if ds not in per_ds:  # this run has no rows of that data set
                ax.remove()
                continue
            s = per_ds[ds]
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
            ax.set_title(f"{_group_label(run_label, ds)} ({len(s['per_row'])} problems)")
            ax.set_xlabel("iteration")
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.grid(alpha=0.3)
            ax.legend(loc="lower right", fontsize=8)
            if first:
                ax.set_ylabel("reward (green: final answer correct, red: wrong)")
                first = False
            panels.append(ax)
    lo = min(ax.get_ylim()[0] for ax in panels)  # one reward scale for every panel
    hi = max(ax.get_ylim()[1] for ax in panels)
    for ax in panels:
        ax.set_ylim(lo, hi)
    return _save(fig, path)


def _check_outputs(out: str, paths: Sequence[str]) -> None:
    """The PNGs can be written: their folder exists and they are not folders (before any work)."""
    for p in paths:
        folder = os.path.dirname(os.path.abspath(p))
        if not os.path.isdir(folder):
            raise ValueError(f"--out {out}: the directory {folder} does not exist")
        if os.path.isdir(p):
            raise ValueError(f"--out {out}: {p} is a directory; the report writes a PNG there")


def write_report(paths: Sequence[str], out: str = "report.png", echo=print) -> dict:
    """Print the table of the results files ``paths`` (one, or two to compare), one row per run
    and data set, and write the two PNGs next to ``out``, every (run, data set) drawn. Returns
    ``{"table": str, "scaling": path or None, "rewards": path, "notes": [...]}``; ``notes``
    (printed after the table) says which rows were merged, where a file holds several runs, and
    why the scaling plot left a run out. Comparing a file with itself is a ``ValueError``.
    """
    if not 1 <= len(paths) <= 2:
        raise ValueError(f"{len(paths)} results files: the report takes one, or two to compare")
    paths = [os.fspath(p) for p in paths]
    scaling_path, rewards_path = figure_paths(out)
    _check_outputs(os.fspath(out), (scaling_path, rewards_path))
    if len(paths) == 2 and all(map(os.path.isfile, paths)) and os.path.samefile(*paths):
        raise ValueError(
            f"{paths[1]} is the same file as {paths[0]}: comparing a run with itself draws it twice "
            "on top of itself; compare two results files (a file holding several runs one after "
            "another is split into them without --compare)"
        )
    labels = [os.path.basename(p) for p in paths]
    if len(set(labels)) < len(labels):
        labels = paths
    runs: list[Run] = []
    notes: list[str] = []
    for p, label in zip(paths, labels):
        file_runs, file_notes = load_runs(p, label)
        runs += file_runs
        notes += file_notes
    text = format_table(runs)
    echo(text)
    scaling = {}
    for run in runs:
        try:
            scaling[run.label] = scaling_series(run.rows)
        except ScalingUnavailable as exc:
            notes.append(f"test-time scaling: cannot be drawn for {run.label}: {exc}")
    rewards = {
        run.label: {ds: reward_series(group) for ds, group in _by_dataset(run.rows).items()} for run in runs
    }
    for note in notes:
        echo(note)
    made_scaling = plot_scaling(scaling, scaling_path) if scaling else None
    made_rewards = plot_rewards(rewards, rewards_path)
    echo(f"wrote {made_scaling or '(no test-time-scaling plot)'} and {made_rewards}")
    return {"table": text, "scaling": made_scaling, "rewards": made_rewards, "notes": notes}
