"""The results file never loses a row: results.py directly (property tests) and real ``eval`` runs."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from conftest import write_jsonl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from latentseek_fast.app import results as R
from latentseek_fast.app.data import Problem
from latentseek_fast.audit import TieAudit
from latentseek_fast.engine.result import SeekResult


def _row(i: int, **kw) -> dict:
    return {
        "index": i,
        "id": f"gsm8k-{i}",
        "original_correct": False,
        "correct": i % 2 == 0,
        "iterations": 1,
        "original_length": 5 + i,
        "final_length": 6,
        "answer": f"answer {i} \u00e9",
        **kw,
    }


def _write(path, indices) -> bytes:
    with R.ResultsWriter(path) as w:
        for i in indices:
            w.append(_row(i))
    return open(path, "rb").read()


def _lines(data: bytes) -> list[bytes]:
    """The complete lines of ``data`` (with their newline)."""
    return [ln + b"\n" for ln in data.split(b"\n")[:-1]]


# ------------------------------------------------------------------ results.py, unit


def test_append_read_roundtrip_out_of_order(tmp_path):
    p = tmp_path / "r.jsonl"
    _write(p, [2, 0, 3])
    assert [r["index"] for r in R.read_results(p)] == [2, 0, 3]
    assert R.read_results(p)[1] == _row(0)
    with R.ResultsWriter(p, resume=True) as w:
        assert w.done == {0, 2, 3}
        with pytest.raises(R.ResultsError, match="index 2 already has a row"):
            w.append(_row(2))
        w.append(_row(1))
    assert sorted(r["index"] for r in R.read_results(p)) == [0, 1, 2, 3]


def test_new_file_refuses_existing_and_failed_start_removes_empty(tmp_path):
    p = tmp_path / "r.jsonl"
    _write(p, [0])
    with pytest.raises(R.ResultsError, match="exists"):
        R.ResultsWriter(p)
    q = tmp_path / "q.jsonl"
    with pytest.raises(RuntimeError), R.ResultsWriter(q):
        raise RuntimeError("model failed to load")
    assert not q.exists()  # the next run need not pass --resume


def test_bad_rows_rejected(tmp_path):
    with pytest.raises(R.ResultsError, match=r"missing keys \['correct'"):
        R.check_row({k: v for k, v in _row(0).items() if k != "correct"})
    with pytest.raises(R.ResultsError, match="index=-1"):
        R.check_row(_row(-1))
    with pytest.raises(R.ResultsError, match="correct=1"):
        R.check_row(_row(0, correct=1))
    with R.ResultsWriter(tmp_path / "r.jsonl") as w, pytest.raises(R.ResultsError, match="iterations=True"):
        w.append(_row(0, iterations=True))


def test_torn_whole_row_is_kept(tmp_path):
    p = tmp_path / "r.jsonl"
    data = _write(p, [0, 1])
    p.write_bytes(data[:-1])  # the newline of row 1 never made it
    with R.ResultsWriter(p, resume=True) as w:
        assert w.done == {0, 1}
    assert p.read_bytes() == data


BOM = b"\xef\xbb\xbf"


def test_leading_bom_is_read_and_kept(tmp_path):
    """A file that a Windows tool saved starts with a UTF-8 BOM: read it, resume it, keep the BOM."""
    p = tmp_path / "r.jsonl"
    lines = _lines(_write(tmp_path / "x.jsonl", [0, 1]))
    p.write_bytes(BOM + lines[0] + lines[1][:9])  # row 1 torn after its first bytes
    assert R.read_results(p) == [_row(0)]
    with R.ResultsWriter(p, resume=True) as w:
        assert w.done == {0}
        w.append(_row(1))
    assert p.read_bytes() == BOM + lines[0] + lines[1]
    p.write_bytes(BOM + lines[0][:5])  # only the start of the first row after the BOM
    with R.ResultsWriter(p, resume=True) as w:
        assert w.done == set()
    assert p.read_bytes() == BOM


def test_bom_elsewhere_and_directories_are_named(tmp_path):
    p = tmp_path / "joined.jsonl"
    lines = _lines(_write(tmp_path / "x.jsonl", [0, 1]))
    p.write_bytes(BOM + lines[0] + BOM + lines[1])  # two BOM files joined by cat
    with pytest.raises(R.ResultsError, match=r"joined.jsonl:2: a UTF-8 byte-order mark starts this line"):
        R.read_results(p)
    with pytest.raises(R.ResultsError, match=r"joined.jsonl:2: a UTF-8 byte-order mark"):
        R.ResultsWriter(p, resume=True)
    assert p.read_bytes() == BOM + lines[0] + BOM + lines[1]
    with pytest.raises(R.ResultsError, match=f"{re.escape(str(tmp_path))}: a directory, not a results file"):
        R.read_results(tmp_path)
    for resume in (False, True):
        with pytest.raises(R.ResultsError, match="a directory, not a results file"):
            R.ResultsWriter(tmp_path, resume=resume)


def test_summary_counts_each_problem_once():
    rows = [_row(0), _row(0, correct=False), _row(1), _row(1)]
    s = R.summarize(rows)
    assert s["problems"] == 2 and s["optimized_accuracy"] == 0.5
    assert R.summarize(rows, indices=[1])["problems"] == 1
    assert "| 2 |" in R.format_summary(s)
    assert R.format_summary(R.summarize([])) == "no problems evaluated"


def test_eval_row_judges_every_iteration_and_is_a_results_row():
    """``eval_row``: the row of a seek whose original answer was wrong and whose second iteration
    was right carries each iteration's prediction and correctness, aligned with ``rewards``."""
    texts = ["so \\boxed{6}", "so \\boxed{8}", "so \\boxed{7}"]
    timings = {"generate": 1.5, "latent": 0.25, "decode": 0.5, "reward": 0.0}
    res = SeekResult(
        answer=texts[-1], answer_ids=[1, 2], original_answer=texts[0], original_ids=[1],
        rewards=[-1.0, -1.0, 0.0], original_length=4, update_length=1, final_length=5, iterations=2,
        stopped="threshold", backend="torch", timings=timings, reused=1, texts=texts,
    )  # fmt: skip
    problem = Problem(id="p7", question="What is 3 + 4?", gold="7", dataset="gsm8k")
    row = R.eval_row(12, problem, res, style="boxed", reward="psrm")
    assert R.check_row(row) is row and json.loads(json.dumps(row)) == row
    expected = {
        "index": 12, "id": "p7", "dataset": "gsm8k", "question": "What is 3 + 4?", "gold": "7",
        "original_answer": texts[0], "answer": texts[-1], "original_pred": "6", "pred": "7",
        "original_correct": False, "correct": True, "iter_preds": ["6", "8", "7"],
        "iter_correct": [False, False, True], "reward": "psrm", "rewards": [-1.0, -1.0, 0.0],
        "iterations": 2, "stopped": "threshold", "original_length": 4, "final_length": 5,
        "update_length": 1, "backend": "torch", "reused": 1, "timings": timings, "seconds": 2.25,
        "fingerprint": R.problem_fingerprint("What is 3 + 4?", "7"),
        "tie_gap": None, "fragile": False, "audit": [],  # a result without an audit
    }  # fmt: skip
    assert row == expected
    settings = {"lr": 0.03, "model": "smollm2"}
    assert R.eval_row(12, problem, res, style="boxed", reward="psrm", settings=settings) == {
        **expected,
        "settings": settings,
    }
    no_gold = Problem(id="q", question="?", gold=None, dataset="gsm8k")
    row = R.eval_row(0, no_gold, res, style="boxed", reward="self")
    assert row["iter_preds"] == ["6", "8", "7"] and row["iter_correct"] == [False, False, False]


