"""What the command line checks before anything slow: each error is a ``CLIError`` (one line,
exit status 2), raised before the model loads whenever the flags alone can tell."""

from __future__ import annotations

import os
import re
import sys

from ...backends import interpreter_refusal, triton_unavailable_reason
from ..data import DATASETS
from ..results import read_results
from ..torchrun import find_shards


class CLIError(Exception):
    """A user error reported as one line and exit status 2."""


class Interrupted(Exception):
    """Ctrl-C, reported as one line (``interrupted: ...``) and exit status 130 (128 + SIGINT)."""


_HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


def check_model(name: str | None) -> None:
    """What can be known about ``--model`` without loading it: paths must exist and be models."""
    # models imports torch: imported only when a command checks its model (not for --help).
    from ..models import EMBEDDED_NAME, embedded_gguf_path, hub_unavailable_reason

    if name is None or name == EMBEDDED_NAME:
        embedded_gguf_path()  # a clear RuntimeError when the package is missing
    elif name.endswith(".gguf"):
        if not os.path.isfile(name):
            raise CLIError(f"--model {name}: no such GGUF file")
    elif os.path.isdir(name):
        if not os.path.exists(os.path.join(name, "config.json")):
            raise CLIError(f"--model {name}: the directory has no config.json (not a Hugging Face model)")
    elif os.path.exists(name):
        raise CLIError(f"--model {name}: a file; expected a .gguf file or a Hugging Face model directory")
    elif name.startswith(("/", ".", "~")) or os.sep in name.strip(os.sep) and not _HUB_NAME.fullmatch(name):
        raise CLIError(f"--model {name}: no such directory")
    else:  # a Hub name ("org/model"): offline and not cached, it cannot load (else only loading tells)
        why = hub_unavailable_reason(name)
        if why is not None:
            raise CLIError(f"--model {name}: cannot load it: {why}")


def check_dataset(args) -> None:
    """``--dataset``, when given, is one of ``DATASETS``."""
    if args.dataset is not None and args.dataset not in DATASETS:
        raise CLIError(f"--dataset {args.dataset}: allowed values are {', '.join(DATASETS)}")


def preflight(args) -> None:
    """Check --threads, --dtype, --device and --model before anything slow (exit 2, one line)."""
    import torch  # heavy: imported once a command runs, so that --help and parse errors stay instant

    from ..models import parse_dtype  # imports torch, as above

    if args.threads is not None and args.threads < 1:
        raise CLIError(f"--threads {args.threads}: expected an integer >= 1")
    if args.verifier_tokens is not None and args.verifier_tokens < 1:
        raise CLIError(f"--verifier-tokens {args.verifier_tokens}: expected an integer >= 1")
    check_dataset(args)
    parse_dtype(args.dtype)
    if args.device is not None:
        try:
            dev = torch.device(args.device)
        except (RuntimeError, ValueError):
            dev = None
        if dev is None or dev.type not in ("cpu", "cuda"):
            raise CLIError(f"--device {args.device}: expected cpu, cuda or cuda:N")
        if dev.type == "cuda":
            if not torch.cuda.is_available():
                raise CLIError(
                    f"--device {args.device}: CUDA is not available (torch {torch.__version__}, "
                    f"CUDA build: {torch.version.cuda or 'none'}); use --device cpu"
                )
            if dev.index is not None and dev.index >= torch.cuda.device_count():
                raise CLIError(
                    f"--device {args.device}: only {torch.cuda.device_count()} CUDA device(s) visible"
                )
    check_model(args.model)


def default_device(args) -> str:
    """``--device``, else ``cuda`` when CUDA is available, else ``cpu``."""
    import torch  # heavy, as in preflight

    return args.device or ("cuda" if torch.cuda.is_available() else "cpu")


def check_interpreter(args, device: str, shape: tuple[int, int] | None) -> None:
    """``--backend triton`` under Triton's interpreter on a large LM head: refused (one line)."""
    why = None if shape is None else interpreter_refusal(device, shape, args.max_steps)
    if why is not None:
        raise CLIError(f"--backend triton: {why}")


