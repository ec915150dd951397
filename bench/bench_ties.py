"""Near-tie audit threshold: how far reorderings move the logits of real greedy decisions.

On the embedded SmolLM2-135M-Instruct (fp32, and the same weights in bf16 and fp16), greedy
answers to the first ``--problems`` (8) GSM8K test problems (solver prompt, answer stop ids, at
most ``--tokens`` (128) tokens) are decoded once on the slot decoder (``HFDecoder``, one row,
token by token, 1 thread): that run is the baseline and its decisions are the real decisions.
Each reordering then recomputes the logits at every decided position, teacher-forced on the same
tokens so that positions align, and is compared with the baseline at the baseline's top
``K`` (5) token ids:

- ``threads``: token-by-token on the slot decoder at 2 threads (against 1);
- ``threads-full``: one plain ``model(...)`` forward of the whole sequence incl. the LM head, 2
  threads against 1 (both sides full forwards);
- ``batch16``: the sequence as one row among ``--batch`` (16) rows of the slot decoder, the
  other rows being other problems decoding greedily at the same time;
- ``prefill``: the whole sequence in one many-token forward of the slot decoder (and one head
  call over all positions) against token-by-token feeds;
- ``cache-decoder``: the sequential driver's decoder (``CacheDecoder``, a transformers cache)
  against the slot decoder, both token by token;
- ``eager-attn``: a full forward with ``attn_implementation="eager"`` against ``sdpa``;
- ``fused-torch``: ``latent_policy_grad(backend="torch")`` on the baseline's hidden states
  against the eager head (``F.linear`` in the model dtype, then argmax); its logits at the
  candidate ids are ``logprob + lse`` of a teacher-forced call per candidate, its gap the
  difference of two log-probs (lse cancels);
- ``fused-triton``: the same with ``backend="triton"`` under ``TRITON_INTERPRET=1`` on the
  ``--triton-rows`` (8) positions with the smallest gaps only, over a 1024-id slice of the
  vocabulary holding their candidates (the interpreter takes ~4 us per weight and pass; a
  kernel's logit of one id does not depend on which other ids share its pass);
- ``adam-threads``: one latent step (``LatentSteps``, torch backend, reward -1, the first
  ``SeekConfig().update_length(T)`` latents of each answer) at 1 and at 2 threads: the logits of
  ``W z'`` (eager head), each side at its own thread count.

Per reordering and dtype: decisions compared, argmax flips (and the baseline gap at each), and
max / 99.9th / 99th percentile of ``|d(l_a - l_b)|`` (``a``, ``b`` the baseline's top two ids:
the gap's perturbation, what can flip a decision) and of ``max_k |d l_k|`` over the top ``K``.
Then per dtype a ``tie_gap`` recommendation, ``SAFETY`` (10) times the largest gap perturbation
seen, rounded up to 1, 2 or 5 times a power of ten, and how many real decisions (and answers
with at least one) fall below it and below a grid of thresholds; and the distribution of real
gaps (answers and the latent step's re-decoded tokens).

Run (about 20 minutes on 2 cores at a load average of ~9, fp32 and bf16 alike; the decodes of
each problem alone and the cache-decoder pass take most):
``python bench/bench_ties.py``; writes
``results/ties/{perturbations,gaps,fragile}.csv``. Smoke run: ``--quick`` (1 problem, 8
tokens, batch 2, 1 triton row over 128 ids, fp32; ~30 s; to /tmp/latentseek-bench-quick/ties
unless ``--out`` says so). fp16 is accepted by ``--dtypes`` but not in the default run: CPU fp16
forwards are ~5x (one token) to ~20x (a prompt) slower than fp32 here.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

# Threads that wait passively: at 2 threads on a loaded machine busy-waiting OpenMP threads made
# each forward ~7x slower (the numbers do not depend on it). Read when OpenMP starts, so set first.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

if not torch.cuda.is_available():  # before anything imports triton: its kernels run interpreted
    os.environ.setdefault("TRITON_INTERPRET", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_eval import find_data  # noqa: E402
from harness import RESULTS, bench_device, check_at_least, markdown_table, write_rows  # noqa: E402

from latentseek_fast import SeekConfig  # noqa: E402
from latentseek_fast.app.data import load_problems  # noqa: E402
from latentseek_fast.app.models import load_model  # noqa: E402
from latentseek_fast.decoding.decoder import CacheDecoder  # noqa: E402
from latentseek_fast.decoding.model import lm_head_of  # noqa: E402
from latentseek_fast.decoding.slots import HFDecoder  # noqa: E402
from latentseek_fast.decoding.stops import answer_stop_ids  # noqa: E402
from latentseek_fast.engine.latent import LatentSteps  # noqa: E402
from latentseek_fast.ops.latent_policy_grad import latent_policy_grad  # noqa: E402
from latentseek_fast.prompts import build_prompt  # noqa: E402

K = 5  # candidates compared per decision: the baseline's top K ids
SAFETY = 10.0  # tie_gap = SAFETY x the largest gap perturbation observed
GRID = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.03, 0.1, 0.3, 0.5, 1.0, 2.0, 5.0)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Unit roundoff per dtype (2^-(mantissa bits + 1)): the scale of one rounding.
UNIT_ROUNDOFF = {"fp32": 2.0**-24, "bf16": 2.0**-8, "fp16": 2.0**-11}
PERTURBATION_COLUMNS = [
    "dtype",
    "reordering",
    "decisions",
    "flips",
    "dgap_max",
    "dgap_p999",
    "dgap_p99",
    "dlogit_max",
    "dlogit_p999",
    "dlogit_p99",
]


class Record:
    """Per decided position: the argmax, the top-2 gap and the top ``K`` of one computation, and
    its logits at a baseline's top ``K`` ids (its own when it is the baseline)."""

    def __init__(self):
        self.parts: list[dict] = []

    def add(self, logits: torch.Tensor, ref_ids: torch.Tensor | None) -> None:
        lf = logits.float()
        vals, ids = lf.topk(K, dim=-1)
        self.parts.append(
            {
                "argmax": lf.argmax(-1),
                "gap": vals[:, 0] - vals[:, 1],
                "ids": ids,
                "at_ref": vals if ref_ids is None else lf.gather(1, ref_ids),
            }
        )

    def get(self, key: str) -> torch.Tensor:
        return torch.cat([p[key] for p in self.parts])


