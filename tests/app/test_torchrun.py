"""app/torchrun: the torchrun environment, device and threads, sharding, shard files and the merge,
in-process and through real 2- and 3-process gloo runs launched by torchrun."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dist_driver import row_of  # noqa: E402

from latentseek_fast.app import torchrun  # noqa: E402
from latentseek_fast.app.torchrun import DistEnv  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DRIVER = str(Path(__file__).resolve().parent / "dist_driver.py")


# ---------------------------------------------------------------- environment, device, threads


def test_env_plain_process_is_rank_0_of_1():
    assert torchrun.dist_env({}) == DistEnv(0, 0, 1, 1)
    assert not DistEnv().distributed and DistEnv().is_main


def test_env_reads_torchrun_variables():
    env = torchrun.dist_env({"RANK": "5", "LOCAL_RANK": "1", "WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4"})
    assert env == DistEnv(rank=5, local_rank=1, world_size=8, local_world_size=4)
    assert env.distributed and not env.is_main
    # Without the local pair: one node, so local == global.
    assert torchrun.dist_env({"RANK": "1", "WORLD_SIZE": "3"}) == DistEnv(1, 1, 3, 3)


@pytest.mark.parametrize(
    "environ, match",
    [
        ({"RANK": "0"}, "RANK and WORLD_SIZE must both be set"),
        ({"LOCAL_RANK": "0"}, "RANK and WORLD_SIZE must both be set"),
        ({"RANK": "x", "WORLD_SIZE": "2"}, "RANK='x': expected an integer"),
        ({"RANK": "2", "WORLD_SIZE": "2"}, "RANK=2: expected 0 <= RANK < WORLD_SIZE=2"),
        ({"RANK": "0", "WORLD_SIZE": "0"}, "WORLD_SIZE=0"),
        ({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "3"}, "LOCAL_WORLD_SIZE=3"),
        ({"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "2", "LOCAL_WORLD_SIZE": "2"}, "LOCAL_RANK=2"),
    ],
)
def test_env_errors_name_the_variable(environ, match):
    with pytest.raises(ValueError, match=re.escape(match)):
        torchrun.dist_env(environ)


def test_device_per_local_rank():
    env = DistEnv(rank=3, local_rank=1, world_size=4, local_world_size=2)
    assert torchrun.resolve_device(env, None, cuda_available=True, device_count=2) == "cuda:1"
    assert torchrun.resolve_device(env, "cuda", cuda_available=True, device_count=2) == "cuda:1"
    assert torchrun.resolve_device(env, None, cuda_available=False, device_count=0) == "cpu"
    assert torchrun.resolve_device(env, "cpu", cuda_available=True, device_count=2) == "cpu"
    assert (
        torchrun.resolve_device(DistEnv(1, 0, 2, 1), "cuda:1", cuda_available=True, device_count=2)
        == "cuda:1"
    )
    with pytest.raises(
        ValueError, match=r"--device cuda:0: with 2 processes per node each needs its own GPU"
    ):
        torchrun.resolve_device(env, "cuda:0", cuda_available=True, device_count=2)
    assert torchrun.resolve_device(DistEnv(), None, cuda_available=True, device_count=1) == "cuda:0"
    with pytest.raises(ValueError, match=r"LOCAL_RANK=1: only 1 CUDA device"):
        torchrun.resolve_device(env, None, cuda_available=True, device_count=1)
    with pytest.raises(ValueError, match="no CUDA device"):
        torchrun.resolve_device(env, "cuda", cuda_available=False, device_count=0)


def test_threads_split_the_node_on_cpu_only():
    two = DistEnv(rank=0, local_rank=0, world_size=4, local_world_size=2)
    assert torchrun.resolve_threads(two, None, "cpu", cores=16) == 8
    assert torchrun.resolve_threads(DistEnv(0, 0, 3, 3), None, "cpu", cores=16) == 5
    assert torchrun.resolve_threads(DistEnv(0, 0, 3, 3), None, "cpu", cores=2) == 1  # never 0
    assert torchrun.resolve_threads(two, 3, "cpu", cores=16) == 3  # --threads wins
    assert torchrun.resolve_threads(two, None, "cuda:0", cores=16) is None  # GPU: leave torch's default
    assert torchrun.resolve_threads(DistEnv(), None, "cpu", cores=16) is None  # plain run: as today
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="--threads"):
            torchrun.resolve_threads(two, bad, "cpu", cores=16)


# ---------------------------------------------------------------- sharding


def test_shard_is_round_robin_over_what_is_left():
    assert torchrun.shard(range(7), 0, 2) == [0, 2, 4, 6]
    assert torchrun.shard(range(7), 1, 2) == [1, 3, 5]
    assert torchrun.shard([9, 4, 7, 1, 3], 0, 2, done={4}) == [9, 1]
    assert torchrun.shard([9, 4, 7, 1, 3], 1, 2, done={4}) == [7, 3]
    assert torchrun.shard(range(2), 2, 3) == []


@pytest.mark.parametrize(
    "args, match",
    [
        (([0, 1, 1], 0, 2), "listed twice"),
        (([0, -1], 0, 2), "-1"),
        (([0, "1"], 0, 2), "'1'"),
        (([0, 1], 2, 2), "rank=2"),
        (([0, 1], 0, 0), "world_size=0"),
    ],
)
def test_shard_validates(args, match):
    with pytest.raises(ValueError, match=match):
        torchrun.shard(*args)


indices_st = st.lists(st.integers(0, 10_000), unique=True, max_size=60)


@settings(max_examples=200, deadline=None)
@given(indices=indices_st, world=st.integers(1, 9), data=st.data())
def test_every_remaining_index_exactly_once(indices, world, data):
    done = set(data.draw(st.lists(st.sampled_from(indices), unique=True) if indices else st.just([])))
    shares = [torchrun.shard(indices, r, world, done) for r in range(world)]
    flat = [i for s in shares for i in s]
    assert sorted(flat) == sorted(set(indices) - done)  # each remaining index once, nothing else
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    for s in shares:  # each share keeps the given order
        assert s == [i for i in indices if i in set(s)]
    assert shares == [torchrun.shard(list(indices), r, world, set(done)) for r in range(world)]


@settings(max_examples=200, deadline=None)
@given(indices=indices_st, w1=st.integers(1, 6), w2=st.integers(1, 6), data=st.data())
def test_resharding_after_partial_run_covers_exactly_the_rest(indices, w1, w2, data):
    # Run 1 with w1 ranks: each rank finished some prefix of its share, then the run was killed.
    finished = set()
    for r in range(w1):
        share = torchrun.shard(indices, r, w1)
        finished |= set(share[: data.draw(st.integers(0, len(share)))])
    # Run 2 with w2 ranks re-shards what is left.
    shares = [torchrun.shard(indices, r, w2, finished) for r in range(w2)]
    flat = [i for s in shares for i in s]
    assert len(flat) == len(set(flat))
    assert set(flat) | finished == set(indices) and not set(flat) & finished


# ---------------------------------------------------------------- shard files and the merge


def _write(path, rows, torn: str = ""):
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
        f.write(torn)


def _lines(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_shard_paths_and_discovery(tmp_path):
    out = tmp_path / "results.jsonl"
    assert torchrun.shard_path(out, 1, 2) == f"{out}.rank1-of-2"
    names = [
        "results.jsonl.rank1-of-2",
        "results.jsonl.rank0-of-10",
        "results.jsonl.rank0-of-2",
        "results.jsonl.rank2-of-3",
        # not shards of results.jsonl:
        "results.jsonl.rank0-of-2.merging",
        "other.jsonl.rank0-of-2",
        "results.jsonlx.rank0-of-2",
        "results.jsonl.rankA-of-2",
        "results.jsonl",
    ]
    for n in names:
        (tmp_path / n).write_text("")
    found = [os.path.basename(p) for p in torchrun.find_shards(out)]
    assert found == [
        "results.jsonl.rank0-of-2",
        "results.jsonl.rank1-of-2",
        "results.jsonl.rank2-of-3",
        "results.jsonl.rank0-of-10",
    ]
    assert torchrun.find_shards(tmp_path / "missing_dir" / "r.jsonl") == []


def test_merge_puts_every_file_into_out_sorted(tmp_path):
    out = tmp_path / "r.jsonl"
    _write(out, [row_of(0), row_of(4)])
    _write(f"{out}.rank0-of-2", [row_of(2), row_of(6)], torn='{"index": 8, "id"')  # killed write
    _write(f"{out}.rank1-of-2", [row_of(1), row_of(4)])  # 4 again: left by a killed earlier merge
    _write(f"{out}.rank2-of-3", [row_of(5)])
    (tmp_path / "r.jsonl.merging").write_text("stale")
    rows = torchrun.merge_shards(out, expected={0, 1, 2, 4, 5, 6})
    want = [row_of(i) for i in (0, 1, 2, 4, 5, 6)]
    assert rows == want and _lines(out) == want
    assert sorted(os.listdir(tmp_path)) == ["r.jsonl"]


def test_merge_refuses_to_lose_reported_rows(tmp_path):
    out = tmp_path / "r.jsonl"
    _write(f"{out}.rank0-of-2", [row_of(0)])
    with pytest.raises(ValueError, match=r"problems \[1\] were reported written.*file system"):
        torchrun.merge_shards(out, expected={0, 1})
    assert sorted(os.listdir(tmp_path)) == ["r.jsonl.rank0-of-2"]  # nothing replaced or removed


def _plain_run(out, n, resume=False, fail_at=None):
    """The driver's loop in this process (world size 1)."""
    with torchrun.sharded_results(out, list(range(n)), resume=resume, environ={}) as run:
        for i in run.todo:
            if i == fail_at:
                raise KeyError(i)
            run.append(row_of(i))
    return run


