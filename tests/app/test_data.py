"""Problem loaders: JSONL, JSON, Parquet and datasets.save_to_disk folders built with pyarrow, and
the real GSM8K, MATH-500 and AIME 2024 files read as they are (tests/conftest.py ``data_file``)."""

import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import data_file, write_jsonl

from latentseek_fast.app.data import (
    DATASETS,
    DEFAULT_FIELDS,
    Problem,
    check_dataset,
    gsm8k_gold,
    load_problems,
)
from latentseek_fast.app.demo import demo_problems, get_demo
from latentseek_fast.app.extract import extract_answer
from latentseek_fast.app.judge import judge_reply

GSM_ROWS = [
    {"question": "Ann has 2 cats and gets 3 more. How many cats?", "answer": "2 + 3 = 5\n#### 5"},
    {"question": "A farm sells 1,200 eggs twice. How many eggs?", "answer": "2 * 1200 = 2400\n#### 2,400"},
]
MATH_ROWS = [
    {
        "problem": "What is $1/2 + 1/4$?",
        "solution": "...",
        "answer": "\\frac{3}{4}",
        "subject": "Algebra",
        "level": 1,
        "unique_id": "test/algebra/1.json",
    },
    {
        "problem": "Compute $2^3$.",
        "solution": "...",
        "answer": "8",
        "subject": "Algebra",
        "level": 1,
        "unique_id": "test/algebra/2.json",
    },
]
AIME_ROWS = [
    {"ID": "2024-I-1", "Problem": "Find the remainder ...", "Solution": "...", "Answer": 33},
    {"ID": "2024-I-2", "Problem": "How many ...", "Solution": "...", "Answer": 25},
]