def merged(records: list[Record]) -> Record:
    """One ``Record`` holding the parts of ``records``, in order."""
    out = Record()
    for r in records:
        out.parts.extend(r.parts)
    return out


def slot_records(model, prompts, answers, *, refs=None, companions=(), cap=0, stop=frozenset(), decoder=None):
    """Decode rows token by token on one decoder (default ``HFDecoder``): measured rows
    ``prompts[i]`` then ``answers[i]`` teacher-forced (None: decoded greedily here, at most ``cap``
    tokens, up to a ``stop`` id), and ``companions`` (prompts decoded greedily beside them, not
    recorded). One head call over the step's rows, as ``rows.advance`` does.

    Returns ``(records, answers, hidden)``: a ``Record`` per measured row (against ``refs[i]``),
    the answers (the given ones or the greedy ones) and each measured row's hidden states."""
    dec = decoder if decoder is not None else HFDecoder(model)
    head = lm_head_of(model)
    rows = list(prompts) + list(companions)
    n = len(prompts)
    given = list(answers) + [None] * len(companions)
    slots = [dec.add_row() for _ in rows]
    out = [list(a) if a is not None else [] for a in given]
    target = [len(a) if a is not None else cap for a in given]
    records = [Record() for _ in range(n)]
    hidden = [[] for _ in range(n)]
    made = [0] * len(rows)
    feeds = {slots[i]: list(p) for i, p in enumerate(rows)}
    index = {s: i for i, s in enumerate(slots)}
    with torch.no_grad():
        while feeds:
            hs = dec.step(feeds)
            order = list(feeds)
            states = torch.cat([hs[s][-1:] for s in order])
            logits = head(states)
            greedy = logits.argmax(-1).tolist()
            feeds = {}
            for j, s in enumerate(order):
                i = index[s]
                if i < n:
                    ref = None if refs is None else refs[i][made[i] : made[i] + 1]
                    records[i].add(logits[j : j + 1], ref)
                    hidden[i].append(states[j : j + 1])
                if given[i] is None:
                    out[i].append(greedy[j])
                tok = out[i][made[i]]
                made[i] += 1
                if made[i] < target[i] and not (given[i] is None and tok in stop):
                    feeds[s] = [tok]
    return records, out[:n], [torch.cat(h) for h in hidden]