def test_single_process_writes_out_directly_as_eval_did(tmp_path):
    out = tmp_path / "r.jsonl"
    run = _plain_run(out, 5)
    assert run.path == str(out) and run.todo == [0, 1, 2, 3, 4] and run.threads is None
    assert run.rows == [row_of(i) for i in range(5)] == _lines(out)
    assert os.listdir(tmp_path) == ["r.jsonl"]
    with pytest.raises(ValueError, match=r"r.jsonl exists: pass --resume"):
        _plain_run(out, 5)


def test_single_process_resume_counts_every_shard_of_any_world_size(tmp_path):
    out = tmp_path / "r.jsonl"
    # A 3-rank run killed early, then a 2-rank run killed early (torn last lines included).
    _write(f"{out}.rank0-of-3", [row_of(0)], torn='{"index": 3')
    _write(f"{out}.rank2-of-3", [row_of(2)])
    _write(f"{out}.rank1-of-2", [row_of(4)], torn="{")
    with pytest.raises(ValueError, match=r"rank1-of-2 exists: pass --resume"):
        _plain_run(out, 8)
    with pytest.raises(KeyError):  # crash after one more row: it stays
        _plain_run(out, 8, resume=True, fail_at=3)
    assert _lines(out) == [row_of(1)]
    run = _plain_run(out, 8, resume=True)
    assert run.done == {0, 1, 2, 4} and run.todo == [3, 5, 6, 7]
    assert _lines(out) == [row_of(i) for i in range(8)] == run.rows
    assert os.listdir(tmp_path) == ["r.jsonl"]


