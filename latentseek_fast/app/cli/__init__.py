"""``latentseek-fast``: ``run`` one problem, or ``eval`` a data set with resumable JSONL output."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time

from ...backends import BACKENDS, MODES, interpreter_refusal, triton_unavailable_reason
from ...config import DRAFT_POLICIES, LATENT_DTYPES, REWARD_NAMES, SeekConfig
from ..data import DATASETS
from ..torchrun import record, record_error


class CLIError(Exception):
    """A user error reported as one line and exit status 2."""


class Interrupted(Exception):
    """Ctrl-C, reported as one line (``interrupted: ...``) and exit status 130 (128 + SIGINT)."""


# How data-loading errors name the options when eval loads --data (data.OPTION_NAMES).
DATA_FLAGS = {
    "dataset": "--dataset",
    "question_field": "--question-field",
    "answer_field": "--answer-field",
    "split": "--split",
}


def _add_seek_args(p: argparse.ArgumentParser) -> None:
    d = SeekConfig()
    g = p.add_argument_group("model")
    g.add_argument(
        "--model",
        default=None,
        help="'smollm2' (default: the embedded GGUF), a .gguf file, or an HF model directory/name",
    )
    g.add_argument("--dtype", default="float32", help="model dtype: float32, bfloat16, float16")
    g.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    g.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default on a CPU: the cores the load average leaves free, at least 1)",
    )
    g = p.add_argument_group("seek")
    g.add_argument("--lr", type=float, default=d.lr)
    g.add_argument("--rho", type=float, default=d.rho, help="fraction of the answer latents optimised (k)")
    g.add_argument("--max-steps", type=int, default=d.max_steps)
    g.add_argument("--reward-threshold", type=float, default=d.reward_threshold)
    g.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens)
    g.add_argument("--grad-clip", type=float, default=d.grad_clip)
    g.add_argument("--start-index", type=int, default=d.start_index)
    g.add_argument("--backend", choices=BACKENDS, default=d.backend)
    g.add_argument("--latent-dtype", choices=LATENT_DTYPES, default=d.latent_dtype)
    g.add_argument("--mode", choices=MODES, default=d.mode)
    g.add_argument("--temperature", type=float, default=d.temperature)
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument(
        "--draft-tokens",
        type=int,
        default=d.draft_tokens,
        help="tokens drafted from the prompt and earlier answers per forward, verified greedily "
        "(same answer, fewer forwards); 0: off",
    )
    g.add_argument(
        "--draft-policy",
        choices=DRAFT_POLICIES,
        default=d.draft_policy,
        help="full: feed every draft; cost: only as many as a cost model of the forward says pay off",
    )
    g = p.add_argument_group("task")
    g.add_argument(
        "--reward",
        choices=REWARD_NAMES,
        default=None,
        help="default: psrm when a ground truth is known, else self",
    )
    g.add_argument("--format-rule", action="store_true", help="self-reward: require \\boxed{} (-2)")
    g.add_argument(
        "--verifier-tokens",
        type=int,
        default=None,
        help="self-reward: new-token cap of each verifier reply (default 4096, the paper's)",
    )
    g.add_argument("--prompt", choices=("boxed", "json"), default="boxed", help="solver prompt style")
    g.add_argument("--dataset", default=None, help="gsm8k, math500 or aime (default: detected)")


def _config(args) -> SeekConfig:
    """The ``SeekConfig`` of every field the command line sets (argparse dests are field names)."""
    return SeekConfig(
        **{name: getattr(args, name) for name in SeekConfig.field_names() if hasattr(args, name)}
    )


_HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


def _check_model(name: str | None) -> None:
    """What can be known about ``--model`` without loading it: paths must exist and be models."""
    from ..models import EMBEDDED_NAME, embedded_gguf_path

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
        from ..models import hub_unavailable_reason

        why = hub_unavailable_reason(name)
        if why is not None:
            raise CLIError(f"--model {name}: cannot load it: {why}")


def _check_dataset(args) -> None:
    if args.dataset is not None and args.dataset not in DATASETS:
        raise CLIError(f"--dataset {args.dataset}: allowed values are {', '.join(DATASETS)}")


def _preflight(args) -> None:
    """Check --threads, --dtype, --device and --model before anything slow (exit 2, one line)."""
    import torch

    from ..models import parse_dtype

    if args.threads is not None and args.threads < 1:
        raise CLIError(f"--threads {args.threads}: expected an integer >= 1")
    if args.verifier_tokens is not None and args.verifier_tokens < 1:
        raise CLIError(f"--verifier-tokens {args.verifier_tokens}: expected an integer >= 1")
    _check_dataset(args)
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
    _check_model(args.model)


def _default_device(args) -> str:
    import torch

    return args.device or ("cuda" if torch.cuda.is_available() else "cpu")


def _check_interpreter(args, device: str, shape: tuple[int, int] | None) -> None:
    """``--backend triton`` under Triton's interpreter on a large LM head: refused (one line)."""
    why = None if shape is None else interpreter_refusal(device, shape, args.max_steps)
    if why is not None:
        raise CLIError(f"--backend triton: {why}")