def test_eval_row_carries_the_near_tie_audit_and_the_summary_its_interval():
    """Each scored answer's audit is kept, judged fragile when a near-tie comes before its
    extracted answer; the row is fragile when any answer on its path is; the summary counts
    fragile final answers and gives the optimised accuracy as an interval; rows written before
    the audit count as not fragile."""
    texts = ["so 3 + 4 = \\boxed{6}", "so 3 + 4 = \\boxed{7}. ok"]
    end = len(texts[1]) - 1
    audits = [
        TieAudit(tie_gap=1e-3, min_gap=1e-4, min_at=2, decisions=9, below=[2], below_chars=[3]),
        TieAudit(tie_gap=1e-3, min_gap=5e-4, min_at=8, decisions=10, below=[8], below_chars=[end]),
    ]
    res = SeekResult(
        answer=texts[-1], answer_ids=[1, 2], original_answer=texts[0], original_ids=[1],
        rewards=[-1.0, 0.0], original_length=9, update_length=1, final_length=10, iterations=1,
        stopped="threshold", backend="torch", texts=texts, audit=audits, tie_gap=1e-3,
    )  # fmt: skip
    problem = Problem(id="p7", question="What is 3 + 4?", gold="7", dataset="gsm8k")
    row = R.eval_row(3, problem, res, style="boxed", reward="psrm")
    assert json.loads(json.dumps(row)) == row and row["tie_gap"] == 1e-3
    assert [a["fragile"] for a in row["audit"]] == [True, False]  # the second's near-tie follows its box
    assert row["audit"][0] == {
        "min_gap": 1e-4, "min_at": 2, "near_ties": 1, "first_near_tie": 3, "reply_min_gap": None,
        "reply_near_ties": 0, "fragile": True,
    }  # fmt: skip
    assert row["correct"] and row["fragile"]  # the first answer's reward could have gone otherwise
    sure = {**row, "index": 4, "fragile": False}
    wrong = {**row, "index": 5, "fragile": False, "correct": False}
    old = {k: v for k, v in {**row, "index": 6}.items() if k not in ("fragile", "audit", "tie_gap")}
    s = R.summarize([row, sure, wrong, old])
    assert (s["fragile"], s["audited"]) == (1, 3)
    assert (s["accuracy_low"], s["optimized_accuracy"], s["accuracy_high"]) == (0.5, 0.75, 0.75)
    assert "1 of 4 final answers fragile" in R.format_summary(s) and "50.0-75.0 %" in R.format_summary(s)
    assert "fragile" not in R.summarize([old]) and "near-ties" not in R.format_summary(R.summarize([old]))