def check_backend(args) -> None:
    """``--backend triton`` before the model loads: it must be able to run on the device, and the
    interpreter is refused on a large head when the model's shape is known without loading it
    (``models.head_shape``; otherwise ``load_model_for`` checks right after loading, before decoding)."""
    if args.backend != "triton":
        return
    from ..models import head_shape  # imports torch, as in check_model

    device = default_device(args)
    why = triton_unavailable_reason(device)
    if why is not None:
        raise CLIError(f"--backend triton: cannot run: {why}; use --backend torch or auto")
    check_interpreter(args, device, head_shape(args.model))


def check_out_dir(out: str) -> None:
    """``--out`` is a file path in a folder that exists."""
    if os.path.isdir(out):
        raise CLIError(
            f"--out {out}: a directory; expected a results file path, "
            f"e.g. {os.path.join(out, 'results.jsonl')}"
        )
    d = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(d):
        raise CLIError(f"--out {out}: the directory {d} does not exist")


def check_eval_flags(args) -> None:
    """``eval``'s own numbers, ``--out`` and ``--dataset``, before the data file is read."""
    if args.batch_size != "auto" and (isinstance(args.batch_size, str) or args.batch_size < 1):
        raise CLIError(f"--batch-size {args.batch_size}: expected 'auto' or an integer >= 1")
    if args.start < 0:
        raise CLIError(f"--start {args.start}: expected an integer >= 0")
    if args.limit is not None and args.limit < 1:
        raise CLIError(f"--limit {args.limit}: expected an integer >= 1")
    check_out_dir(args.out)
    check_dataset(args)


def select_rows(args, problems) -> list[int]:
    """The indices ``--start``/``--limit`` select from ``problems``; a ``--start`` past the last
    row is an error (an empty selection would write an empty results file)."""
    if args.start >= len(problems):
        raise CLIError(
            f"--start {args.start}: {args.data} has {len(problems)} rows, so --start must be "
            f"0..{len(problems) - 1}"
        )
    stop = len(problems) if args.limit is None else min(len(problems), args.start + args.limit)
    return list(range(args.start, stop))


def check_rows_match(rows: list[dict], problems, out: str) -> None:
    """Rows of ``out`` must come from this data file: the id at each index must match."""
    for r in rows:
        i = r["index"]
        if i < len(problems) and r["id"] != problems[i].id:
            raise CLIError(
                f"{out}: the row for problem {i} has id {r['id']!r} but --data has {problems[i].id!r} "
                "there; it was written from another data file (choose another --out)"
            )


def check_rows_match_files(out: str, problems) -> None:
    """On ``--resume``: the rows of ``out`` and of its rank shards must come from this data file."""
    for path in [out, *find_shards(out)]:
        check_rows_match(read_results(path), problems, path)


def _name_rows(problems, indices: list[int], data: str, most: int = 5) -> str:
    """``rows 3 (id 'a'), 7 (id 'b') and 2 more of FILE``: which rows of ``data`` are meant."""
    named = ", ".join(f"{i} (id {problems[i].id!r})" for i in indices[:most])
    more = f" and {len(indices) - most} more" if len(indices) > most else ""
    return f"row{'s' if len(indices) > 1 else ''} {named}{more} of {data}"


def check_gold(args, problems, selected: list[int]) -> None:
    """Selected problems without a gold answer (null or blank): an error under ``--reward psrm``
    naming them; under the default reward a note on stderr, since they are scored with
    self-reward while the others get PSRM (their rows say ``"reward": "self"``)."""
    missing = [i for i in selected if problems[i].gold is None]
    if not missing or args.reward == "self":
        return
    rows = _name_rows(problems, missing, args.data)
    if args.reward == "psrm":
        raise CLIError(
            f"--reward psrm: {rows} {'have' if len(missing) > 1 else 'has'} no gold answer (null or "
            f"blank); fix the data, choose another --answer-field, or leave out --reward to score "
            f"{'them' if len(missing) > 1 else 'it'} with self-reward"
        )
    others = len(selected) - len(missing)
    print(
        f"note: {rows} {'have' if len(missing) > 1 else 'has'} no gold answer: scored with self-reward"
        + (f" (the other {others} with PSRM)" if others else ""),
        file=sys.stderr,
    )
