"""Loading evaluation problems: GSM8K, MATH-500 and AIME 2024, from the files they ship as.

Formats: JSON lines, JSON (a list of rows, a ``{"data": [...]}``-style wrapper, or columns),
Parquet, Arrow files and ``datasets.save_to_disk`` folders (``state.json`` + ``data-*.arrow``
in Arrow streaming format, or a ``DatasetDict`` folder with ``dataset_dict.json`` and one
sub-folder per split). Folders are read with pyarrow only; the ``datasets`` package is not needed.

Field names per data set (``docs/algorithm.md``, "Prompts, data and scoring"): GSM8K
``question``/``answer`` (gold = the number after ``####``, ``gsm8k_gold``), MATH-500
``problem``/``answer``, AIME 2024 ``Problem``/``Answer`` (matched case-insensitively, so the
``problem``/``answer`` rows of ``aime24_test.jsonl`` load as they are). The data set names
(``DATASETS``, ``check_dataset``) live here, since loaders, prompts, extraction and judging all
take one.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from .._util import check_choice

__all__ = [
    "DATASETS",
    "DEFAULT_FIELDS",
    "OPTION_NAMES",
    "Problem",
    "check_dataset",
    "detect_dataset",
    "gsm8k_gold",
    "load_problems",
    "read_rows",
]

DATASETS = ("gsm8k", "math500", "aime")

# dataset -> (question field, answer field)
DEFAULT_FIELDS = {
    "gsm8k": ("question", "answer"),
    "math500": ("problem", "answer"),
    "aime": ("Problem", "Answer"),
}
_ID_FIELDS = ("id", "ID", "unique_id", "idx", "problem_id")
_FILENAME_HINTS = (("gsm8k", "gsm8k"), ("gsm", "gsm8k"), ("aime", "aime"), ("math", "math500"))
_WRAPPER_KEYS = ("data", "rows", "examples", "problems", "test", "train", "instances", "items")

# How the errors of ``load_problems`` tell the user to set an option: by default its keyword
# arguments; the CLI passes its flags (``{"dataset": "--dataset", ...}``) as ``option_names``.
OPTION_NAMES = {
    "dataset": "dataset=",
    "question_field": "question_field=",
    "answer_field": "answer_field=",
    "split": "split=",
}


def _option(names: dict, key: str, value) -> str:
    """How option ``key`` set to ``value`` is written: ``split='train'`` or ``--split train``."""
    name = names[key]
    return f"{name}{value!r}" if name.endswith("=") else f"{name} {value}"


def check_dataset(dataset: str) -> str:
    """``dataset`` if it is one of ``DATASETS``, else a ValueError naming the allowed values."""
    return check_choice("dataset", dataset, DATASETS)


def gsm8k_gold(answer_field: str) -> str:
    """The ground truth of a GSM8K answer: the text after the last ``####``, commas stripped.

    A field without ``####`` is taken as the bare answer (handy for hand-written files).
    """
    if not isinstance(answer_field, str):
        raise ValueError(f"GSM8K answer field {answer_field!r}: expected a string")
    text = answer_field.rsplit("####", 1)[-1]
    return text.strip().replace(",", "").rstrip(".").strip()


@dataclass
class Problem:
    """One evaluation problem. ``gold`` is the normalised ground truth (None when unknown);
    ``meta`` keeps the row's other fields (e.g. ``solution``, ``level``, ``subject``)."""

    id: str
    question: str
    gold: str | None
    dataset: str
    meta: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------- raw rows


def _read_arrow_file(path: Path) -> list[dict]:
    import pyarrow as pa  # heavy: only for Arrow files

    try:  # datasets writes the streaming format
        with pa.memory_map(str(path)) as src:
            return pa.ipc.open_stream(src).read_all().to_pylist()
    except pa.ArrowInvalid:
        with pa.memory_map(str(path)) as src:
            return pa.ipc.open_file(src).read_all().to_pylist()


def _read_parquet(path: Path) -> list[dict]:
    import pyarrow.parquet as pq  # heavy: only for Parquet files

    return pq.read_table(str(path)).to_pylist()


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8-sig") as f:  # -sig: a leading BOM (Windows tools write one) is skipped
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not a JSON line ({e.msg})") from e
    return rows