def _check_backend(args) -> None:
    """``--backend triton`` before the model loads: it must be able to run on the device, and the
    interpreter is refused on a large head when the model's shape is known without loading it
    (``models.head_shape``; otherwise ``_load`` checks right after loading, before decoding)."""
    if args.backend != "triton":
        return
    from ..models import head_shape

    device = _default_device(args)
    why = triton_unavailable_reason(device)
    if why is not None:
        raise CLIError(f"--backend triton: cannot run: {why}; use --backend torch or auto")
    _check_interpreter(args, device, head_shape(args.model))


def _check_out_dir(out: str) -> None:
    if os.path.isdir(out):
        raise CLIError(
            f"--out {out}: a directory; expected a results file path, "
            f"e.g. {os.path.join(out, 'results.jsonl')}"
        )
    d = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(d):
        raise CLIError(f"--out {out}: the directory {d} does not exist")


def default_cpu_threads(cores: int, load1: float) -> int:
    """CPU threads for decoding when nobody chose: the cores that the 1-minute load average
    leaves free (``cores - round(load1)``), at least 1.

    Decoding is one small forward per token, and torch's OpenMP threads wait for each other at
    every op, so a thread on a core that another process holds slows every token. Measured on
    the embedded SmolLM2 (fp32, 2-core machine, ``bench/bench_threads.py``, table in
    ``bench/results/threads.csv``): with other jobs loading it (1-minute load 5.7-9.8), 2 threads
    were 2.8-22x slower than 1 in every round for a 1 x 1, a 1 x 9 (draft verify) and an 8 x 1
    (batched) forward; idle (load 0.4-0.7), 2 threads took them from 87 / 195 / 213 ms to
    56 / 109 / 118 ms. Chosen once, when the model loads.
    """
    return max(1, min(cores, cores - round(load1)))


def _cli_threads(args, device: str) -> int | None:
    """``--threads``, else on a CPU ``default_cpu_threads`` unless ``OMP_NUM_THREADS`` is set (the
    user's choice, or torchrun's, whose ranks ``dist.resolve_threads`` has already set); None
    leaves torch's threads as they are."""
    if args.threads:
        return args.threads
    if (
        not str(device).startswith("cpu")
        or os.environ.get("OMP_NUM_THREADS")
        or os.environ.get("LOCAL_WORLD_SIZE", "1") not in ("", "1")
    ):
        return None
    from ..torchrun import cpu_cores

    return default_cpu_threads(cpu_cores(), os.getloadavg()[0])


