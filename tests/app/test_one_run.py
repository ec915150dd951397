"""A results file holds one run: rows carry their problem's fingerprint and the run's settings;
``eval --resume`` and the torchrun merge refuse rows of another data file or of other settings
(``--allow-mixed-settings`` lets settings mix, and ``report`` then shows the groups apart).
Files written before rows had either still resume and report.

The CLI runs as real processes on a tiny random model; every refusal comes before the model
loads, and a refused resume leaves the file byte for byte as it was.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import write_jsonl

import latentseek_fast
from latentseek_fast import SeekConfig
from latentseek_fast.app import cli, torchrun
from latentseek_fast.app.data import load_problems
from latentseek_fast.app.report import load_runs, write_report
from latentseek_fast.app.results import ResultsError, problem_fingerprint, read_results

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FAST = ["--max-new-tokens", "4", "--max-steps", "1", "--rho", "0.5", "--threads", "1", "--device", "cpu"]


def _gsm8k(path, numbers):
    """A GSM8K-like slice without an id field (its ids are ``gsm8k-<row>``)."""
    rows = [
        {"question": f"Tom has {a} apples and buys {a + 1}. How many?", "answer": f"#### {2 * a + 1}"}
        for a in numbers
    ]
    return str(write_jsonl(path, rows))


def _eval(model, data, out, *extra):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    cmd = [sys.executable, "-m", "latentseek_fast", "eval", "--model", model, "--data", data]
    cmd += ["--out", str(out), "--batch-size", "1", *FAST, *extra]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    return p.returncode, p.stdout, p.stderr


def _eval_here(model, data, out, *extra):
    """The same command in this process (cheaper): for the runs whose outcome is not the point."""
    return cli.main(
        ["eval", "--model", model, "--data", data, "--out", str(out), "--batch-size", "1", *FAST, *extra]
    )


def _one_error_line(rc, err, *needles):
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def test_fingerprint_is_a_stable_short_hash():
    """16 hex digits of SHA-256 over ``[question, gold]`` as compact ASCII JSON: the value is
    fixed here, so a change of Python, platform or code that moves it fails."""
    assert (
        problem_fingerprint("What is 1 + 1?", "2") == "8ac25a17e4401827"
    )  # sha256sum of ["What is 1 + 1?","2"]
    assert problem_fingerprint("What is 1 + 1?", None) != problem_fingerprint("What is 1 + 1?", "2")
    assert problem_fingerprint("Était-ce 2?", "2") != problem_fingerprint("Etait-ce 2?", "2")


def test_resume_with_another_slice_is_refused_and_the_file_is_unchanged(tiny_model_dir, tmp_path):
    """The issue's scenario: ``eval --data A`` then ``eval --data B --resume`` on the same file,
    B another slice of GSM8K with no id field, so the ids (``gsm8k-0``, ...) agree: refused,
    naming the first mismatch, and r.jsonl byte-identical afterwards."""
    a = _gsm8k(tmp_path / "A.jsonl", [1, 2])
    b = _gsm8k(tmp_path / "B.jsonl", [7, 8, 9])
    out = tmp_path / "r.jsonl"
    assert _eval_here(tiny_model_dir, a, out) == 0
    before = out.read_bytes()
    fps = [problem_fingerprint(p.question, p.gold) for p in load_problems(a)]
    want = problem_fingerprint(*[(p.question, p.gold) for p in load_problems(b)][0])
    rc, _, err = _eval(tiny_model_dir, b, out, "--resume")
    _one_error_line(rc, err, "problem 0", "'gsm8k-0'", fps[0], want, "another data file", "--out")
    assert out.read_bytes() == before
    assert [r["fingerprint"] for r in read_results(out)] == fps


def test_resume_refuses_a_shard_of_another_data_file(tiny_model_dir, tmp_path):
    """A shard left by a killed torchrun run counts on --resume; one written from other data is
    refused the same way, and no file changes."""
    a = _gsm8k(tmp_path / "A.jsonl", [1, 2, 3])
    b = _gsm8k(tmp_path / "B.jsonl", [7, 8, 9])
    assert _eval_here(tiny_model_dir, b, tmp_path / "other.jsonl", "--start", "1", "--limit", "1") == 0
    shard = tmp_path / "r.jsonl.rank1-of-2"
    os.rename(tmp_path / "other.jsonl", shard)
    before = shard.read_bytes()
    rc, _, err = _eval(tiny_model_dir, a, tmp_path / "r.jsonl", "--resume")
    _one_error_line(rc, err, "r.jsonl.rank1-of-2", "problem 1", "'gsm8k-1'")
    assert shard.read_bytes() == before and sorted(os.listdir(tmp_path)) == [
        "A.jsonl",
        "B.jsonl",
        "r.jsonl.rank1-of-2",
    ]


def test_settings_change_on_resume_is_refused_unless_allowed_and_report_splits(tiny_model_dir, tmp_path):
    """``--resume --lr 0.05`` on rows written with lr 0.03: refused naming ``lr`` and both
    values, the file untouched; with ``--allow-mixed-settings`` accepted, and ``report`` then
    shows one table row per settings group, labelled by the differing field."""
    a = _gsm8k(tmp_path / "A.jsonl", [1, 2])
    out = tmp_path / "r.jsonl"
    assert _eval_here(tiny_model_dir, a, out, "--limit", "1", "--lr", "0.03") == 0
    before = out.read_bytes()
    rc, _, err = _eval(tiny_model_dir, a, out, "--resume", "--lr", "0.05")
    _one_error_line(rc, err, "lr: 0.03 in the row, 0.05 in this run", "--allow-mixed-settings")
    assert "max_steps" not in err
    assert out.read_bytes() == before
    (row,) = read_results(out)
    assert row["settings"]["model"] == os.path.abspath(tiny_model_dir)
    assert row["settings"]["dtype"] == "float32" and row["settings"]["prompt"] == "boxed"
    assert row["settings"]["reward"] == "auto" and row["settings"]["version"] == latentseek_fast.__version__
    assert {k: row["settings"][k] for k in SeekConfig.field_names()} == {
        **SeekConfig().to_dict(),
        "lr": 0.03,
        "rho": 0.5,
        "max_steps": 1,
        "max_new_tokens": 4,
    }
    assert _eval_here(tiny_model_dir, a, out, "--resume", "--lr", "0.05", "--allow-mixed-settings") == 0
    assert [r["settings"]["lr"] for r in read_results(out)] == [0.03, 0.05]
    lines = []
    rep = write_report([str(out)], out=str(tmp_path / "rep.png"), echo=lines.append)
    table = rep["table"].splitlines()
    assert [ln.split("|")[1].strip() for ln in table[2:]] == ["r.jsonl [lr=0.03]", "r.jsonl [lr=0.05]"]
    assert any("2 different settings" in n and "differ in lr" in n for n in rep["notes"])


def test_old_format_file_resumes_and_reports(tiny_model_dir, tmp_path):
    """Rows without fingerprint or settings (files written before them) are not checked: a
    resume with other settings continues them, and report shows one run (the old rows join the
    only settings group). Passes on the code before rows had either, too."""
    a = _gsm8k(tmp_path / "A.jsonl", [1, 2])
    out = tmp_path / "r.jsonl"
    assert _eval_here(tiny_model_dir, a, out, "--limit", "1") == 0
    old = {k: v for k, v in read_results(out)[0].items() if k not in ("fingerprint", "settings")}
    out.write_text(json.dumps(old) + "\n")
    assert _eval_here(tiny_model_dir, a, out, "--resume", "--lr", "0.05") == 0
    rows = read_results(out)
    assert rows[0] == old and [r["index"] for r in rows] == [0, 1]
    runs, notes = load_runs(out)
    assert [r.label for r in runs] == ["r.jsonl"] and len(runs[0].rows) == 2 and notes == []


# ---------------------------------------------------------------- the torchrun merge, in-process


def _row(i, fingerprint=None, settings=None):
    row = {
        "index": i,
        "id": f"gsm8k-{i}",
        "original_correct": False,
        "correct": True,
        "iterations": 1,
        "original_length": 5,
        "final_length": 6,
    }
    if fingerprint is not None:
        row["fingerprint"] = fingerprint
    if settings is not None:
        row["settings"] = settings
    return row


def _write(path, rows):
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


FPS = [problem_fingerprint(f"q{i}", str(i)) for i in range(4)]
SET = {"lr": 0.03, "model": "smollm2"}


def test_merge_refuses_a_shard_of_another_data_file(tmp_path):
    out = tmp_path / "r.jsonl"
    _write(f"{out}.rank0-of-2", [_row(0, FPS[0], SET), _row(2, FPS[2], SET)])
    other = problem_fingerprint("another question", "3")
    _write(f"{out}.rank1-of-2", [_row(1, FPS[1], SET), _row(3, other, SET)])
    listing = sorted(os.listdir(tmp_path))
    with pytest.raises(
        ResultsError,
        match=rf"rank1-of-2: the row for problem 3 \(id 'gsm8k-3'\) has "
        rf"fingerprint {other} but the data file has fingerprint {FPS[3]} at index 3",
    ):
        torchrun.merge_shards(out, {0, 1, 2, 3}, fingerprints=FPS, settings=SET)
    assert sorted(os.listdir(tmp_path)) == listing  # nothing merged, nothing removed
    with pytest.raises(ResultsError, match=r"problem 3 .* the data file has no problem 3 \(it has 3\)"):
        torchrun.merge_shards(out, {0, 1, 2, 3}, fingerprints=FPS[:3])


def test_merge_refuses_shards_of_other_settings_unless_allowed(tmp_path):
    out = tmp_path / "r.jsonl"
    _write(f"{out}.rank0-of-2", [_row(0, FPS[0], SET)])
    _write(f"{out}.rank1-of-2", [_row(1, FPS[1], {**SET, "lr": 0.05}), _row(3)])  # 3: an old row
    with pytest.raises(
        ResultsError,
        match=r"rank1-of-2: the row for problem 1 was written with other "
        r"settings \(lr: 0.05 in the row, 0.03 in the row for problem 0 of .*rank0-of-2\)",
    ):
        torchrun.merge_shards(out, {0, 1, 3}, fingerprints=FPS)
    assert not out.exists()
    rows = torchrun.merge_shards(out, {0, 1, 3}, fingerprints=FPS, allow_mixed_settings=True)
    assert [r["index"] for r in rows] == [0, 1, 3] and os.listdir(tmp_path) == ["r.jsonl"]


def test_report_groups_by_settings_and_keeps_old_rows_apart_when_settings_differ(tmp_path):
    """Two settings and rows without any: three groups, labelled by the differing field."""
    out = tmp_path / "r.jsonl"
    _write(out, [_row(0), _row(1, FPS[1], SET), _row(2, FPS[2], {**SET, "model": "x"}), _row(3, FPS[3], SET)])
    runs, notes = load_runs(out)
    assert [(r.label, [row["index"] for row in r.rows]) for r in runs] == [
        ("r.jsonl [model=smollm2]", [1, 3]),
        ("r.jsonl [model=x]", [2]),
        ("r.jsonl [settings not recorded]", [0]),
    ]
    assert notes == [
        "r.jsonl: rows of 2 different settings (resumed with --allow-mixed-settings; they differ in "
        "model): reported apart as r.jsonl [model=smollm2], r.jsonl [model=x], "
        "r.jsonl [settings not recorded]"
    ]
