"""report.py: the paper's table, the test-time-scaling and reward series (and the lines drawn
from them) on a small hand-written results file, against values computed by hand."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from latentseek_fast import cli, report  # noqa: E402


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


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def results(tmp_path):
    return _write(tmp_path / "psrm.jsonl", ROWS)


def _old(rows):
    """Rows as an eval that did not record per-iteration answers wrote them."""
    return [{k: v for k, v in r.items() if k not in ("iter_preds", "iter_correct", "dataset")} for r in rows]


def test_table_per_dataset_by_hand(results):
    run = report.load_run(results)
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
    series = report.scaling_series(report.load_run(results).rows)
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
    s = report.reward_series(report.load_run(results).rows)
    assert s["ks"] == [0, 1, 2, 3]
    # Mean over the 5 rows of each row's reward after min(k, its iterations) iterations.
    assert s["mean"] == pytest.approx([-4 / 5, -2.5 / 5, -1.5 / 5, -1.25 / 5])
    assert s["per_row"][0] == [-1.0, -0.5, 0.0] and s["correct"] == [T, T, F, T, F]


def test_pngs_draw_the_series(results, tmp_path, monkeypatch):
    figs = []
    save = report._save
    monkeypatch.setattr(report, "_save", lambda fig, path: (figs.append(fig), save(fig, path))[1])
    wrong = [r | {"correct": F, "original_correct": F, "iter_correct": [F] * len(r["rewards"])} for r in ROWS]
    other = _write(tmp_path / "self.jsonl", wrong)  # a run that never gets an answer right
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
    left, right = rewards_fig.axes  # side by side, one per run
    assert left.get_title() == "psrm.jsonl (5 problems)" and right.get_title() == "self.jsonl (5 problems)"
    assert list(left.lines[-1].get_ydata()) == pytest.approx([-0.8, -0.5, -0.3, -0.25])  # the mean
    assert [list(ln.get_ydata()) for ln in left.lines[:-1]] == [
        r["rewards"] for r in sorted(ROWS, key=lambda r: r["index"])
    ]
    assert [ln.get_color() for ln in left.lines[:2]] == ["tab:green", "tab:green"]
    # The compared table: a run column, both runs.
    assert lines[0].splitlines()[0].startswith("| run | dataset |")
    assert "| self.jsonl | gsm8k | 3 | 0.0 | 0.0 |" in lines[0]


def test_old_rows_give_the_table_but_no_scaling(tmp_path):
    old = _write(tmp_path / "old.jsonl", _old(ROWS))
    run = report.load_run(old)
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
        report.load_run(tmp_path / "empty.jsonl")


def test_cli_report(results, tmp_path, capsys):
    assert cli.main(["report", str(results), "--out", str(tmp_path / "rep.png")]) == 0
    out = capsys.readouterr().out
    assert "| gsm8k | 3 | 33.3 | 66.7 | 1.67 | 20.0 | 22.3 |" in out
    assert (tmp_path / "rep_scaling.png").exists() and (tmp_path / "rep_rewards.png").exists()
    assert cli.main(["report", str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl: no such results file" in capsys.readouterr().err
    assert cli.main(["report", str(results), "--out", "x.svg"]) == 2
    assert "--out x.svg: expected a path ending in .png" in capsys.readouterr().err