def test_append_only_this_ranks_problems(tmp_path):
    with pytest.raises(ValueError, match=r"row index 7: rank 0 was given \[0, 1\]"):
        with torchrun.sharded_results(tmp_path / "r.jsonl", [0, 1], environ={}) as run:
            run.append(row_of(7))


def test_record_helpers_write_torchruns_error_file(tmp_path, monkeypatch):
    calls = []
    wrapped = torchrun.record(lambda x: calls.append(x) or 7)
    monkeypatch.delenv("TORCHELASTIC_ERROR_FILE", raising=False)
    assert wrapped(1) == 7 and calls == [1]  # plain run: untouched
    torchrun.record_error(ValueError("ignored"))  # plain run: a no-op
    err = tmp_path / "error.json"
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(err))
    try:
        raise ValueError("bad --limit -3")
    except ValueError as exc:
        torchrun.record_error(exc)
    message = json.loads(err.read_text())["message"]
    assert message["message"] == "ValueError: bad --limit -3"
    assert "raise ValueError" in message["extraInfo"]["py_callstack"]
    err.unlink()

    @torchrun.record
    def entry():
        raise KeyError("crashed")

    with pytest.raises(KeyError):
        entry()
    assert json.loads(err.read_text())["message"]["message"] == "KeyError: 'crashed'"


# ---------------------------------------------------------------- real torchrun runs (gloo)