def _save_to_disk_layout(folder: Path, rows, split="test", shards=1):
    """The folder ``datasets.Dataset.save_to_disk`` writes: Arrow *stream* shards plus JSON state."""
    folder.mkdir(parents=True)
    table = pa.Table.from_pylist(rows)
    per = -(-len(rows) // shards)
    names = []
    for k in range(shards):
        name = f"data-{k:05d}-of-{shards:05d}.arrow"
        with pa.OSFile(str(folder / name), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table.slice(k * per, per))
        names.append(name)
    (folder / "dataset_info.json").write_text(
        json.dumps(
            {
                "citation": "",
                "description": "",
                "homepage": "",
                "license": "",
                "features": {f.name: {"dtype": str(f.type), "_type": "Value"} for f in table.schema},
            }
        )
    )
    (folder / "state.json").write_text(
        json.dumps(
            {
                "_data_files": [{"filename": n} for n in names],
                "_fingerprint": "0123456789abcdef",
                "_format_columns": None,
                "_format_kwargs": {},
                "_format_type": None,
                "_output_all_columns": False,
                "_split": split,
            }
        )
    )
    return folder


def _check_gsm(problems):
    assert [p.gold for p in problems] == ["5", "2400"]
    assert all(isinstance(p, Problem) and p.dataset == "gsm8k" for p in problems)
    assert problems[0].question.startswith("Ann has 2 cats")
    assert problems[1].meta["solution"].endswith("#### 2,400")
    assert problems[0].id == "gsm8k-0"


def test_jsonl_autodetects_gsm8k(tmp_path):
    _check_gsm(load_problems(write_jsonl(tmp_path / "rows.jsonl", GSM_ROWS)))


@pytest.mark.parametrize("layout", ["list", "data", "columns"])
def test_json_layouts(tmp_path, layout):
    value = {
        "list": GSM_ROWS,
        "data": {"data": GSM_ROWS, "version": 1},
        "columns": {k: [r[k] for r in GSM_ROWS] for k in GSM_ROWS[0]},
    }[layout]
    path = tmp_path / "rows.json"
    path.write_text(json.dumps(value))
    _check_gsm(load_problems(path))


@pytest.mark.parametrize("name", ["bom.jsonl", "bom.json"])
def test_utf8_bom_is_read(tmp_path, name):
    """Files written by common Windows tools start with a UTF-8 byte-order mark."""
    text = json.dumps(GSM_ROWS) if name.endswith(".json") else "".join(json.dumps(r) + "\n" for r in GSM_ROWS)
    path = tmp_path / name
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    _check_gsm(load_problems(path))


def test_parquet_aime(tmp_path):
    path = tmp_path / "aime_2024.parquet"
    pq.write_table(pa.Table.from_pylist(AIME_ROWS), str(path))
    problems = load_problems(path)
    assert [(p.id, p.gold, p.dataset) for p in problems] == [
        ("2024-I-1", "33", "aime"),
        ("2024-I-2", "25", "aime"),
    ]
    assert problems[0].meta["Solution"] == "..."


def test_math500_jsonl(tmp_path):
    problems = load_problems(write_jsonl(tmp_path / "test.jsonl", MATH_ROWS))
    assert [p.dataset for p in problems] == ["math500"] * 2
    assert [p.gold for p in problems] == ["\\frac{3}{4}", "8"]
    assert problems[0].id == "test/algebra/1.json" and problems[0].meta["level"] == 1


def test_save_to_disk_folder(tmp_path):
    folder = _save_to_disk_layout(tmp_path / "gsm8k_saved", GSM_ROWS * 3, shards=2)
    problems = load_problems(folder)
    assert len(problems) == 6
    assert [p.gold for p in problems] == ["5", "2400"] * 3


def test_save_to_disk_dataset_dict(tmp_path):
    root = tmp_path / "math_dict"
    _save_to_disk_layout(root / "train", MATH_ROWS[:1], split="train")
    _save_to_disk_layout(root / "test", MATH_ROWS, split="test")
    (root / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test"]}))
    assert len(load_problems(root)) == 2  # test split by default
    assert len(load_problems(root, split="train")) == 1
    with pytest.raises(ValueError, match="validation"):
        load_problems(root, split="validation")


def test_explicit_dataset_and_fields(tmp_path):
    rows = [{"q": "What is 2 + 2?", "a": "4", "extra": 1}]
    path = write_jsonl(tmp_path / "custom.jsonl", rows)
    (p,) = load_problems(path, dataset="gsm8k", question_field="q", answer_field="a")
    assert (p.question, p.gold, p.meta) == ("What is 2 + 2?", "4", {"extra": 1, "solution": "4"})


def test_field_errors_name_the_field_and_the_fields_present(tmp_path):
    path = write_jsonl(tmp_path / "gsm8k_rows.jsonl", GSM_ROWS)
    with pytest.raises(ValueError, match=r"'prompt'.*fields present: \['question', 'answer'\]"):
        load_problems(path, question_field="prompt")
    with pytest.raises(ValueError, match=r"'Problem'.*fields present"):
        load_problems(path, dataset="aime")
    odd = write_jsonl(tmp_path / "odd.jsonl", [{"text": "x", "label": 1}])
    with pytest.raises(ValueError, match=r"cannot tell the data set.*'text'"):
        load_problems(odd)
    with pytest.raises(ValueError, match="gsm9k"):
        load_problems(path, dataset="gsm9k")
    with pytest.raises(FileNotFoundError):
        load_problems(tmp_path / "missing.jsonl")


@pytest.mark.parametrize("dataset", DATASETS)
def test_every_data_set_name_loads_extracts_and_judges(tmp_path, dataset):
    """Each name of ``DATASETS`` is one the whole pipeline knows: rows with its default fields
    load under that name and are detected as it, and its answers are extracted and judged."""
    question, answer = DEFAULT_FIELDS[dataset]
    path = write_jsonl(tmp_path / "rows.jsonl", [{question: "What is 3 + 4?", answer: "7"}])
    (named,) = load_problems(path, dataset=dataset)
    (detected,) = load_problems(path)
    assert named == detected
    assert (named.dataset, named.question, named.gold) == (dataset, "What is 3 + 4?", "7")
    assert judge_reply("3 + 4 = \\boxed{7}", named.gold, dataset) == ("7", True)
    assert check_dataset(dataset) == dataset


def test_unknown_data_set_names_the_allowed_ones():
    message = re.escape("dataset='gsm9k': allowed values are ('gsm8k', 'math500', 'aime')")
    for call in (lambda: check_dataset("gsm9k"), lambda: extract_answer("\\boxed{1}", "gsm9k")):
        with pytest.raises(ValueError, match=message):
            call()
    with pytest.raises(ValueError, match=re.escape("style='xml': allowed values are ('boxed', 'json')")):
        extract_answer("\\boxed{1}", "gsm8k", style="xml")


def test_top_level_exports_are_the_application_s_loaders():
    import latentseek_fast
    from latentseek_fast.app import models

    assert latentseek_fast.load_problems is load_problems
    assert latentseek_fast.load_model is models.load_model
    assert {"load_model", "load_problems"} <= set(dir(latentseek_fast))


def test_demo_problems():
    demos = demo_problems()
    assert 5 <= len(demos) <= 8
    assert all(p.dataset == "gsm8k" and p.gold.isdigit() and len(p.question) < 120 for p in demos)
    assert len({p.id for p in demos}) == len(demos)
    assert get_demo(0) == demos[0] and get_demo(-1) == demos[-1] and get_demo("1") == demos[1]
    assert get_demo(demos[2].id) == demos[2]
    with pytest.raises(ValueError, match="nope"):
        get_demo("nope")
    with pytest.raises(ValueError):
        get_demo(len(demos))


def test_gsm8k_gold():
    assert gsm8k_gold("She makes 9 * 2 = $<<9*2=18>>18.\n#### 18") == "18"
    assert gsm8k_gold("lots of steps\n#### 1,450") == "1450"
    assert gsm8k_gold("#### -7") == "-7"
    with pytest.raises(ValueError, match="expected a string"):
        gsm8k_gold(18)


def test_real_gsm8k_test_set():
    path = data_file("gsm8k_test.jsonl")
    problems = load_problems(path)
    assert len(problems) == 1319 and {p.dataset for p in problems} == {"gsm8k"}
    assert all(re.fullmatch(r"-?\d+", p.gold) for p in problems)
    assert sum(p.gold.startswith("-") for p in problems) == 2
    # 14 golds are written with thousands separators; the loader strips them.
    assert sum("," in p.meta["solution"].rsplit("####", 1)[1] for p in problems) == 14
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert [p.question for p in problems] == [r["question"] for r in rows]
    assert [p.meta["solution"] for p in problems] == [r["answer"] for r in rows]


def test_real_math500_test_set():
    path = data_file("math500_test.jsonl")
    problems = load_problems(path)
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(problems) == 500 and {p.dataset for p in problems} == {"math500"}
    assert [p.id for p in problems] == [r["unique_id"] for r in rows] and len({p.id for p in problems}) == 500
    assert [(p.question, p.gold) for p in problems] == [(r["problem"], r["answer"]) for r in rows]
    assert all(p.gold for p in problems)
    assert {p.meta["level"] for p in problems} == {1, 2, 3, 4, 5}
    assert all(set(p.meta) == {"solution", "subject", "level", "unique_id"} for p in problems)


def test_real_aime24_test_set():
    """Fields ``id, problem, answer, url`` (lower case): the file name says AIME, and the AIME
    field names ``Problem``/``Answer`` match case-insensitively."""
    path = data_file("aime24_test.jsonl")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert set(rows[0]) == {"id", "problem", "answer", "url"}
    for dataset in (None, "aime"):
        problems = load_problems(path, dataset=dataset)
        assert len(problems) == 30 and {p.dataset for p in problems} == {"aime"}
        assert [p.id for p in problems] == [str(r["id"]) for r in rows] == [str(i) for i in range(60, 90)]
        assert [p.gold for p in problems] == [r["answer"] for r in rows]
        assert all(re.fullmatch(r"\d{1,3}", p.gold) for p in problems)
        assert [p.question for p in problems] == [r["problem"] for r in rows]
        assert all(p.meta["url"].startswith("https://artofproblemsolving.com/") for p in problems)


def test_null_or_blank_answer_is_no_gold(tmp_path):
    """A row without a ground truth loads with ``gold=None`` (so no PSRM is built on ``""``)."""
    rows = [
        {"question": "Q0?", "answer": "#### 4"},
        {"question": "Q1?", "answer": None},
        {"question": "Q2?", "answer": "   "},
        {"question": "Q3?", "answer": "steps\n#### "},
    ]
    golds = [p.gold for p in load_problems(write_jsonl(tmp_path / "g.jsonl", rows))]
    assert golds == ["4", None, None, None]
    rows = [{"problem": "P?", "answer": ""}, {"problem": "P?", "answer": "8"}]
    golds = [p.gold for p in load_problems(write_jsonl(tmp_path / "m.jsonl", rows), dataset="math500")]
    assert golds == [None, "8"]


def test_split_is_only_for_dataset_dict_folders(tmp_path):
    path = write_jsonl(tmp_path / "gsm8k_rows.jsonl", GSM_ROWS)
    with pytest.raises(ValueError, match=r"split='test': .* is a file; only a DatasetDict folder has splits"):
        load_problems(path, split="test")
    folder = tmp_path / "one"
    _save_to_disk_layout(folder, MATH_ROWS)
    assert len(load_problems(folder)) == 2
    with pytest.raises(ValueError, match=r"split='train': .* is not a DatasetDict folder"):
        load_problems(folder, split="train")


def test_option_names_spell_the_options_in_errors(tmp_path):
    """The errors name the keyword arguments, or the CLI's flags when it passes them."""
    flags = {"dataset": "--dataset", "question_field": "--question-field", "answer_field": "--answer-field"}
    flags["split"] = "--split"
    odd = write_jsonl(tmp_path / "odd.jsonl", [{"q": "x", "a": "1"}])
    with pytest.raises(ValueError, match=r"pass dataset= \(one of gsm8k, math500, aime\).*question_field="):
        load_problems(odd)
    with pytest.raises(ValueError, match=r"pass --dataset \(one of .*\) and, if needed, --question-field/"):
        load_problems(odd, option_names=flags)
    with pytest.raises(ValueError, match=r"pass question_field= to choose another"):
        load_problems(odd, dataset="gsm8k")
    with pytest.raises(ValueError, match=r"--answer-field b: no such field"):
        load_problems(odd, dataset="gsm8k", question_field="q", answer_field="b", option_names=flags)
    root = tmp_path / "dict"
    _save_to_disk_layout(root / "train", MATH_ROWS[:1], split="train")
    _save_to_disk_layout(root / "dev", MATH_ROWS, split="dev")
    (root / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "dev"]}))
    with pytest.raises(ValueError, match=r"choose one with split= or"):
        load_problems(root)
    with pytest.raises(ValueError, match=r"choose one with --split or"):
        load_problems(root, option_names=flags)
