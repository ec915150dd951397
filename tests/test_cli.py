"""The CLI on a tiny saved model: run, eval, and a resume after a torn write."""

import json
import re

import pytest
from conftest import make_tiny_model

from latentseek_fast import cli


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer):
    d = tmp_path_factory.mktemp("tiny")
    make_tiny_model().save_pretrained(d)
    tokenizer.save_pretrained(d)
    return str(d)


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("data") / "mini.jsonl"
    rows = [
        {"question": f"What is {i} + {i}?", "answer": f"{i} + {i} = {2 * i}\n#### {2 * i}"} for i in range(4)
    ]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(p)


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