def _load(args):
    import torch

    from ...decode import lm_head_of
    from ..models import load_model

    device = _default_device(args)
    threads = _cli_threads(args, device)
    if threads:
        torch.set_num_threads(threads)
    try:
        model, tok = load_model(args.model, dtype=args.dtype, device=device)
    except OSError as exc:  # e.g. a Hub name that is not reachable or not a model
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CLIError(f"--model {args.model}: cannot load it ({first})") from None
    if args.backend == "triton":  # the head's shape is known now; nothing is decoded yet
        _check_interpreter(args, device, tuple(lm_head_of(model).weight.shape))
    return model, tok


def _reward_name(args, problem) -> str:
    """The reward a problem is scored with: ``--reward``, else PSRM when its gold is known, else self."""
    return args.reward or ("psrm" if problem.gold is not None else "self")


def _reward(args, model, tokenizer, problem):
    """The reward ``--reward``/``--prompt``/``--format-rule`` ask for (``rewards.make_reward``)."""
    from ...rewards import make_reward

    return make_reward(
        args.reward,
        model,
        tokenizer,
        gold=problem.gold,
        dataset=problem.dataset,
        style=args.prompt,
        format_rule=args.format_rule,
        verifier_tokens=args.verifier_tokens,
    )


def _judge(problem, text, style):
    from ..extract import extract_answer
    from ..judge import is_correct

    pred = extract_answer(text, problem.dataset, style)
    return pred, (problem.gold is not None and is_correct(pred, problem.gold, problem.dataset))


