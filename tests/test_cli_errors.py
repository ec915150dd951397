"""CLI user errors: one line on stderr and exit status 2, before the model loads."""

import json
import os
import subprocess
import sys

import pytest
import torch

from latentseek_fast import cli


@pytest.fixture
def no_load(monkeypatch):
    """Fail the test if the model would be loaded: every check here must come first."""

    def load_model(*a, **k):
        raise AssertionError("the model was loaded before the error was reported")

    monkeypatch.setattr("latentseek_fast.models.load_model", load_model)


@pytest.fixture
def data_file(tmp_path):
    p = tmp_path / "mini.jsonl"
    p.write_text(json.dumps({"question": "What is 1 + 1?", "answer": "#### 2"}) + "\n")
    return str(p)


def _one_line(capsys, *needles):
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for n in needles:
        assert n in lines[0], lines[0]


def _eval(data_file, out, *extra):
    return cli.main(["eval", "--data", data_file, "--out", str(out), *extra])


def test_device_cuda_without_cuda(no_load, monkeypatch, data_file, tmp_path, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "r.jsonl"
    assert _eval(data_file, out, "--device", "cuda") == 2
    _one_line(capsys, "--device cuda: CUDA is not available", "--device cpu")
    assert not out.exists()  # the new file is removed again: no --resume needed next time
    assert cli.main(["run", "--device", "cuda:0"]) == 2
    _one_line(capsys, "--device cuda:0: CUDA is not available")


def test_device_unknown(no_load, data_file, tmp_path, capsys):
    assert _eval(data_file, tmp_path / "r.jsonl", "--device", "gpu") == 2
    _one_line(capsys, "--device gpu: expected cpu, cuda or cuda:N")


def test_model_missing_directory(no_load, data_file, tmp_path, capsys):
    missing = str(tmp_path / "no" / "such-model")
    assert _eval(data_file, tmp_path / "r.jsonl", "--model", missing) == 2
    _one_line(capsys, f"--model {missing}: no such directory")
    assert cli.main(["run", "--model", "./not-here"]) == 2
    _one_line(capsys, "--model ./not-here: no such directory")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["run", "--model", str(empty)]) == 2
    _one_line(capsys, "no config.json")
    assert cli.main(["run", "--model", str(tmp_path / "m.gguf")]) == 2
    _one_line(capsys, "no such GGUF file")


def test_model_unreachable_hub_name_is_one_line(tmp_path):
    """A name that looks like a Hub id can only be tried; offline, the OSError becomes one line."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    cmd = [sys.executable, "-m", "latentseek_fast.cli", "run", "--model", "no-such-org/no-such-model"]
    proc = subprocess.run(cmd + ["--device", "cpu"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "--model no-such-org/no-such-model: cannot load it" in errors[0]


def test_out_in_missing_directory(no_load, data_file, tmp_path, capsys):
    out = tmp_path / "missing" / "r.jsonl"
    assert _eval(data_file, out, "--device", "cpu") == 2
    _one_line(capsys, f"--out {out}: the directory {out.parent} does not exist")


@pytest.mark.parametrize("threads", ["0", "-2"])
def test_threads_below_one(no_load, data_file, tmp_path, capsys, threads):
    assert _eval(data_file, tmp_path / "r.jsonl", "--threads", threads) == 2
    _one_line(capsys, f"--threads {threads}: expected an integer >= 1")
    assert cli.main(["run", "--threads", threads]) == 2
    _one_line(capsys, f"--threads {threads}")


def test_dtype_checked_before_load(no_load, capsys):
    assert cli.main(["run", "--dtype", "float8"]) == 2
    _one_line(capsys, "dtype='float8'")


@pytest.mark.parametrize("cap", ["0", "-5"])
def test_verifier_tokens_below_one(no_load, data_file, tmp_path, capsys, cap):
    assert _eval(data_file, tmp_path / "r.jsonl", "--reward", "self", "--verifier-tokens", cap) == 2
    _one_line(capsys, f"--verifier-tokens {cap}: expected an integer >= 1")
    assert cli.main(["run", "--reward", "self", "--verifier-tokens", cap]) == 2
    _one_line(capsys, f"--verifier-tokens {cap}")


@pytest.mark.parametrize("lr", ["1e38", "1000", "0"])
def test_lr_out_of_range_names_the_option(no_load, data_file, tmp_path, capsys, lr):
    """--lr 1e38 used to fail after the model loaded, with internals (``hidden must be finite``)."""
    want = f"--lr {float(lr)}: expected 0 < lr <= 100 (Adam moves every latent element by about lr per step"
    assert cli.main(["run", "--lr", lr]) == 2
    _one_line(capsys, want)
    assert _eval(data_file, tmp_path / "r.jsonl", "--lr", lr) == 2
    _one_line(capsys, want)