def alone(model, prompts, answers, refs, **options):
    """``slot_records`` one problem at a time, each alone on its own one-row ``HFDecoder``."""
    records, outs, hidden = [], [], []
    for i, (p, a) in enumerate(zip(prompts, answers)):
        r, o, h = slot_records(model, [p], [a], refs=None if refs is None else [refs[i]], **options)
        records += r
        outs += o
        hidden += h
    return records, outs, hidden


def cache_records(model, prompts, answers, refs):
    """``slot_records`` one row at a time on the sequential driver's ``CacheDecoder``."""
    recs = []
    for i, (p, a) in enumerate(zip(prompts, answers)):
        r, _, _ = slot_records(model, [p], [a], refs=[refs[i]], decoder=CacheDecoder(model))
        recs.append(r[0])
    return recs


@torch.no_grad()
def full_records(model, prompts, answers, refs):
    """One plain forward (``use_cache=False``, LM head included) per sequence."""
    recs = []
    for p, a, ref in zip(prompts, answers, refs):
        ids = torch.tensor([list(p) + list(a[:-1])])
        logits = model(input_ids=ids, use_cache=False).logits[0, len(p) - 1 :]
        rec = Record()
        rec.add(logits, ref)
        recs.append(rec)
    return recs


@torch.no_grad()
def prefill_records(model, prompts, answers, refs):
    """The whole sequence fed to a one-row slot decoder in one step, one head call on it all."""
    head = lm_head_of(model)
    recs = []
    for p, a, ref in zip(prompts, answers, refs):
        dec = HFDecoder(model)
        slot = dec.add_row()
        h = dec.step({slot: list(p) + list(a[:-1])})[slot][len(p) - 1 :]
        rec = Record()
        rec.add(head(h), ref)
        recs.append(rec)
    return recs


def fused_record(hidden, weight, ref, backend) -> Record:
    """A ``Record`` of ``latent_policy_grad`` at ``hidden`` against ``ref`` (``[n, K]`` ids of
    ``weight``'s rows): its argmax, and its logits at ``ref`` as ``logprob + lse`` of one
    teacher-forced call per candidate. ``gap`` holds ``logprob_0 - logprob_1`` (lse cancels)."""
    argmax = latent_policy_grad(hidden, weight, need_grad=False, backend=backend).argmax
    logp, vals = [], []
    for k in range(ref.shape[1]):
        out = latent_policy_grad(hidden, weight, tokens=ref[:, k], need_grad=False, backend=backend)
        logp.append(out.logprob)
        vals.append(out.logprob + out.lse)
    rec = Record()
    gap = logp[0] - logp[1]
    rec.parts.append(
        {"argmax": argmax, "gap": gap, "gap_rel": gap, "ids": ref, "at_ref": torch.stack(vals, 1)}
    )
    return rec


def quantiles(x: torch.Tensor) -> tuple[float, float, float]:
    x = x.double()
    if x.numel() == 0:
        return (math.nan,) * 3
    q = torch.quantile(x, torch.tensor([1.0, 0.999, 0.99], dtype=torch.float64))
    return tuple(float(v) for v in q)


def compare(dtype: str, name: str, base_at_ref, base_argmax, base_gap, other: Record, note: str = "") -> dict:
    """One row of perturbations.csv: ``other`` against the baseline (its values at the baseline's
    top ``K`` ids, column 0 and 1 its top two)."""
    o_ref = other.get("at_ref")
    if "gap_rel" in other.parts[0]:
        o_gap = other.get("gap_rel")
    else:
        o_gap = o_ref[:, 0] - o_ref[:, 1]
    dgap = ((o_gap - (base_at_ref[:, 0] - base_at_ref[:, 1])).abs()).double()
    dlogit = (o_ref - base_at_ref).abs().amax(dim=1).double()
    flips = (other.get("argmax") != base_argmax).nonzero().flatten()
    row = {"dtype": dtype, "reordering": name, "decisions": int(dgap.numel()), "flips": int(flips.numel())}
    for key, vals in (("dgap", dgap), ("dlogit", dlogit)):
        mx, p999, p99 = quantiles(vals)
        row.update({f"{key}_max": mx, f"{key}_p999": p999, f"{key}_p99": p99})
    row["flip_gaps"] = " ".join(f"{float(base_gap[i]):.3g}" for i in flips[:20])
    row["note"] = note
    return row


