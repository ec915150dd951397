"""``run`` and ``eval`` show self-reward verifier replies as they decode (``VerifyProgress``):
the printers alone, then the commands on a tiny saved model."""

from __future__ import annotations

import io

from conftest import write_jsonl

from latentseek_fast.app import cli
from latentseek_fast.app.cli.progress import LOG_EVERY_SECONDS, EvalProgress, RunProgress
from latentseek_fast.engine import DecodeProgress, IterationDone, OriginalDone, OriginalToken, VerifyProgress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def verifying(answer, done, tokens, index=0):
    return VerifyProgress(index, answer, done, 4, tokens, tokens / 20, 20.0)


def test_run_progress_on_a_terminal_rewrites_one_status_line():
    out = Terminal()
    show = RunProgress(out)
    show(OriginalToken(0, 5, "Five"))
    for done, tokens in ((0, 0), (0, 40), (1, 90), (4, 200)):
        show(verifying(0, done, tokens))
    show(OriginalDone(0, "Five", 1, -0.5, 0.1, 10.0))
    show(verifying(1, 0, 0))
    show(verifying(1, 2, 64))
    show(IterationDone(0, 1, -1.0, 3, 0.2, 15.0, 3))
    text = out.getvalue()
    first, rest = text.split("\n", 1)
    assert first == "Five"  # the streamed answer keeps its line
    status, reward = rest.split("\n", 1)[0].rsplit("\r\x1b[K", 1)  # cleared for the reward line
    # each event rewrites the same line (carriage return, clear to its end)
    assert status.count("\r") == 4 and status.count("\x1b[K") == 4
    assert "\rscoring the original answer: verifier replies 1/4, 90 tokens, 20.0 tokens/s\x1b[K" in status
    assert reward == "--- original answer: reward -0.500, 1 tokens, 10.0 tokens/s ---"
    assert "\rscoring the answer of iteration 1: verifier replies 2/4, 64 tokens, 20.0 tokens/s" in text
    assert text.endswith("\r\x1b[Kiteration 1: reward -1.000, 3 tokens, 15.0 tokens/s\n")


def test_run_progress_in_a_log_writes_lines_when_replies_finish():
    """Without a terminal: a line at the start and as each reply finishes, and in between at
    most every LOG_EVERY_SECONDS."""
    assert LOG_EVERY_SECONDS == 10.0
    clock = iter([0.0, 1.0, 2.0, 12.0, 13.0, 14.0])
    out = io.StringIO()
    show = RunProgress(out)
    show.clock = lambda: next(clock)
    show(OriginalToken(0, 5, "Five"))
    for done, tokens in ((0, 0), (0, 10), (0, 20), (0, 30), (1, 40), (1, 50)):
        show(verifying(0, done, tokens))
    show(OriginalDone(0, "Five", 1, -0.5, 0.1, 10.0))
    lines = out.getvalue().split("\n")
    assert lines[0] == "Five" and "\r" not in out.getvalue()
    shown = [ln for ln in lines if ln.startswith("scoring")]
    assert [ln.split(", ")[1] for ln in shown] == ["0 tokens", "30 tokens", "40 tokens"]
    assert lines[len(shown) + 1] == "--- original answer: reward -0.500, 1 tokens, 10.0 tokens/s ---"


def test_run_progress_shows_a_decoding_continuation():
    out = Terminal()
    show = RunProgress(out)
    show(DecodeProgress(0, 2, 300, 10.0, 30.0))
    show(DecodeProgress(0, 2, 600, 20.0, 30.0))
    show(verifying(2, 0, 0))
    show(IterationDone(0, 2, -1.0, 640, 21.0, 30.0, 610))
    assert out.getvalue() == (
        "\rdecoding the answer of iteration 2: 300 tokens, 30.0 tokens/s\x1b[K"
        "\rdecoding the answer of iteration 2: 600 tokens, 30.0 tokens/s\x1b[K"
        "\rscoring the answer of iteration 2: verifier replies 0/4, 0 tokens, 20.0 tokens/s\x1b[K"
        "\r\x1b[Kiteration 2: reward -1.000, 640 tokens, 30.0 tokens/s\n"
    )


def test_eval_progress_shows_the_latest_verifier_progress():
    bar = EvalProgress(2, enabled=False)
    bar(verifying(2, 3, 120, index=1))
    assert bar.verify == (
        1,
        "problem 1, the answer of iteration 2: verifier replies 3/4, 120 tokens, 20.0 tokens/s",
    )
    bar(IterationDone(0, 1, -1.0, 3, 0.2, 15.0, 3))  # another problem's answer: still shown
    assert bar.verify[0] == 1
    bar(IterationDone(1, 2, -1.0, 3, 0.2, 15.0, 3))
    assert bar.verify is None and bar.tokens == 6
    bar.close()


FAST = [
    "--max-new-tokens",
    "6",
    "--max-steps",
    "1",
    "--rho",
    "0.5",
    "--threads",
    "1",
    "--verifier-tokens",
    "3",
]


def test_run_prints_verifier_progress(tiny_model_dir, capsys):
    assert cli.main(["run", "--model", tiny_model_dir, "--demo", "0", "--reward", "self", *FAST]) == 0
    out = capsys.readouterr().out
    # a line at the start and as replies finish (replies that end together: one line)
    lines = [ln for ln in out.splitlines() if ln.startswith("scoring the original answer: verifier replies ")]
    dones = [int(ln.split("replies ")[1].split("/")[0]) for ln in lines]
    assert dones[0] == 0 and dones[-1] == 4 and dones == sorted(set(dones))
    assert out.index("verifier replies 4/4") < out.index("--- original answer: reward")


def test_eval_prints_verifier_progress(tiny_model_dir, tmp_path, capsys):
    data = write_jsonl(
        tmp_path / "d.jsonl", [{"question": f"What is {i} + {i}?", "answer": "#### 0"} for i in range(2)]
    )
    out = tmp_path / "res.jsonl"
    argv = ["eval", "--model", tiny_model_dir, "--data", str(data), "--out", str(out), "--reward", "self"]
    assert cli.main([*argv, "--batch-size", "2", *FAST]) == 0
    err = capsys.readouterr().err
    assert "verifying=problem 0, the original answer: verifier replies" in err
    assert "verifying=problem 1, the original answer: verifier replies" in err