def _launch(args, nproc=None, timeout=240):
    """The driver as a plain process (``nproc`` None) or under torchrun; returns (rc, output)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    cmd = [sys.executable]
    if nproc is not None:  # --standalone: a free local port, so parallel runs cannot collide
        cmd += ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    cmd += [DRIVER, *args]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)
    return p.returncode, p.stdout + p.stderr


N = 11


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "r.jsonl"
    rc, log = _launch(["--out", str(out), "--problems", str(N)])
    assert rc == 0, log
    rows = _lines(out)
    assert rows == [row_of(i) for i in range(N)]
    return rows


def test_torchrun_two_ranks_merge_equals_one_process(tmp_path, reference):
    out = tmp_path / "r.jsonl"
    rc, log = _launch(["--out", str(out), "--problems", str(N)], nproc=2)
    assert rc == 0, log
    assert _lines(out) == reference
    assert os.listdir(tmp_path) == ["r.jsonl"]  # shards merged and removed
    threads = max(1, len(os.sched_getaffinity(0)) // 2)
    assert f"rank 0/2 device cpu threads {threads} todo [0, 2, 4, 6, 8, 10]" in log
    assert f"rank 1/2 device cpu threads {threads} todo [1, 3, 5, 7, 9]" in log
    assert log.count(f"merged {N} rows") == 1  # rank 0 only


def test_torchrun_crashed_rank_fails_the_run_and_its_rows_resume(tmp_path, reference):
    out = tmp_path / "r.jsonl"
    rc, log = _launch(
        ["--out", str(out), "--problems", str(N), "--fail-rank", "1", "--fail-after", "2"], nproc=2
    )
    assert rc != 0
    # torchrun's summary: the root cause is rank 1 and its error.
    root = log.split("Root Cause (first observed failure):", 1)[1]
    assert re.search(r"rank\s*: 1 \(local_rank: 1\)", root), log
    assert "RuntimeError: injected failure on rank 1 at problem 5" in root
    # Rank 1's two rows stay; rank 0 wrote (a prefix of) its share before torchrun stopped it.
    assert _lines(f"{out}.rank1-of-2") == [row_of(1), row_of(3)]
    kept = _check_prefix(f"{out}.rank0-of-2", range(0, N, 2)) | {1, 3}
    assert not out.exists()
    # Resume in one process (world size 2 -> 1): only what is left is run.
    rc, log = _launch(["--out", str(out), "--problems", str(N), "--resume"])
    assert rc == 0, log
    assert f"todo {[i for i in range(N) if i not in kept]}" in log
    assert _lines(out) == reference
    assert os.listdir(tmp_path) == ["r.jsonl"]


def _check_prefix(path, share) -> set[int]:
    """The indices in shard ``path``, which must hold the rows of a prefix of ``share``."""
    rows = _lines(path)
    assert rows == [row_of(i) for i in list(share)[: len(rows)]]
    return {r["index"] for r in rows}


def test_torchrun_killed_rank_then_resume_on_three_ranks(tmp_path, reference):
    out = tmp_path / "r.jsonl"
    rc, log = _launch(
        [
            "--out",
            str(out),
            "--problems",
            str(N),
            "--fail-rank",
            "0",
            "--fail-after",
            "1",
            "--fail-mode",
            "kill",
        ],
        nproc=2,
    )
    assert rc != 0
    root = log.split("Root Cause (first observed failure):", 1)[1]
    assert re.search(r"rank\s*: 0 \(local_rank: 0\)", root) and "SIGKILL" in root, log
    assert _lines(f"{out}.rank0-of-2") == [row_of(0)]
    kept = _check_prefix(f"{out}.rank1-of-2", range(1, N, 2)) | {0}
    # Resume with 3 ranks (world size 2 -> 3): what is left is re-sharded over 3.
    rc, log = _launch(["--out", str(out), "--problems", str(N), "--resume"], nproc=3)
    assert rc == 0, log
    left = [i for i in range(N) if i not in kept]
    for r in range(3):
        assert f"rank {r}/3 device cpu" in log and f"todo {left[r::3]}" in log
    assert _lines(out) == reference
    assert os.listdir(tmp_path) == ["r.jsonl"]


def test_torchrun_refuses_existing_output_without_resume(tmp_path):
    out = tmp_path / "r.jsonl"
    _write(f"{out}.rank0-of-2", [row_of(0)])
    rc, log = _launch(["--out", str(out), "--problems", "4"], nproc=2)
    assert rc != 0 and "rank0-of-2 exists: pass --resume" in log
    assert _lines(f"{out}.rank0-of-2") == [row_of(0)] and not out.exists()