class _RunProgress:
    """``run``'s live output: the original answer as it is decoded, then one line per iteration."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout

    def __call__(self, event) -> None:
        from ...engine import IterationDone, OriginalDone, OriginalToken

        out = self.stream
        if isinstance(event, OriginalToken):
            out.write(event.text)
            out.flush()
        elif isinstance(event, OriginalDone):
            out.write(
                f"\n--- original answer: reward {event.reward:+.3f}, {event.length} tokens, "
                f"{event.tokens_per_s:.1f} tokens/s ---\n"
            )
            out.flush()
        elif isinstance(event, IterationDone):
            out.write(
                f"iteration {event.iteration}: reward {event.reward:+.3f}, {event.length} tokens, "
                f"{event.tokens_per_s:.1f} tokens/s\n"
            )
            out.flush()


def _run_problem(args):
    """``run``'s problem: ``--problem`` (with ``--gold``), else demo problem ``--demo``.

    ``--gold`` belongs to ``--problem``: with a demo problem it is an error, not ignored (the
    demo keeps its own ground truth). ``--reward psrm`` needs a gold answer. All before loading.
    """
    from ..data import Problem
    from ..demo import demo_problems

    if args.gold is not None and not args.gold.strip():
        raise CLIError(f"--gold {args.gold!r}: expected a non-empty answer")
    if args.problem is not None:
        if not args.problem.strip():
            raise CLIError(f"--problem {args.problem!r}: expected the text of a question")
        if args.reward == "psrm" and args.gold is None:
            raise CLIError(
                "--reward psrm needs the ground truth of --problem: pass --gold, or use --reward self"
            )
        return Problem(
            id="cli", question=args.problem, gold=args.gold, dataset=args.dataset or "gsm8k", meta={}
        )
    demos = demo_problems()
    if not 0 <= args.demo < len(demos):
        raise CLIError(f"--demo {args.demo}: allowed 0..{len(demos) - 1}")
    problem = demos[args.demo]
    if args.gold is not None:
        raise CLIError(
            f"--gold {args.gold}: it is the ground truth of --problem, which is not given; demo "
            f"problem {args.demo} has its own ({problem.gold}): pass --problem too, or drop --gold"
        )
    return problem


def cmd_run(args) -> int:
    from ...loop import seek

    problem = _run_problem(args)
    _preflight(args)
    config = _config(args)
    _check_backend(args)
    model, tok = _load(args)
    reward = _reward(args, model, tok, problem)
    if not args.json:
        print(f"Question: {problem.question}")
        if problem.gold is not None:
            print(f"Ground truth: {problem.gold}")
        print("\n--- original answer (streamed as it is decoded) ---", flush=True)
    res = seek(
        model,
        tok,
        problem,
        reward,
        config,
        dataset=problem.dataset,
        style=args.prompt,
        on_event=None if args.json else _RunProgress(),
    )
    orig_pred, orig_ok = _judge(problem, res.original_answer, args.prompt)
    pred, ok = _judge(problem, res.answer, args.prompt)
    if args.json:
        out = res.to_dict() | {
            "question": problem.question,
            "gold": problem.gold,
            "original_pred": orig_pred,
            "pred": pred,
            "original_correct": orig_ok,
            "correct": ok,
            "reward": _reward_name(args, problem),
        }
        print(json.dumps(out, indent=2))
        return 0
    print(
        f"\n--- final answer after {res.iterations} iteration(s), stop: {res.stopped}, "
        f"L={res.update_length}, backend={res.backend} ---"
    )
    print(res.answer)
    if problem.gold is not None:
        print(
            f"\noriginal: {orig_pred!r} ({'correct' if orig_ok else 'wrong'})  "
            f"final: {pred!r} ({'correct' if ok else 'wrong'})"
        )
    print("time: " + ", ".join(f"{k} {v:.2f}s" for k, v in res.timings.items()))
    return 0


def _check_rows_match(rows: list[dict], problems, out: str) -> None:
    """Rows of ``out`` must come from this data file: the id at each index must match."""
    for r in rows:
        i = r["index"]
        if i < len(problems) and r["id"] != problems[i].id:
            raise CLIError(
                f"{out}: the row for problem {i} has id {r['id']!r} but --data has {problems[i].id!r} "
                "there; it was written from another data file (choose another --out)"
            )


def _eval_row(i: int, p, res, style: str, reward: str) -> dict:
    """The results row of problem ``i``: answers, every iteration's prediction and correctness
    (``iter_preds``/``iter_correct``, aligned with ``rewards``; what ``report`` plots), the
    ``reward`` it was scored with (``psrm`` or ``self``), lengths, timings."""
    judged = [_judge(p, text, style) for text in res.texts]
    return {
        "index": i,
        "id": p.id,
        "dataset": p.dataset,
        "question": p.question,
        "gold": p.gold,
        "original_answer": res.original_answer,
        "answer": res.answer,
        "original_pred": judged[0][0],
        "pred": judged[-1][0],
        "original_correct": judged[0][1],
        "correct": judged[-1][1],
        "iter_preds": [pred for pred, _ in judged],
        "iter_correct": [ok for _, ok in judged],
        "reward": reward,
        "rewards": res.rewards,
        "iterations": res.iterations,
        "stopped": res.stopped,
        "original_length": res.original_length,
        "final_length": res.final_length,
        "update_length": res.update_length,
        "backend": res.backend,
        "reused": res.reused,
        "timings": res.timings,
        "seconds": sum(res.timings.values()),
    }


class _EvalProgress:
    """``eval``'s progress bar: problems done, decoded tokens per second, running accuracy."""

    def __init__(self, total: int, enabled: bool):
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc="latentseek", unit="problem", disable=not enabled)
        self.t0 = time.perf_counter()
        self.tokens = self.done = self.original_ok = self.ok = 0

    def __call__(self, event) -> None:
        from ...engine import IterationDone, OriginalDone

        if isinstance(event, OriginalDone):
            self.tokens += event.length
        elif isinstance(event, IterationDone):
            self.tokens += event.tokens
        else:
            return
        self._show()

    def finished(self, row: dict) -> None:
        self.done += 1
        self.original_ok += bool(row["original_correct"])
        self.ok += bool(row["correct"])
        self.bar.update(1)
        self._show()

    def _show(self) -> None:
        secs = time.perf_counter() - self.t0
        post = {"tok/s": f"{self.tokens / secs:.1f}" if secs > 0 else "-"}
        if self.done:
            post["acc"] = f"{100 * self.original_ok / self.done:.0f}->{100 * self.ok / self.done:.0f}%"
        self.bar.set_postfix(post, refresh=True)

    def close(self) -> None:
        self.bar.close()