def test_merge_shards(tmp_path):
    a, b, out = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "all.jsonl"
    _write(a, [3, 0])
    _write(b, [2, 1, 3])
    rows = R.merge([a, b], out)
    assert [r["index"] for r in rows] == [0, 1, 2, 3] == [r["index"] for r in R.read_results(out)]
    assert R.read_results(out)[0] == _row(0)
    with pytest.raises(R.ResultsError, match="exists"):
        R.merge([a, b], out)
    c = tmp_path / "c.jsonl"
    with R.ResultsWriter(c) as w:
        w.append(_row(0, correct=True, answer="other"))
        with pytest.raises(R.ResultsError, match="locked by another writer"):
            R.merge([a, c], tmp_path / "x.jsonl")  # still being written
    with pytest.raises(R.ResultsError, match="index 0 has different rows"):
        R.merge([a, c], tmp_path / "x.jsonl")
    assert not (tmp_path / "x.jsonl").exists()


# ------------------------------------------------------------------ results.py, properties

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(n=st.integers(0, 4), cut=st.floats(0, 1))
def test_property_any_truncation(tmp_path_factory, n, cut):
    p = tmp_path_factory.mktemp("t") / "r.jsonl"
    data = _write(p, range(n))
    at = int(cut * len(data))
    p.write_bytes(data[:at])
    before = _lines(data[:at])
    with R.ResultsWriter(p, resume=True) as w:
        for i in range(n):
            if i not in w.done:
                w.append(_row(i))
    after = p.read_bytes()
    assert after.startswith(b"".join(before))  # every complete row is still there, unchanged
    assert sorted(r["index"] for r in R.read_results(p)) == list(range(n))


_CORRUPTIONS = st.one_of(
    st.binary(max_size=40),
    st.just(b""),
    st.sampled_from([b"{}", b"[1, 2]", b'{"index": 0}', b"\xff\xfe", b"   ", b'{"index": 9, "id": 3}']),
)


@FUZZ
@given(n=st.integers(1, 4), k=st.integers(0, 3), new=_CORRUPTIONS, keep_nl=st.booleans())
def test_property_any_single_corrupted_line(tmp_path_factory, n, k, new, keep_nl):
    p = tmp_path_factory.mktemp("c") / "r.jsonl"
    lines = _lines(_write(p, range(n)))
    k = min(k, n - 1)
    bad = new + (b"\n" if keep_nl or k < n - 1 else b"")
    corrupted = b"".join(lines[:k]) + bad + b"".join(lines[k + 1 :])
    p.write_bytes(corrupted)
    survivors = [json.loads(ln) for i, ln in enumerate(lines) if i != k]
    try:
        with R.ResultsWriter(p, resume=True) as w:
            w.append(_row(99))
    except R.ResultsError as exc:
        assert p.read_bytes() == corrupted  # stopped: the file is untouched
        assert re.search(rf"{re.escape(str(p))}:\d+: ", str(exc)), str(exc)  # names the line
        return
    on_disk = R.read_results(p)
    assert all(r in on_disk for r in survivors)  # nothing complete was dropped
    assert on_disk[-1] == _row(99)