def nice_ceiling(x: float) -> float:
    """The smallest of 1, 2, 5 times a power of ten that is >= ``x``."""
    if x <= 0:
        return 0.0
    e = math.floor(math.log10(x))
    for m in (1, 2, 5, 10):
        if m * 10.0**e >= x * (1 - 1e-12):
            return m * 10.0**e
    return 10.0 ** (e + 1)


def gap_row(dtype: str, source: str, gaps: torch.Tensor) -> dict:
    g = gaps.double()
    q = [0.0, 0.001, 0.01, 0.05, 0.1, 0.5]
    vals = torch.quantile(g, torch.tensor(q, dtype=torch.float64)).tolist() if g.numel() else [math.nan] * 6
    row = {"dtype": dtype, "source": source, "decisions": int(g.numel()), "zero_gaps": int((g == 0).sum())}
    row.update({f"p{100 * p:g}": v for p, v in zip(q, vals)})
    return row


def fragile_rows(
    dtype: str, gaps_per_answer: list[torch.Tensor], thresholds, recommended: float
) -> list[dict]:
    all_gaps = torch.cat(gaps_per_answer)
    rows = []
    for t in sorted(set(thresholds) | {recommended}):
        below = int((all_gaps < t).sum())
        answers = sum(bool((g < t).any()) for g in gaps_per_answer)
        rows.append(
            {
                "dtype": dtype,
                "tie_gap": t,
                "recommended": t == recommended,
                "decisions": int(all_gaps.numel()),
                "below": below,
                "below_frac": below / max(1, all_gaps.numel()),
                "answers": len(gaps_per_answer),
                "answers_with_one": answers,
                "answers_frac": answers / max(1, len(gaps_per_answer)),
            }
        )
    return rows


def set_threads(n: int) -> None:
    torch.set_num_threads(n)


def latent_step(model, latents, threads: int):
    """One latent step (torch backend, reward -1) at ``threads`` threads: z' and the eager head's
    logits of z' at the same thread count, and the re-decoded tokens."""
    set_threads(threads)
    steps = LatentSteps(model, SeekConfig(backend="torch"), "torch")
    state = steps.open(latents)
    tokens = steps.step([state], [-1.0], [0], ["bench"], [True])[0]
    z = steps.latents_of(state).detach().clone()
    with torch.no_grad():
        logits = lm_head_of(model)(z)
    set_threads(1)
    return z, logits, tokens


