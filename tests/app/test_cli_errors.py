"""CLI user errors: one line on stderr and exit status 2, before the model loads."""

import json
import os
import subprocess
import sys
import time

import pytest
import torch
from conftest import write_jsonl

from latentseek_fast.app import cli


@pytest.fixture
def no_load(monkeypatch):
    """Fail the test if the model would be loaded: every check here must come first."""

    def load_model(*a, **k):
        raise AssertionError("the model was loaded before the error was reported")

    monkeypatch.setattr("latentseek_fast.app.models.load_model", load_model)


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
    cmd = [sys.executable, "-m", "latentseek_fast", "run", "--model", "no-such-org/no-such-model"]
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


@pytest.mark.parametrize(
    "size,needle",
    [
        ("0", "--batch-size 0: expected 'auto' or an integer >= 1"),
        ("many", "--batch-size many: expected 'auto' or an integer >= 1"),
    ],
)
def test_batch_size_is_auto_or_a_positive_integer(no_load, data_file, tmp_path, capsys, size, needle):
    assert _eval(data_file, tmp_path / "r.jsonl", "--batch-size", size) == 2
    _one_line(capsys, needle)
    assert not (tmp_path / "r.jsonl").exists()


def test_tie_gap_below_zero(no_load, data_file, tmp_path, capsys):
    assert _eval(data_file, tmp_path / "r.jsonl", "--tie-gap", "-1") == 2
    _one_line(
        capsys, "--tie-gap -1.0: expected None (the default for the model's dtype) or a finite number >= 0"
    )


def test_dtype_checked_before_load(no_load, capsys):
    assert cli.main(["run", "--dtype", "float8"]) == 2
    _one_line(capsys, "dtype='float8'")


@pytest.mark.parametrize("cap", ["0", "-5"])
def test_verifier_tokens_below_one(no_load, data_file, tmp_path, capsys, cap):
    assert _eval(data_file, tmp_path / "r.jsonl", "--reward", "self", "--verifier-tokens", cap) == 2
    _one_line(capsys, f"--verifier-tokens {cap}: expected an integer >= 1")
    assert cli.main(["run", "--reward", "self", "--verifier-tokens", cap]) == 2
    _one_line(capsys, f"--verifier-tokens {cap}")


# ---------------------------------------------------------------- issue 23: checked before loading


@pytest.mark.parametrize("text", ["", "   "])
def test_blank_problem(no_load, capsys, text):
    assert cli.main(["run", "--problem", text]) == 2
    _one_line(capsys, f"--problem {text!r}: expected the text of a question")


def test_unknown_dataset(no_load, data_file, tmp_path, capsys):
    assert cli.main(["run", "--problem", "What is 1 + 1?", "--dataset", "foo"]) == 2
    _one_line(capsys, "--dataset foo: allowed values are gsm8k, math500, aime")
    assert _eval(data_file, tmp_path / "r.jsonl", "--dataset", "foo") == 2
    _one_line(capsys, "--dataset foo")
    assert not (tmp_path / "r.jsonl").exists()


def test_psrm_without_gold(no_load, capsys):
    assert cli.main(["run", "--problem", "What is 1 + 1?", "--reward", "psrm"]) == 2
    _one_line(capsys, "--reward psrm needs the ground truth of --problem: pass --gold")


def test_gold_without_problem_is_an_error(no_load, capsys):
    """The demo problem keeps its own ground truth, so a --gold without --problem is refused."""
    assert cli.main(["run", "--gold", "999"]) == 2
    _one_line(capsys, "--gold 999: it is the ground truth of --problem", "demo problem 1 has its own (10)")
    assert cli.main(["run", "--problem", "What is 1 + 1?", "--gold", " "]) == 2
    _one_line(capsys, "--gold ' ': expected a non-empty answer")


def test_hub_name_offline_and_not_cached(no_load, monkeypatch, tmp_path, capsys):
    """HF_HUB_OFFLINE and a name that is not in the local cache: the error comes before loading."""
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    assert cli.main(["run", "--model", "no-such-org/no-such-model", "--device", "cpu"]) == 2
    _one_line(capsys, "--model no-such-org/no-such-model: cannot load it", "HF_HUB_OFFLINE is set")


