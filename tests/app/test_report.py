"""report.py: the paper's table, the test-time-scaling and reward series (and the lines drawn
from them) on a small hand-written results file, against values computed by hand; files that join
several data sets or several runs; the report's user errors as real processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import write_jsonl

from latentseek_fast.app import cli, report  # noqa: E402


def _row(index, dataset, rewards, iter_correct, original_length, final_length):
    return {
        "index": index,
        "id": f"p{index}",
        "dataset": dataset,
        "original_correct": iter_correct[0],
        "correct": iter_correct[-1],
        "iterations": len(rewards) - 1,
        "original_length": original_length,
        "final_length": final_length,
        "rewards": rewards,
        "iter_preds": [str(k) for k in range(len(rewards))],
        "iter_correct": iter_correct,
    }


F, T = False, True
ROWS = [  # written out of order; the report sorts by index
    _row(2, "gsm8k", [-1.0, -1.0, -0.5, -0.25], [F, T, F, F], 30, 33),
    _row(0, "gsm8k", [-1.0, -0.5, 0.0], [F, F, T], 10, 14),
    _row(1, "gsm8k", [0.0], [T], 20, 20),
    _row(3, "math500", [-1.0, 0.0], [F, T], 40, 42),
    _row(4, "math500", [-1.0, -1.0, -1.0], [T, T, F], 50, 45),
]


@pytest.fixture
def results(tmp_path):
    return write_jsonl(tmp_path / "psrm.jsonl", ROWS)


def _one_run(path):
    """The one run of results file ``path``, which holds no copies (no notes)."""
    (run,), notes = report.load_runs(path)
    assert notes == []
    return run


def _old(rows):
    """Rows as an eval that did not record per-iteration answers wrote them."""
    return [{k: v for k, v in r.items() if k not in ("iter_preds", "iter_correct", "dataset")} for r in rows]


def test_table_per_dataset_by_hand(results):
    run = _one_run(results)
    assert [r["index"] for r in run.rows] == [0, 1, 2, 3, 4]
    gsm, math = report.table(run.rows)
    assert gsm["dataset"] == "gsm8k" and gsm["problems"] == 3
    assert gsm["original_accuracy"] == pytest.approx(1 / 3)  # rows 0, 1, 2: F T F
    assert gsm["optimized_accuracy"] == pytest.approx(2 / 3)  # T T F
    assert gsm["mean_iterations"] == pytest.approx(5 / 3)  # 2 0 3
    assert gsm["mean_original_length"] == pytest.approx(20.0)  # 10 20 30
    assert gsm["mean_optimized_length"] == pytest.approx(67 / 3)  # 14 20 33
    assert math["dataset"] == "math500" and math["problems"] == 2
    assert (math["original_accuracy"], math["optimized_accuracy"]) == (0.5, 0.5)
    assert (math["mean_iterations"], math["mean_original_length"], math["mean_optimized_length"]) == (
        1.5,
        45.0,
        43.5,
    )
    text = report.format_table([run])
    assert text.splitlines()[2] == "| gsm8k | 3 | 33.3 | 66.7 | 1.67 | 20.0 | 22.3 |"
    assert text.splitlines()[3] == "| math500 | 2 | 50.0 | 50.0 | 1.50 | 45.0 | 43.5 |"


def test_scaling_series_by_hand(results):
    series = report.scaling_series(_one_run(results).rows)
    ks, acc = series["gsm8k"]
    # k=0: F T F; k=1: F T T; k=2: T T F; k=3: T (row 0 stopped at 2) T F.
    assert ks == [0, 1, 2, 3] and acc == pytest.approx([1 / 3, 2 / 3, 2 / 3, 2 / 3])
    ks, acc = series["math500"]
    # k=0: F T; k=1: T T; k=2: T (row 3 stopped at 1) F.
    assert ks == [0, 1, 2] and acc == pytest.approx([0.5, 1.0, 0.5])
    # k=0 is the original accuracy and k=K the optimised one.
    for s, (_, acc) in zip(report.table(ROWS), series.values()):
        assert acc[0] == pytest.approx(s["original_accuracy"])
        assert acc[-1] == pytest.approx(s["optimized_accuracy"])


def test_reward_series_by_hand(results):
    s = report.reward_series(_one_run(results).rows)
    assert s["ks"] == [0, 1, 2, 3]
    # Mean over the 5 rows of each row's reward after min(k, its iterations) iterations.
    assert s["mean"] == pytest.approx([-4 / 5, -2.5 / 5, -1.5 / 5, -1.25 / 5])
    assert s["per_row"][0] == [-1.0, -0.5, 0.0] and s["correct"] == [T, T, F, T, F]


def test_pngs_draw_the_series(results, tmp_path, monkeypatch):
    figs = []
    save = report._save
    monkeypatch.setattr(report, "_save", lambda fig, path: (figs.append(fig), save(fig, path))[1])
    wrong = [r | {"correct": F, "original_correct": F, "iter_correct": [F] * len(r["rewards"])} for r in ROWS]
    other = write_jsonl(tmp_path / "self.jsonl", wrong)  # a run that never gets an answer right
    lines = []
    out = report.write_report([str(results), str(other)], out=str(tmp_path / "rep.png"), echo=lines.append)
    assert out["scaling"] == str(tmp_path / "rep_scaling.png") and out["rewards"] == str(
        tmp_path / "rep_rewards.png"
    )
    for p in (out["scaling"], out["rewards"]):
        assert Path(p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    scaling_fig, rewards_fig = figs
    drawn = {ln.get_label(): list(ln.get_ydata()) for ln in scaling_fig.axes[0].lines}
    assert drawn["psrm.jsonl: gsm8k"] == pytest.approx([100 / 3, 200 / 3, 200 / 3, 200 / 3])
    assert drawn["psrm.jsonl: math500"] == pytest.approx([50.0, 100.0, 50.0])
    assert drawn["self.jsonl: gsm8k"] == [0.0] * 4 and drawn["self.jsonl: math500"] == [0.0] * 3
    # A row of panels per run, a column per data set.
    titles = [ax.get_title() for ax in rewards_fig.axes]
    assert titles == [
        "psrm.jsonl: gsm8k (3 problems)",
        "psrm.jsonl: math500 (2 problems)",
        "self.jsonl: gsm8k (3 problems)",
        "self.jsonl: math500 (2 problems)",
    ]
    gsm = rewards_fig.axes[0]
    assert list(gsm.lines[-1].get_ydata()) == pytest.approx([-2 / 3, -1.5 / 3, -0.5 / 3, -0.25 / 3])  # mean
    assert [list(ln.get_ydata()) for ln in gsm.lines[:-1]] == [
        r["rewards"] for r in sorted(ROWS[:3], key=lambda r: r["index"])
    ]
    assert [ln.get_color() for ln in gsm.lines[:3]] == ["tab:green", "tab:green", "tab:red"]
    # The compared table: a run column, both runs.
    assert lines[0].splitlines()[0].startswith("| run | dataset |")
    assert "| self.jsonl | gsm8k | 3 | 0.0 | 0.0 |" in lines[0]


def test_old_rows_give_the_table_but_no_scaling(tmp_path):
    old = write_jsonl(tmp_path / "old.jsonl", _old(ROWS))
    run = _one_run(old)
    with pytest.raises(report.ScalingUnavailable, match=r"5 of 5 rows .*iter_correct.*Run eval again"):
        report.scaling_series(run.rows)
    (all_,) = report.table(run.rows)  # no dataset field: one group
    assert all_["dataset"] == "all" and all_["problems"] == 5
    assert all_["original_accuracy"] == pytest.approx(2 / 5) and all_["optimized_accuracy"] == pytest.approx(
        3 / 5
    )
    lines = []
    out = report.write_report([str(old)], out=str(tmp_path / "r.png"), echo=lines.append)
    assert out["scaling"] is None and not (tmp_path / "r_scaling.png").exists()
    assert (tmp_path / "r_rewards.png").exists()
    assert any("test-time scaling: cannot be drawn for old.jsonl" in x for x in lines)


def test_bad_rows_and_arguments_are_named(tmp_path, results):
    bad = [dict(r) for r in ROWS]
    bad[1]["iter_correct"] = [T, F, T]  # row of index 0: first entry disagrees with original_correct
    with pytest.raises(ValueError, match=r"problem index 0: iter_correct=\[True, False, True\] disagrees"):
        report.scaling_series(bad)
    bad[1]["iter_correct"] = [F, T]
    with pytest.raises(ValueError, match=r"index 0: iter_correct=\[False, True\]: expected 3 booleans"):
        report.scaling_series(bad)
    bad[1]["rewards"] = [0.0]
    with pytest.raises(ValueError, match=r"index 0: rewards=\[0.0\]: expected iterations \+ 1 = 3"):
        report.reward_series(bad)
    with pytest.raises(ValueError, match=r"--out r.pdf: expected a path ending in .png"):
        report.figure_paths("r.pdf")
    with pytest.raises(ValueError, match="takes one, or two"):
        report.write_report([str(results)] * 3)
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ValueError, match="empty.jsonl: no rows"):
        report.load_runs(tmp_path / "empty.jsonl")


def test_cli_report(results, tmp_path, capsys):
    assert cli.main(["report", str(results), "--out", str(tmp_path / "rep.png")]) == 0
    out = capsys.readouterr().out
    assert "| gsm8k | 3 | 33.3 | 66.7 | 1.67 | 20.0 | 22.3 |" in out
    assert (tmp_path / "rep_scaling.png").exists() and (tmp_path / "rep_rewards.png").exists()
    assert cli.main(["report", str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl: no such results file" in capsys.readouterr().err
    assert cli.main(["report", str(results), "--out", "x.svg"]) == 2
    assert "--out x.svg: expected a path ending in .png" in capsys.readouterr().err


# ------------------------------------------------------------------ files joining data sets or runs

MATH = [  # MATH-500 rows as their own eval numbers them: indices 0 and 1, as GSM8K's
    _row(0, "math500", [-1.0, 0.0], [F, T], 40, 42),
    _row(1, "math500", [-1.0, -1.0, -1.0], [T, T, F], 50, 45),
]
GSM = sorted(ROWS[:3], key=lambda r: r["index"])


def _report(*args):
    cmd = [sys.executable, "-m", "latentseek_fast", "report", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def _one_line_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_a_file_joining_two_data_sets_keeps_both(tmp_path, monkeypatch):
    """``cat gsm8k.jsonl math500.jsonl > both.jsonl``: both data sets number their problems from 0."""
    both = write_jsonl(tmp_path / "both.jsonl", GSM + MATH)
    proc = _report(both, "--out", tmp_path / "cli.png")
    assert proc.returncode == 0, proc.stderr
    assert "| gsm8k | 3 | 33.3 | 66.7 |" in proc.stdout and "| math500 | 2 | 50.0 | 50.0 |" in proc.stdout
    (run,), notes = report.load_runs(both)
    assert notes == [] and [(r["dataset"], r["index"]) for r in run.rows] == [
        ("gsm8k", 0),
        ("gsm8k", 1),
        ("gsm8k", 2),
        ("math500", 0),
        ("math500", 1),
    ]
    figs = []
    save = report._save
    monkeypatch.setattr(report, "_save", lambda fig, path: (figs.append(fig), save(fig, path))[1])
    lines = []
    report.write_report([str(both)], out=str(tmp_path / "both.png"), echo=lines.append)
    assert lines[0].splitlines()[2:] == [
        "| gsm8k | 3 | 33.3 | 66.7 | 1.67 | 20.0 | 22.3 |",
        "| math500 | 2 | 50.0 | 50.0 | 1.50 | 45.0 | 43.5 |",
    ]
    scaling_fig, rewards_fig = figs
    drawn = {ln.get_label(): list(ln.get_ydata()) for ln in scaling_fig.axes[0].lines}
    assert drawn == {
        "both.jsonl: gsm8k": pytest.approx([100 / 3, 200 / 3, 200 / 3, 200 / 3]),
        "both.jsonl: math500": pytest.approx([50.0, 100.0, 50.0]),
    }
    assert [ax.get_title() for ax in rewards_fig.axes] == [
        "both.jsonl: gsm8k (3 problems)",
        "both.jsonl: math500 (2 problems)",
    ]
    assert [list(ln.get_ydata()) for ln in rewards_fig.axes[1].lines[:-1]] == [r["rewards"] for r in MATH]


def test_a_file_joining_two_runs_and_copies(tmp_path):
    """``cat psrm.jsonl self.jsonl psrm.jsonl``: two runs of the same problems, then a copy of the
    first; every run gets its table rows and its plots, and what was merged is said."""
    wrong = [r | {"correct": F, "original_correct": F, "iter_correct": [F] * len(r["rewards"])} for r in GSM]
    joined = write_jsonl(tmp_path / "joined.jsonl", GSM + MATH + wrong + GSM[:2])
    notes = [
        "joined.jsonl: 2 runs one after another (a problem comes again with other results at line 6 "
        "(gsm8k 0, first at line 1)): reported as joined.jsonl#1, joined.jsonl#2",
        "joined.jsonl: 2 row(s) repeat an earlier row exactly (gsm8k 0, gsm8k 1): each counted once",
    ]
    proc = _report(joined, "--out", tmp_path / "j.png")
    assert proc.returncode == 0, proc.stderr
    table = [ln for ln in proc.stdout.splitlines() if ln.startswith("| joined")]
    assert table == [
        "| joined.jsonl#1 | gsm8k | 3 | 33.3 | 66.7 | 1.67 | 20.0 | 22.3 |",
        "| joined.jsonl#1 | math500 | 2 | 50.0 | 50.0 | 1.50 | 45.0 | 43.5 |",
        "| joined.jsonl#2 | gsm8k | 3 | 0.0 | 0.0 | 1.67 | 20.0 | 22.3 |",
    ]
    assert notes[0] in proc.stdout and notes[1] in proc.stdout
    runs, got = report.load_runs(joined)
    assert got == notes and [r.label for r in runs] == ["joined.jsonl#1", "joined.jsonl#2"]
    assert runs[0].rows == GSM + MATH and runs[1].rows == wrong


def test_accuracy_axis_never_negative(tmp_path, monkeypatch):
    """A run that is 0 % at every budget: the axis starts at 0, not at a negative percentage."""
    figs = []
    save = report._save
    monkeypatch.setattr(report, "_save", lambda fig, path: (figs.append(fig), save(fig, path))[1])
    wrong = [r | {"correct": F, "original_correct": F, "iter_correct": [F] * len(r["rewards"])} for r in GSM]
    path = write_jsonl(tmp_path / "w.jsonl", wrong)
    report.write_report([str(path)], out=str(tmp_path / "w.png"), echo=print)
    lo, hi = figs[0].axes[0].get_ylim()
    assert lo == 0.0 and 0.0 < hi <= 100.0
    right = [r | {"correct": T, "original_correct": T, "iter_correct": [T] * len(r["rewards"])} for r in GSM]
    path = write_jsonl(tmp_path / "r.jsonl", right)
    report.write_report([str(path)], out=str(tmp_path / "r.png"), echo=print)
    lo, hi = figs[2].axes[0].get_ylim()
    assert 0.0 <= lo < 100.0 and hi == 100.0


def test_report_path_errors_are_one_line(results, tmp_path):
    _one_line_error(_report(tmp_path), f"{tmp_path}: a directory, not a results file")
    _one_line_error(_report(results, "--compare", tmp_path), f"{tmp_path}: a directory")
    proc = _report(results, "--compare", tmp_path / "." / results.name, "--out", tmp_path / "x.png")
    _one_line_error(proc, "is the same file as", "compare two results files")
    assert not (tmp_path / "x_scaling.png").exists()
    _one_line_error(
        _report(results, "--out", tmp_path / "no" / "r.png"),
        f"the directory {tmp_path / 'no'} does not exist",
    )