def measure(dtype: str, model, tok, prompts, companions, args, log) -> tuple[list[dict], list[dict], dict]:
    """All reorderings for one dtype: (perturbation rows, gap rows, fragile material)."""
    stop = answer_stop_ids(tok)
    set_threads(1)
    t0 = time.perf_counter()
    base, answers, hidden = alone(model, prompts, [None] * len(prompts), None, cap=args.tokens, stop=stop)
    log(f"{dtype}: baseline decoded ({sum(map(len, answers))} decisions, {time.perf_counter() - t0:.0f} s)")
    refs = [r.get("ids") for r in base]
    b_ref = torch.cat([r.get("at_ref") for r in base])
    b_arg = torch.cat([r.get("argmax") for r in base])
    b_gap = torch.cat([r.get("gap") for r in base])
    rows = []

    def add(name, recs, note=""):
        other = Record()
        for r in recs:
            other.parts.extend(r.parts)
        rows.append(compare(dtype, name, b_ref, b_arg, b_gap, other, note))
        log(f"{dtype}: {name}: {markdown_table([rows[-1]], PERTURBATION_COLUMNS).splitlines()[-1]}")

    set_threads(2)
    recs2, _, _ = alone(model, prompts, answers, refs)
    set_threads(1)
    add("threads", recs2, "slot decoder, token by token, 2 threads vs 1")

    full1 = full_records(model, prompts, answers, refs)
    set_threads(2)
    full2 = full_records(model, prompts, answers, refs)
    set_threads(1)
    f1, f2 = merged(full1), merged(full2)
    rows.append(
        compare(
            dtype,
            "threads-full",
            f1.get("at_ref"),
            f1.get("argmax"),
            f1.get("gap"),
            f2,
            "model(...) whole sequence incl. head, 2 threads vs 1 (both full forwards)",
        )
    )
    log(f"{dtype}: threads-full done")

    batch_recs, _, _ = slot_records(
        model, prompts, answers, refs=refs, companions=companions, cap=args.tokens, stop=stop
    )
    add("batch16" if args.batch == 16 else f"batch{args.batch}", batch_recs, f"one row of {args.batch}")
    add("prefill", prefill_records(model, prompts, answers, refs), "one many-token forward vs token by token")
    add("cache-decoder", cache_records(model, prompts, answers, refs), "CacheDecoder vs HFDecoder, batch 1")
    add("full-forward", full1, "plain model(...) forward vs slot decoder token by token")
    model.set_attn_implementation("eager")
    try:
        eager = full_records(model, prompts, answers, refs)
    finally:
        model.set_attn_implementation("sdpa")
    e = merged(eager)
    rows.append(
        compare(
            dtype,
            "eager-attn",
            f1.get("at_ref"),
            f1.get("argmax"),
            f1.get("gap"),
            e,
            "full forward eager vs sdpa",
        )
    )
    log(f"{dtype}: eager-attn done")

    W = lm_head_of(model).weight.detach()
    h = torch.cat(hidden)
    ref = torch.cat(refs)
    add("fused-torch", [fused_record(h, W, ref, "torch")], "latent_policy_grad torch vs F.linear + argmax")

    # triton (interpreted on CPU): the smallest-gap positions over a vocabulary slice
    pick = torch.argsort(b_gap)[: args.triton_rows]
    cand = torch.unique(ref[pick].flatten())
    taken = set(cand.tolist())
    rest = torch.tensor(
        [i for i in range(W.shape[0]) if i not in taken][: max(0, args.triton_vocab - cand.numel())]
    )
    ids = torch.sort(torch.cat([cand, rest])).values
    remap = torch.full((W.shape[0],), -1, dtype=torch.long)
    remap[ids] = torch.arange(ids.numel())
    t0 = time.perf_counter()
    try:
        rec = fused_record(h[pick], W[ids], remap[ref[pick]], "triton")
        rec.parts[0]["argmax"] = ids[rec.parts[0]["argmax"]]
        status = f"{pick.numel()} smallest-gap positions, {ids.numel()}-id vocabulary slice"
        if os.environ.get("TRITON_INTERPRET") == "1":
            status += ", TRITON_INTERPRET=1"
        # the eager side restricted to the same ids, so that both argmaxes range over the slice
        sub = lm_head_of(model)(h[pick]).float()[:, ids]
        rows.append(
            compare(dtype, "fused-triton", b_ref[pick], ids[sub.argmax(-1)], b_gap[pick], rec, status)
        )
    except Exception as exc:  # noqa: BLE001 - a triton that cannot run here is a result, not a crash
        rows.append(
            {"dtype": dtype, "reordering": "fused-triton", "note": f"failed: {type(exc).__name__}: {exc}"}
        )
    log(f"{dtype}: fused-triton done ({time.perf_counter() - t0:.0f} s)")

    # the latent step at 1 vs 2 threads
    cfg = SeekConfig()
    a1, a2, redecoded = Record(), Record(), []
    zdiff = 0.0
    for hid in hidden:
        lat = hid[: max(1, cfg.update_length(hid.shape[0]))]
        z1, l1, t1 = latent_step(model, lat, 1)
        z2, l2, _ = latent_step(model, lat, 2)
        zdiff = max(zdiff, float((z1.float() - z2.float()).abs().max()))
        a1.add(l1, None)
        a2.add(l2, a1.parts[-1]["ids"])
        redecoded.append(a1.parts[-1]["gap"])
    rows.append(
        compare(
            dtype,
            "adam-threads",
            a1.get("at_ref"),
            a1.get("argmax"),
            a1.get("gap"),
            a2,
            f"logits of W z' after one Adam step, 2 threads vs 1 (max |dz'| {zdiff:.3g})",
        )
    )
    log(f"{dtype}: adam-threads done")
    gaps = [gap_row(dtype, "answers", b_gap), gap_row(dtype, "latent re-decodes", torch.cat(redecoded))]
    per_answer = [r.get("gap") for r in base]
    return rows, gaps, {"per_answer": per_answer, "redecoded": redecoded}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="GSM8K test JSONL (default: ../shared/data/gsm8k_test.jsonl)")
    ap.add_argument("--problems", type=int, default=8, help="measured problems (default 8)")
    ap.add_argument("--tokens", type=int, default=128, help="most answer tokens (default 128)")
    ap.add_argument("--batch", type=int, default=16, help="rows of the batched reordering (default 16)")
    ap.add_argument("--triton-rows", type=int, default=8, help="positions of the triton comparison")
    ap.add_argument(
        "--triton-vocab", type=int, default=1024, help="vocabulary slice of the triton comparison"
    )
    ap.add_argument("--dtypes", help=f"comma-separated, of {list(DTYPES)} (default fp32,bf16; --quick: fp32)")
    ap.add_argument(
        "--quick", action="store_true", help="smoke run: 1 problem, 8 tokens, fp32, out of results/"
    )
    ap.add_argument(
        "--out", help="results folder (default results/ties; --quick: /tmp/latentseek-bench-quick/ties)"
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.problems, args.tokens, args.batch, args.triton_rows, args.triton_vocab = 1, 8, 2, 1, 128
        args.dtypes = args.dtypes or "fp32"
    args.dtypes = args.dtypes or "fp32,bf16"
    check_at_least(ap, args, {"problems": 1, "tokens": 2, "triton_rows": 1, "triton_vocab": 2 * K})
    if args.batch < args.problems:
        ap.error(f"--batch {args.batch}: expected at least --problems ({args.problems})")
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    if not dtypes or any(d not in DTYPES for d in dtypes):
        ap.error(f"--dtypes {args.dtypes!r}: expected comma-separated names of {list(DTYPES)}")
    data = find_data(args.data)
    if not data.is_file():
        ap.error(f"--data {data}: no such file (set --data or LATENTSEEK_DATA)")
    out = (
        Path(args.out)
        if args.out
        else Path("/tmp/latentseek-bench-quick/ties" if args.quick else RESULTS / "ties")
    )
    bench_device(ap, "cpu", 1)
    start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - start:6.0f} s] {msg}", flush=True)

    problems = load_problems(data, dataset="gsm8k")[: args.batch]
    perturb, gaps, fragile = [], [], []
    for dtype in dtypes:
        model, tok = load_model(dtype=DTYPES[dtype])
        prompts = [
            tok(build_prompt(tok, p.question, dataset="gsm8k", style="boxed")).input_ids for p in problems
        ]
        rows, g, material = measure(
            dtype, model, tok, prompts[: args.problems], prompts[args.problems :], args, log
        )
        del model
        measured = [r["dgap_max"] for r in rows if isinstance(r.get("dgap_max"), float)]
        largest = max((v for v in measured if not math.isnan(v)), default=0.0)
        recommended = nice_ceiling(SAFETY * largest)
        frag = []
        for source, gaps_of, grid in (
            ("answers", material["per_answer"], GRID),
            ("latent re-decodes", material["redecoded"], ()),
        ):
            for r in fragile_rows(dtype, gaps_of, grid, recommended):
                r.update(source=source, largest_dgap=largest, safety=SAFETY)
                frag.append(r)
        rows = [{c: r.get(c, "") for c in PERTURBATION_COLUMNS + ["flip_gaps", "note"]} for r in rows]
        for name, part in (("perturbations", rows), ("gaps", g), ("fragile", frag)):
            path = write_rows(str(out / f"{name}.csv"), part)
        log(f"{dtype}: rows written to {path.parent}")
        perturb += rows
        gaps += g
        fragile += frag
    print(markdown_table(perturb, PERTURBATION_COLUMNS + ["flip_gaps"]))
    print(markdown_table(gaps, list(gaps[0])))
    rec = [r for r in fragile if r["recommended"]]
    print(
        markdown_table(
            rec,
            [
                "dtype",
                "source",
                "tie_gap",
                "largest_dgap",
                "below",
                "decisions",
                "below_frac",
                "answers_with_one",
                "answers",
                "answers_frac",
            ],
        )
    )
    print(
        markdown_table(
            [r for r in fragile if r["source"] == "answers"],
            ["dtype", "tie_gap", "below_frac", "answers_frac"],
        )
    )
    log("done")


if __name__ == "__main__":
    main()