_ACTIONS = st.lists(
    st.tuples(
        st.sampled_from("AB"),
        st.sampled_from(["open", "resume", "append", "torn", "close"]),
        st.integers(0, 3),
    ),
    max_size=14,
)


@FUZZ
@given(actions=_ACTIONS)
def test_property_two_writers_interleaved(tmp_path_factory, actions):
    """Two writers (separate opens, so flock applies as between processes) in any interleaving:
    the file ends up holding exactly the rows whose append returned, each once; a refused
    writer gets a ResultsError."""
    p = tmp_path_factory.mktemp("w") / "r.jsonl"
    writers: dict[str, R.ResultsWriter] = {}
    expected: list[dict] = []
    for who, act, i in actions:
        w = writers.get(who)
        if act in ("open", "resume"):
            if w is not None:
                continue
            holder = next(iter(writers), None)
            try:
                writers[who] = R.ResultsWriter(p, resume=act == "resume")
            except R.ResultsError as exc:
                assert holder is not None or (act == "open" and p.exists())
                assert ("locked" in str(exc)) == (holder is not None and act == "resume")
                continue
            assert holder is None, "two writers held the same file"
            assert [r["index"] for r in writers[who].rows] == [r["index"] for r in expected]
        elif w is None:
            continue
        elif act == "append":
            row = _row(i, writer=who)
            if i in {r["index"] for r in expected}:
                with pytest.raises(R.ResultsError, match="already has a row"):
                    w.append(row)
            else:
                w.append(row)
                expected.append(row)
        elif act == "torn":  # a writer killed in the middle of a row
            os.write(w._fd, R._encode(_row(i))[: 5 + i])
            w.close()
            del writers[who]
        else:
            w.close()
            del writers[who]
    for w in writers.values():
        w.close()
    if p.exists():
        with R.ResultsWriter(p, resume=True) as w:  # drops a torn tail, if any
            pass
    assert R.read_results(p) == expected


# ------------------------------------------------------------------ real eval processes

FAST = ["--max-new-tokens", "4", "--max-steps", "1", "--rho", "0.5", "--threads", "1", "--device", "cpu"]


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    rows = [{"question": f"What is {i} + {i}?", "answer": f"#### {2 * i}"} for i in range(4)]
    return str(write_jsonl(tmp_path_factory.mktemp("data") / "mini.jsonl", rows))


def _eval_cmd(tiny_model_dir, data_file, out, *extra):
    head = [sys.executable, "-m", "latentseek_fast", "eval", "--model", tiny_model_dir]
    head += ["--data", data_file]
    return [*head, "--out", str(out), *FAST, *extra]


def _eval(tiny_model_dir, data_file, out, *extra):
    return subprocess.run(
        _eval_cmd(tiny_model_dir, data_file, out, *extra), capture_output=True, text=True, timeout=600
    )


def _one_line_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def _eval_refuses_and_keeps(tiny_model_dir, data_file, out, data: bytes, limit: str, *needles):
    """``eval --resume`` on ``out`` holding ``data``: one ``error:`` line with ``needles``, and
    ``out`` left byte for byte as it was."""
    out.write_bytes(data)
    _one_line_error(_eval(tiny_model_dir, data_file, out, "--limit", limit, "--resume"), *needles)
    assert out.read_bytes() == data


def test_eval_blank_line_stops_and_keeps_every_row(tiny_model_dir, data_file, tmp_path):
    out = tmp_path / "r.jsonl"
    lines = _lines(_write(out, [0, 1, 2]))
    data = lines[0] + b"\n" + lines[1] + lines[2]
    _eval_refuses_and_keeps(tiny_model_dir, data_file, out, data, "1", f"{out}:2: blank line")


def test_eval_corrupted_first_line_leaves_file(tiny_model_dir, data_file, tmp_path):
    out = tmp_path / "r.jsonl"
    data = b'{"index": 0, "id": "gsm8k-0", "orig}\n' + b"".join(_lines(_write(tmp_path / "x.jsonl", [1, 2])))
    _eval_refuses_and_keeps(tiny_model_dir, data_file, out, data, "1", f"{out}:1: not JSON")


def test_eval_resume_on_a_non_results_file(tiny_model_dir, data_file, tmp_path):
    out = tmp_path / "data_copy.jsonl"
    data = open(data_file, "rb").read().replace(b", ", b",  ")
    _eval_refuses_and_keeps(
        tiny_model_dir, data_file, out, data, "1", f"{out}:1: missing keys", "not a results row"
    )