def _check_rows_match_files(out: str, problems) -> None:
    """On ``--resume``: the rows of ``out`` and of its rank shards must come from this data file."""
    from ..results import read_results
    from ..torchrun import find_shards

    for path in [out, *find_shards(out)]:
        _check_rows_match(read_results(path), problems, path)


def _name_rows(problems, indices: list[int], data: str, most: int = 5) -> str:
    """``rows 3 (id 'a'), 7 (id 'b') and 2 more of FILE``: which rows of ``data`` are meant."""
    named = ", ".join(f"{i} (id {problems[i].id!r})" for i in indices[:most])
    more = f" and {len(indices) - most} more" if len(indices) > most else ""
    return f"row{'s' if len(indices) > 1 else ''} {named}{more} of {data}"


def _check_gold(args, problems, selected: list[int]) -> None:
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


def _interrupted(path: str) -> str:
    """``eval``'s line after Ctrl-C: how many rows ``path`` holds and how to finish."""
    from ..results import ResultsError, read_results

    if not os.path.exists(path):
        return f"no rows were written (no {path} is left behind); run the same command again"
    try:
        n = len(read_results(path))
    except (ResultsError, OSError):
        return f"rows are in {path}; run the same command with --resume to finish"
    return f"{n} row{'' if n == 1 else 's'} written to {path}; run the same command with --resume to finish"


def cmd_eval(args) -> int:
    """Seek every selected problem; rows are written as problems finish (in any order).

    Runs on ``iter_seek`` (``--batch-size`` seeks in flight; 1 runs ``seek`` one problem at a
    time, which also drafts continuations). Under torchrun each rank runs its shard of the
    problems into its own file and rank 0 merges them (``dist.sharded_results``). Ctrl-C ends
    with one line saying how many rows the file holds (``Interrupted``).
    """
    from ..data import load_problems
    from ..results import format_summary, summarize
    from ..torchrun import sharded_results

    if args.batch_size < 1:
        raise CLIError(f"--batch-size {args.batch_size}: expected an integer >= 1")
    if args.start < 0:
        raise CLIError(f"--start {args.start}: expected an integer >= 0")
    if args.limit is not None and args.limit < 1:
        raise CLIError(f"--limit {args.limit}: expected an integer >= 1")
    _check_out_dir(args.out)
    _check_dataset(args)
    problems = load_problems(
        args.data,
        dataset=args.dataset,
        question_field=args.question_field,
        answer_field=args.answer_field,
        split=args.split,
        option_names=DATA_FLAGS,
    )
    if args.start >= len(problems):
        raise CLIError(
            f"--start {args.start}: {args.data} has {len(problems)} rows, so --start must be "
            f"0..{len(problems) - 1}"
        )
    stop = len(problems) if args.limit is None else min(len(problems), args.start + args.limit)
    selected = list(range(args.start, stop))
    _check_gold(args, problems, selected)
    if args.resume:
        _check_rows_match_files(args.out, problems)
    _preflight(args)
    config = _config(args)
    _check_backend(args)
    run = None
    try:
        with sharded_results(
            args.out, selected, resume=args.resume, device=args.device, threads=args.threads
        ) as run:
            if run.todo:
                args.device = run.device
                model, tok = _load(args)
                _eval_problems(args, config, model, tok, [problems[i] for i in run.todo], run)
    except KeyboardInterrupt:
        raise Interrupted(_interrupted(run.path if run is not None else args.out)) from None
    if run.env.is_main:
        summary = summarize(run.rows, selected)
        print(format_summary(summary))
        chosen = set(selected)
        no_gold = len({r["index"] for r in run.rows if r["index"] in chosen and r.get("gold") is None})
        if no_gold:
            summary["no_gold"] = no_gold
            print(
                f"{no_gold} of {summary['problems']} problems had no gold answer: scored with "
                "self-reward, and counted as wrong in both accuracies"
            )
        if args.json:
            print(json.dumps(summary))
    return 0


