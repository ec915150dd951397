"""End-to-end ``eval``: the batched engine, rows per iteration, and torchrun (gloo) sharding.

Real ``latentseek-fast eval`` processes on a tiny random Llama saved to disk: a 2-rank torchrun
run merges to the rows of a 1-process run; a run resumed on another world size finishes only
what is left; ``--batch-size 1`` (``seek``) and ``--batch-size 3`` (``iter_seek``) write the
same rows. Timings differ between runs and are left out of the comparisons.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import write_jsonl

from latentseek_fast.app.results import read_results

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# rho 0.5 of 6 tokens gives L = 3 (the default 0.1 would give L = 0 and no iteration); one
# thread in every process, so no run differs from another by its thread count.
FAST = ["--max-new-tokens", "6", "--max-steps", "2", "--rho", "0.5", "--threads", "1", "--device", "cpu"]
VOLATILE = ("timings", "seconds", "reused")


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    rows = [{"question": f"What is {i} + {2 * i}?", "answer": f"#### {3 * i}"} for i in range(5)]
    return str(write_jsonl(tmp_path_factory.mktemp("data") / "mini.jsonl", rows))


def _eval(tiny_model_dir, data_file, out, *extra, nproc=None):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    cmd = [sys.executable]
    if nproc is not None:
        cmd += ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    cmd += ["-m", "latentseek_fast", "eval", "--model", tiny_model_dir, "--data", data_file]
    cmd += ["--out", str(out), *FAST, *extra]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    return p.returncode, p.stdout + p.stderr


# The audit's gaps are logit differences: the batched and sequential drivers round them apart.
GAPS = ("min_gap", "reply_min_gap")


def _stable(rows):
    """The rows without their run-dependent fields, the audit's gap values replaced by None."""
    out = []
    for r in rows:
        kept = {k: v for k, v in r.items() if k not in VOLATILE}
        kept["audit"] = [{k: None if k in GAPS else v for k, v in a.items()} for a in r.get("audit", [])]
        out.append(kept)
    return out


def _gaps(rows):
    return [a[k] for r in rows for a in r["audit"] for k in GAPS if a[k] is not None]


@pytest.fixture(scope="module")
def reference(tiny_model_dir, data_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "r.jsonl"
    rc, log = _eval(tiny_model_dir, data_file, out, "--limit", "4", "--batch-size", "1")
    assert rc == 0, log
    rows = read_results(out)
    assert [r["index"] for r in rows] == [0, 1, 2, 3]
    return rows


def test_rows_carry_every_iterations_prediction(reference):
    for r in reference:
        assert len(r["iter_preds"]) == len(r["iter_correct"]) == len(r["rewards"]) == r["iterations"] + 1
        assert r["iter_correct"][0] == r["original_correct"] and r["iter_correct"][-1] == r["correct"]
        assert r["iter_preds"][0] == r["original_pred"] and r["iter_preds"][-1] == r["pred"]
        assert r["dataset"] == "gsm8k"
    assert any(r["iterations"] > 0 for r in reference)  # the seeks did step


def test_batched_engine_writes_the_rows_of_sequential_seeks(tiny_model_dir, data_file, tmp_path, reference):
    out = tmp_path / "r.jsonl"
    rc, log = _eval(tiny_model_dir, data_file, out, "--limit", "4", "--batch-size", "3")
    assert rc == 0, log
    got = sorted(read_results(out), key=lambda r: r["index"])
    assert _stable(got) == _stable(reference)
    assert _gaps(got) == pytest.approx(_gaps(reference), rel=1e-4) and _gaps(got)


def test_torchrun_two_ranks_merge_to_the_one_process_rows(tiny_model_dir, data_file, tmp_path, reference):
    out = tmp_path / "r.jsonl"
    rc, log = _eval(tiny_model_dir, data_file, out, "--limit", "4", nproc=2)
    assert rc == 0, log
    assert _stable(read_results(out)) == _stable(reference)  # merged in problem order
    assert os.listdir(tmp_path) == ["r.jsonl"]  # the rank shards were merged and removed
    assert log.count("| 4 |") == 1  # rank 0 alone prints the summary


def test_resume_on_another_world_size_runs_only_the_rest(tiny_model_dir, data_file, tmp_path, reference):
    out = tmp_path / "r.jsonl"
    rc, log = _eval(tiny_model_dir, data_file, out, "--limit", "1", "--batch-size", "1")
    assert rc == 0, log
    first = read_results(out)
    rc, log = _eval(tiny_model_dir, data_file, out, "--limit", "4", "--resume", nproc=2)
    assert rc == 0, log
    rows = read_results(out)
    assert rows[0] == first[0]  # the finished row is kept as it was, not run again
    assert _stable(rows) == _stable(reference)