def test_eval_summary_counts_each_problem_once(tiny_model_dir, data_file, tmp_path):
    out = tmp_path / "r.jsonl"
    lines = _lines(_write(tmp_path / "x.jsonl", [0, 1]))
    data = lines[0] + lines[0] + lines[1] + lines[1]  # an old file with duplicated rows
    out.write_bytes(data)
    proc = _eval(tiny_model_dir, data_file, out, "--limit", "2", "--resume", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["problems"] == 2
    assert out.read_bytes() == data


def test_eval_resume_reads_a_bom_file(tiny_model_dir, data_file, tmp_path):
    """Every selected problem is in the file already: the rows are read, no model is loaded."""
    out = tmp_path / "r.jsonl"
    data = BOM + b"".join(_lines(_write(tmp_path / "x.jsonl", [0, 1])))
    out.write_bytes(data)
    proc = _eval(tiny_model_dir, data_file, out, "--limit", "2", "--resume", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["problems"] == 2
    assert out.read_bytes() == data


@pytest.mark.parametrize("resume", [[], ["--resume"]])
def test_eval_out_is_a_directory(tiny_model_dir, data_file, tmp_path, resume):
    proc = _eval(tiny_model_dir, data_file, tmp_path, "--limit", "1", *resume)
    _one_line_error(proc, f"--out {tmp_path}: a directory", os.path.join(str(tmp_path), "results.jsonl"))


def _holds_flock(pid: int, path) -> bool:
    """Whether process ``pid`` holds a flock on ``path`` (Linux /proc/locks)."""
    try:
        ino = os.stat(path).st_ino
        text = open("/proc/locks").read()
    except OSError:
        return False
    for ln in text.splitlines():
        f = ln.split()
        if len(f) >= 6 and f[1] == "FLOCK" and f[4] == str(pid) and f[5].split(":")[-1] == str(ino):
            return True
    return False


@pytest.mark.skipif(not os.path.exists("/proc/locks"), reason="needs Linux /proc/locks to see the lock")
def test_eval_second_writer_while_first_runs(tiny_model_dir, data_file, tmp_path):
    """Run A (--limit 3) is stopped (SIGSTOP) once it holds the file (or, without a lock, has
    written a row); run B (--limit 1 --resume) on the same --out must fail clearly and leave the
    file alone; A then finishes with all 3 rows and a 3-problem summary."""
    out = tmp_path / "r.jsonl"
    a = subprocess.Popen(
        _eval_cmd(tiny_model_dir, data_file, out, "--limit", "3", "--json"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not (_holds_flock(a.pid, out) or (out.exists() and b"\n" in out.read_bytes())):
            assert a.poll() is None, a.communicate()
            assert time.monotonic() < deadline, "run A never started writing"
            time.sleep(0.01)
        os.kill(a.pid, signal.SIGSTOP)
        before = out.read_bytes()
        b = _eval(tiny_model_dir, data_file, out, "--limit", "1", "--resume")
        assert out.read_bytes() == before
        _one_line_error(b, "locked by another writer")
    finally:
        os.kill(a.pid, signal.SIGCONT)
        stdout, stderr = a.communicate(timeout=600)
    assert a.returncode == 0, stderr
    assert sorted(r["index"] for r in R.read_results(out)) == [0, 1, 2]
    assert json.loads(stdout.strip().splitlines()[-1])["problems"] == 3


def test_eval_two_plain_runs_at_once(tiny_model_dir, data_file, tmp_path):
    """Two runs started together on one new --out: one writes every row once, the other stops."""
    out = tmp_path / "r.jsonl"
    cmd = _eval_cmd(tiny_model_dir, data_file, out, "--limit", "2", "--json")
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    res = [(p, *p.communicate(timeout=600)) for p in procs]
    ok = [r for r in res if r[0].returncode == 0]
    failed = [r for r in res if r[0].returncode != 0]
    assert len(ok) == 1 and len(failed) == 1, [(r[0].returncode, r[2][-300:]) for r in res]
    err = failed[0][2]
    assert failed[0][0].returncode == 2 and "Traceback" not in err
    assert "exists" in err or "locked by another writer" in err, err
    assert [r["index"] for r in R.read_results(out)] == [0, 1]
    assert json.loads(ok[0][1].strip().splitlines()[-1])["problems"] == 2