def _eval_problems(args, config, model, tok, batch, run) -> None:
    """Seek ``batch`` (this rank's problems, ``run.todo`` order) and append each row as it ends."""
    from ...engine import iter_seek
    from ...loop import seek

    rewards = [_reward(args, model, tok, p) for p in batch]
    progress = _EvalProgress(len(batch), enabled=run.env.is_main)
    common = dict(style=args.prompt, format_rule=args.format_rule, on_event=progress)
    if args.batch_size == 1:
        stream = ((j, seek(model, tok, p, rewards[j], config, **common)) for j, p in enumerate(batch))
    else:
        stream = iter_seek(model, tok, batch, rewards, config, batch_size=args.batch_size, **common)
    try:
        for j, res in stream:
            row = _eval_row(run.todo[j], batch[j], res, args.prompt, _reward_name(args, batch[j]))
            run.append(row)
            progress.finished(row)
    finally:
        progress.close()


def cmd_report(args) -> int:
    """The paper's table per data set, and test-time-scaling and reward PNGs (``report.py``)."""
    from ..report import write_report

    write_report([args.results] + ([args.compare] if args.compare else []), out=args.out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="latentseek-fast", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="log which fast paths are used and why")
    sub = p.add_subparsers(dest="command")
    r = sub.add_parser("run", help="seek on one problem (default: demo problem 1)")
    r.add_argument("--problem", default=None, help="question text (default: a demo problem)")
    r.add_argument("--gold", default=None, help="ground-truth answer of --problem (enables PSRM)")
    r.add_argument(
        "--demo", type=int, default=1, help="index of the demo problem (default 1: greedy gets it wrong)"
    )
    r.add_argument("--json", action="store_true", help="machine-readable output")
    _add_seek_args(r)
    e = sub.add_parser("eval", help="seek over a data-set file, one JSONL row per problem")
    e.add_argument("--data", required=True, help="JSONL/JSON/Parquet file or datasets.save_to_disk folder")
    e.add_argument(
        "--question-field", default=None, help="the rows' question field (default: the data set's own)"
    )
    e.add_argument(
        "--answer-field", default=None, help="the rows' gold-answer field (default: the data set's own)"
    )
    e.add_argument(
        "--split", default=None, help="the split of a DatasetDict folder (default: test, or its only split)"
    )
    e.add_argument("--start", type=int, default=0, help="index of the first problem (default 0)")
    e.add_argument("--limit", type=int, default=None, help="at most this many problems (default: all)")
    e.add_argument("--out", default="results.jsonl")
    e.add_argument("--resume", action="store_true", help="continue --out, skipping problems already in it")
    e.add_argument("--json", action="store_true", help="also print the summary as JSON")
    e.add_argument(
        "--batch-size",
        type=int,
        default=8,
        help="seeks in flight (continuous batching, one forward for all decoding rows); "
        "1: one problem at a time",
    )
    _add_seek_args(e)
    rp = sub.add_parser(
        "report", help="the paper's table and test-time-scaling/reward plots of a results file"
    )
    rp.add_argument("results", help="a results JSONL file written by eval")
    rp.add_argument(
        "--out", default="report.png", help="PNG path stem: writes <stem>_scaling.png and <stem>_rewards.png"
    )
    rp.add_argument("--compare", default=None, help="a second results file, drawn beside the first")
    return p


@record
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    if args.command is None:  # bare `latentseek-fast [-v]` runs the default demo
        args = build_parser().parse_args([*argv, "run"])
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return {"run": cmd_run, "eval": cmd_eval, "report": cmd_report}[args.command](args)
    except Interrupted as exc:
        print(f"interrupted: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (CLIError, ValueError, RuntimeError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        record_error(exc)  # under torchrun: the failure summary names this rank's error
        return 2


if __name__ == "__main__":
    sys.exit(main())