def _rows_from_json_value(value, path: Path) -> list[dict]:
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        for key in _WRAPPER_KEYS:
            if isinstance(value.get(key), list):
                return value[key]
        lists = {k: v for k, v in value.items() if isinstance(v, list)}
        if len(lists) == 1:
            return next(iter(lists.values()))
        if lists and len(lists) == len(value) and len({len(v) for v in lists.values()}) == 1:
            # column layout: {"question": [...], "answer": [...]}
            names = list(lists)
            return [dict(zip(names, vals)) for vals in zip(*lists.values())]
        if len(value) == 1 and isinstance(next(iter(value.values())), dict):
            return _rows_from_json_value(next(iter(value.values())), path)
    raise ValueError(
        f'{path}: expected a JSON list of rows or an object such as {{"data": [...]}}, '
        f"got {type(value).__name__}"
        + (f" with keys {sorted(value)[:10]}" if isinstance(value, dict) else "")
    )


def _read_json(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8-sig")  # a leading BOM is skipped
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return _read_jsonl(path)  # a .json file holding JSON lines
    return _rows_from_json_value(value, path)


def _read_folder(path: Path, split: str | None, names: dict) -> list[dict]:
    dict_file = path / "dataset_dict.json"
    if dict_file.is_file():  # DatasetDict.save_to_disk: one folder per split
        splits = json.loads(dict_file.read_text()).get("splits") or sorted(
            p.name for p in path.iterdir() if p.is_dir()
        )
        if split is None:
            split = "test" if "test" in splits else (splits[0] if len(splits) == 1 else None)
        if split is None or split not in splits:
            asked = f"no split {split!r}: " if split is not None else ""
            raise ValueError(
                f"{path}: {asked}it holds the splits {splits}; choose one with {names['split']} "
                f"or pass the split folder, e.g. {path / splits[0]}"
            )
        return _read_folder(path / split, None, names)
    if split is not None:
        raise ValueError(
            f"{_option(names, 'split', split)}: {path} is not a DatasetDict folder (no dataset_dict.json), "
            "so it has no splits"
        )
    state = path / "state.json"
    if state.is_file():
        files = [d["filename"] for d in json.loads(state.read_text()).get("_data_files", [])]
        paths = [path / f for f in files] or sorted(path.glob("data-*.arrow"))
    else:
        paths = sorted(path.glob("*.arrow")) or sorted(path.glob("*.parquet")) or sorted(path.glob("*.jsonl"))
    if not paths:
        present = sorted(p.name for p in path.iterdir())[:20]
        raise ValueError(
            f"{path}: no state.json, dataset_dict.json or data files (*.arrow, *.parquet, "
            f"*.jsonl) found; it contains {present}"
        )
    rows: list[dict] = []
    for p in paths:
        rows.extend(_read_file(p))
    return rows


def _read_file(path: Path) -> list[dict]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _read_jsonl(path)
    if suffix == ".json":
        return _read_json(path)
    if suffix in (".parquet", ".pq"):
        return _read_parquet(path)
    if suffix == ".arrow":
        return _read_arrow_file(path)
    raise ValueError(
        f"{path}: unknown file type {suffix!r}; expected .jsonl, .json, .parquet, .arrow "
        "or a datasets.save_to_disk folder"
    )


def read_rows(path, split: str | None = None, option_names: dict | None = None) -> list[dict]:
    """The raw rows (dicts) of a data file or ``save_to_disk`` folder. ``split`` picks a split of
    a ``DatasetDict`` folder; anything else has none, and a ``split`` given for it is an error."""
    names = {**OPTION_NAMES, **(option_names or {})}
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no data file or folder at {path}")
    if path.is_dir():
        rows = _read_folder(path, split, names)
    elif split is not None:
        raise ValueError(
            f"{_option(names, 'split', split)}: {path} is a file; only a DatasetDict folder has splits"
        )
    else:
        rows = _read_file(path)
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValueError(f"{path}: row {i} is a {type(row).__name__}, expected an object with fields")
    return rows


# ---------------------------------------------------------------------------- problems


def _field_names(rows: list[dict]) -> list[str]:
    names: dict[str, None] = {}
    for row in rows[:100]:
        names.update(dict.fromkeys(row))
    return list(names)


def _resolve(name: str, present: list[str]) -> str | None:
    """``name`` if present, else its unique case-insensitive match."""
    if name in present:
        return name
    matches = [p for p in present if p.lower() == name.lower()]
    return matches[0] if len(matches) == 1 else None


def detect_dataset(fields: list[str], path=None, option_names: dict | None = None) -> str:
    """Which data set the rows belong to, from their field names and the file name.
    ``option_names``: how the error names the options (see ``OPTION_NAMES``)."""
    names = {**OPTION_NAMES, **(option_names or {})}
    hint = None
    if path is not None:
        name = Path(path).name.lower()
        hint = next((ds for key, ds in _FILENAME_HINTS if key in name), None)
    if hint is not None and all(_resolve(f, fields) for f in DEFAULT_FIELDS[hint]):
        return hint
    if "Problem" in fields and _resolve("Answer", fields):
        return "aime"
    if _resolve("question", fields) and _resolve("answer", fields):
        return "gsm8k"
    if _resolve("problem", fields) and _resolve("answer", fields):
        return "math500"
    if hint is not None:
        return hint
    raise ValueError(
        f"cannot tell the data set from the fields {fields}"
        + (f" or the file name {Path(path).name!r}" if path is not None else "")
        + f"; pass {names['dataset']} (one of {', '.join(DATASETS)}) and, if needed, "
        + f"{names['question_field']}/{names['answer_field']}"
    )


def _gold(value, dataset: str) -> str | None:
    """The normalised ground truth of an answer field; None (no gold) when it is null or blank."""
    if value is None:
        return None
    if dataset == "gsm8k":
        return gsm8k_gold(str(value)) or None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    if dataset == "aime" and re.fullmatch(r"0*\d+", text):
        text = str(int(text))
    return text or None


def load_problems(
    path,
    dataset: str | None = None,
    question_field: str | None = None,
    answer_field: str | None = None,
    split: str | None = None,
    option_names: dict | None = None,
) -> list[Problem]:
    """Read ``path`` (JSONL, JSON, Parquet, Arrow or a ``save_to_disk`` folder) into Problems.

    ``dataset`` is one of DATASETS, or None to detect it from the fields and the file name.
    ``question_field``/``answer_field`` override the data set's field names; a field that the
    rows lack raises a ValueError naming it and the fields present. ``split`` picks a split of a
    ``DatasetDict`` folder (default ``test``). A null or blank answer gives ``gold=None`` (no
    ground truth). ``option_names`` changes how errors name the options (``OPTION_NAMES``: the
    keyword arguments; the CLI passes its flags).
    """
    names = {**OPTION_NAMES, **(option_names or {})}
    rows = read_rows(path, split, names)
    if not rows:
        raise ValueError(f"{path}: no rows")
    fields = _field_names(rows)
    if dataset is None:
        dataset = detect_dataset(fields, path, names)
    check_dataset(dataset)
    default_q, default_a = DEFAULT_FIELDS[dataset]

    def pick(given: str | None, default: str, what: str) -> str:
        name = _resolve(given if given is not None else default, fields)
        if name is None and given is not None:
            raise ValueError(
                f"{path}: {_option(names, what, given)}: no such field; fields present: {fields}"
            )
        if name is None:
            raise ValueError(
                f"{path}: no field {default!r} (the {dataset} default; pass {names[what]} to choose "
                f"another); fields present: {fields}"
            )
        return name

    q_name = pick(question_field, default_q, "question_field")
    a_name = pick(answer_field, default_a, "answer_field")
    id_name = next((f for f in _ID_FIELDS if f in fields and f not in (q_name, a_name)), None)

    problems = []
    for i, row in enumerate(rows):
        for name in (q_name, a_name):
            if name not in row:
                raise ValueError(f"{path}: row {i} has no field {name!r}; its fields: {list(row)}")
        question = row[q_name]
        if not isinstance(question, str) or not question.strip():
            raise ValueError(f"{path}: row {i} field {q_name!r} = {question!r}: expected non-empty text")
        meta = {k: v for k, v in row.items() if k not in (q_name, a_name)}
        if dataset == "gsm8k" and row[a_name] is not None:
            meta["solution"] = row[a_name]
        pid = row.get(id_name) if id_name else None
        problems.append(
            Problem(
                id=str(pid) if pid is not None else f"{dataset}-{i}",
                question=question,
                gold=_gold(row[a_name], dataset),
                dataset=dataset,
                meta=meta,
            )
        )
    return problems