def test_hub_name_without_network_fails_at_once(tmp_path):
    """No connection to the Hub and nothing cached: one line within seconds (transformers alone
    retried for 49-56 s). The endpoint is a reserved name (.invalid never resolves), so the test
    sees the same whether or not this machine is online."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT="https://hub.invalid")
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        env.pop(var, None)
    cmd = [sys.executable, "-m", "latentseek_fast", "run", "--model", "nonexist", "--device", "cpu"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    seconds = time.perf_counter() - t0
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "--model nonexist: cannot load it" in errors[0], proc.stderr
    assert "hub.invalid:443 cannot be reached" in errors[0], errors[0]
    assert seconds < 30, f"{seconds:.0f} s: the hub was retried"


def test_triton_without_cuda_or_interpreter(no_load, monkeypatch, capsys):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert cli.main(["run", "--backend", "triton", "--device", "cpu"]) == 2
    _one_line(capsys, "--backend triton: cannot run: the latents are on cpu", "use --backend torch")


def _config_only_model(tmp_path, vocab, hidden):
    """A model directory whose config.json is all the CLI reads before loading."""
    d = tmp_path / f"m{vocab}x{hidden}"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"vocab_size": vocab, "hidden_size": hidden}))
    return str(d)


def test_triton_interpreter_on_a_real_head_is_refused(no_load, monkeypatch, data_file, tmp_path, capsys):
    """Under TRITON_INTERPRET=1 a 49152 x 576 head (the embedded model's) would take minutes a step:
    refused before the model loads, with the estimate and the opt-in."""
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.delenv("LATENTSEEK_INTERPRET_LARGE", raising=False)
    model = _config_only_model(tmp_path, 49152, 576)
    args = ["--backend", "triton", "--device", "cpu", "--model", model, "--max-steps", "2"]
    assert cli.main(["run", *args]) == 2
    _one_line(
        capsys,
        "--backend triton: under TRITON_INTERPRET=1",
        "49152 x 576 LM head",
        "per latent step",
        "for max_steps=2",
        "LATENTSEEK_INTERPRET_LARGE=1",
    )
    assert _eval(data_file, tmp_path / "r.jsonl", *args) == 2
    _one_line(capsys, "--backend triton: under TRITON_INTERPRET=1")
    assert not (tmp_path / "r.jsonl").exists()
    # The opt-in lets it through to loading (which this test forbids).
    monkeypatch.setenv("LATENTSEEK_INTERPRET_LARGE", "1")
    with pytest.raises(AssertionError, match="the model was loaded"):
        cli.main(["run", *args])


def test_start_past_the_data_leaves_no_file(no_load, tmp_path, capsys):
    data = tmp_path / "three.jsonl"
    rows = [{"question": f"Q{i}?", "answer": f"#### {i}"} for i in range(3)]
    write_jsonl(data, rows)
    out = tmp_path / "r.jsonl"
    for start in ("10", "3"):
        assert _eval(str(data), out, "--start", start) == 2
        _one_line(capsys, f"--start {start}: {data} has 3 rows", "0..2")
        assert not out.exists()
    assert _eval(str(data), out, "--limit", "0") == 2
    _one_line(capsys, "--limit 0: expected an integer >= 1")
    assert not out.exists()


def test_psrm_names_the_rows_without_gold(no_load, tmp_path, capsys):
    data = tmp_path / "gaps.jsonl"
    rows = [
        {"id": "a", "question": "Q0?", "answer": "#### 1"},
        {"id": "b", "question": "Q1?", "answer": None},
    ]
    write_jsonl(data, rows)
    assert _eval(str(data), tmp_path / "r.jsonl", "--reward", "psrm") == 2
    _one_line(capsys, f"--reward psrm: row 1 (id 'b') of {data} has no gold answer")
    assert not (tmp_path / "r.jsonl").exists()


def test_data_errors_name_the_flags(no_load, tmp_path, capsys):
    """Field names and splits are CLI options, and the messages say so."""
    custom = tmp_path / "custom.jsonl"
    custom.write_text(json.dumps({"q": "What is 1 + 1?", "a": "2"}) + "\n")
    out = tmp_path / "r.jsonl"
    assert _eval(str(custom), out) == 2
    _one_line(capsys, "pass --dataset (one of gsm8k, math500, aime)", "--question-field/--answer-field")
    assert _eval(str(custom), out, "--dataset", "math500") == 2
    _one_line(capsys, "no field 'problem' (the math500 default; pass --question-field")
    fields = ["--question-field", "q", "--answer-field", "x"]
    assert _eval(str(custom), out, "--dataset", "math500", *fields) == 2
    _one_line(capsys, "--answer-field x: no such field; fields present: ['q', 'a']")
    assert _eval(str(custom), out, "--split", "test") == 2
    _one_line(capsys, f"--split test: {custom} is a file")
    folder = tmp_path / "dd"
    for split in ("train", "validation"):
        (folder / split).mkdir(parents=True)
        (folder / split / "rows.jsonl").write_text(json.dumps({"q": "Q?", "a": "1"}) + "\n")
    (folder / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "validation"]}))
    assert _eval(str(folder), out) == 2
    _one_line(capsys, "it holds the splits ['train', 'validation']; choose one with --split")
    assert not out.exists()


@pytest.mark.parametrize("lr", ["1e38", "1000", "0"])
def test_lr_out_of_range_names_the_option(no_load, data_file, tmp_path, capsys, lr):
    """--lr 1e38 used to fail after the model loaded, with internals (``hidden must be finite``)."""
    want = f"--lr {float(lr)}: expected 0 < lr <= 100 (Adam moves every latent element by about lr per step"
    assert cli.main(["run", "--lr", lr]) == 2
    _one_line(capsys, want)
    assert _eval(data_file, tmp_path / "r.jsonl", "--lr", lr) == 2
    _one_line(capsys, want)
