"""The CLI on a tiny saved model: run, eval, a resume after a torn write, and Ctrl-C."""

import json
import re
import signal
import subprocess
import sys
import time

import pytest
from conftest import make_tiny_model, write_jsonl

from latentseek_fast.app import cli


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer):
    d = tmp_path_factory.mktemp("tiny")
    make_tiny_model().save_pretrained(d)
    tokenizer.save_pretrained(d)
    return str(d)


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    rows = [
        {"question": f"What is {i} + {i}?", "answer": f"{i} + {i} = {2 * i}\n#### {2 * i}"} for i in range(4)
    ]
    return str(write_jsonl(tmp_path_factory.mktemp("data") / "mini.jsonl", rows))


FAST = ["--max-new-tokens", "6", "--max-steps", "1", "--rho", "0.5", "--threads", "1"]


def test_run_json(model_dir, capsys):
    assert (
        cli.main(["run", "--model", model_dir, "--problem", "What is 1+1?", "--gold", "2", "--json", *FAST])
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["gold"] == "2" and out["original_length"] == 6 and len(out["rewards"]) == out["iterations"] + 1
    assert out["rewards"][0] == -1.0  # PSRM on a random model's answer


def test_run_text_shows_iterations(model_dir, capsys):
    assert cli.main(["run", "--model", model_dir, "--demo", "0", *FAST]) == 0
    out = capsys.readouterr().out
    assert "original answer" in out and "final answer" in out and "iteration 1: reward" in out


def test_eval_resume_after_torn_write(model_dir, data_file, tmp_path, capsys):
    out = tmp_path / "res.jsonl"
    args = ["eval", "--model", model_dir, "--data", data_file, "--out", str(out), *FAST]
    assert cli.main([*args, "--limit", "2"]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["index"] for r in rows] == [0, 1]
    # A run killed mid-write leaves a torn last line; a resume drops it and redoes only that problem.
    with open(out, "a") as f:
        f.write('{"index": 2, "id": "x", "quest')
    assert cli.main([*args, "--resume"]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert sorted(r["index"] for r in rows) == [0, 1, 2, 3]
    summary = capsys.readouterr().out
    assert "| 4 |" in summary and "original acc" in summary
    # Without --resume an existing file is never overwritten.
    assert cli.main(args) == 2
    assert len(out.read_text().splitlines()) == 4


def test_eval_bad_field(model_dir, tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text(json.dumps({"prompt": "x"}) + "\n")
    assert cli.main(["eval", "--model", model_dir, "--data", str(p), "--out", str(tmp_path / "o.jsonl")]) == 2


def test_null_gold_is_scored_with_self_reward_and_said(model_dir, tmp_path, capsys):
    """A row without a gold answer among rows with one: self-reward for it, said up front, in its
    row (``reward``) and in the summary; the other rows keep PSRM."""
    data = tmp_path / "gaps.jsonl"
    rows = [
        {"id": "a", "question": "What is 1 + 1?", "answer": "#### 2"},
        {"id": "b", "question": "What is 2 + 2?", "answer": None},
    ]
    write_jsonl(data, rows)
    out = tmp_path / "res.jsonl"
    argv = ["eval", "--model", model_dir, "--data", str(data), "--out", str(out), "--json", *FAST]
    assert cli.main([*argv, "--verifier-tokens", "2"]) == 0
    got = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert (got["a"]["reward"], got["b"]["reward"]) == ("psrm", "self")
    captured = capsys.readouterr()
    assert f"note: row 1 (id 'b') of {data} has no gold answer: scored with self-reward" in captured.err
    assert "1 of 2 problems had no gold answer: scored with self-reward" in captured.out
    assert json.loads(captured.out.strip().splitlines()[-1])["no_gold"] == 1


def test_eval_fields_and_split_from_the_command_line(model_dir, tmp_path):
    """--question-field/--answer-field/--split reach the loader: a DatasetDict folder of q/a rows."""
    folder = tmp_path / "dd"
    for split, n in (("train", 1), ("dev", 2)):
        (folder / split).mkdir(parents=True)
        rows = [{"q": f"What is {i} + {i}?", "a": str(2 * i)} for i in range(n)]
        write_jsonl(folder / split / "rows.jsonl", rows)
    (folder / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "dev"]}))
    out = tmp_path / "res.jsonl"
    flags = ["--dataset", "gsm8k", "--question-field", "q", "--answer-field", "a", "--split", "dev"]
    assert (
        cli.main(["eval", "--model", model_dir, "--data", str(folder), "--out", str(out), *flags, *FAST]) == 0
    )
    rows = sorted(map(json.loads, out.read_text().splitlines()), key=lambda r: r["index"])
    assert [(r["question"], r["gold"], r["reward"]) for r in rows] == [
        ("What is 0 + 0?", "0", "psrm"),
        ("What is 1 + 1?", "2", "psrm"),
    ]


def test_ctrl_c_during_eval_is_one_line_and_resume_finishes(model_dir, tmp_path):
    """SIGINT once rows are being written: one ``interrupted:`` line naming the rows and the file,
    exit status 130, no traceback; ``--resume`` then finishes the run."""
    data = tmp_path / "many.jsonl"  # far more than can finish between the first row and the signal
    rows = [{"question": f"What is {i} + {i}?", "answer": f"#### {2 * i}"} for i in range(2000)]
    write_jsonl(data, rows)
    out = tmp_path / "res.jsonl"
    argv = ["eval", "--model", model_dir, "--data", str(data), "--out", str(out), "--batch-size", "1", *FAST]
    proc = subprocess.Popen(
        [sys.executable, "-m", "latentseek_fast", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A shell without job control starts background jobs with SIGINT ignored; undo that here.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 240
        while not (out.exists() and out.read_text().count("\n") >= 1):
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "no row was written within 240 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    n = out.read_text().count("\n")
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    last = err.strip().splitlines()[-1]
    word = "row" if n == 1 else "rows"
    assert last == f"interrupted: {n} {word} written to {out}; run the same command with --resume to finish"
    assert 1 <= n < len(rows)
    # The rows are whole; a resume over the first n + 2 problems runs only the missing ones.
    assert cli.main([*argv, "--resume", "--limit", str(n + 2)]) == 0
    assert sorted(json.loads(x)["index"] for x in out.read_text().splitlines()) == list(range(n + 2))


def test_eval_refuses_a_prompt_past_the_context_before_decoding(tokenizer, tmp_path, capsys):
    """A problem whose prompt fills the model's context (max_position_embeddings) stops eval with
    one line naming its index and id and both lengths, before any problem is decoded."""
    d = tmp_path / "short-context"
    make_tiny_model(hidden=32, layers=1, max_positions=160).save_pretrained(d)
    tokenizer.save_pretrained(d)
    data = tmp_path / "long.jsonl"
    rows = [
        {"id": "short", "question": "What is 1 + 1?", "answer": "#### 2"},
        {
            "id": "long",
            "question": "Add these numbers: " + " + ".join(["1"] * 150) + ".",
            "answer": "#### 150",
        },
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "res.jsonl"
    assert cli.main(["eval", "--model", str(d), "--data", str(data), "--out", str(out), *FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err)
    assert re.fullmatch(
        r"error: problem 1 \(id 'long'\): the prompt is \d+ tokens and the model's context "
        r"\(config.max_position_embeddings\) is 160 positions: no room for an answer .*",
        err[-1],
    ), err
    assert not out.exists() or out.read_text() == ""  # problem 0 was not decoded either
