"""End to end: the research code's way (full recompute per token, verifiers one by one) against ours.

On the embedded SmolLM2-135M and GSM8K test problems (``../shared/data/gsm8k_test.jsonl``):

1. ``iteration``: one seek iteration whose continuation is exactly ``--tokens`` new tokens (the stop
   test off), with a constant reward, timed for the research way and for ours (reference and
   torch latent backends). The produced answers must be identical.
2. ``seek``: whole seeks with self-reward on ``--problems`` problems, research way vs ours
   (KV cache, batched verifiers). Final answers and reward histories must be identical.

Run: ``python bench/bench_seek.py --threads 1`` (about 20 minutes on a 2-core CPU).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import markdown_table, write_rows  # noqa: E402

from latentseek_fast import SeekConfig, baseline, compat, seek  # noqa: E402
from latentseek_fast.app.models import load_model  # noqa: E402
from latentseek_fast.engine.sequential import continue_seek  # noqa: E402
from latentseek_fast.prompts import build_prompt  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k_test.jsonl"


class Constant:
    def get_reward(self, question, solution):
        return -1.0


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def bench_iteration(model, tok, question, tokens: int, repeats: int) -> list[dict]:
    prompt = build_prompt(tok, question, dataset="gsm8k", style="boxed")
    answer, states, ids = compat.original_generation(prompt, model, tok, "cpu")
    P = len(tok(prompt).input_ids)
    latents = torch.cat(states)
    rows, texts = [], {}
    for way in ("research", "ours-reference", "ours-torch"):
        times = []
        for _ in range(repeats):
            if way == "research":
                (text, *_), dt = _timed(
                    lambda: baseline.optimized_generation(
                        Constant(),
                        model,
                        tok,
                        "cpu",
                        question,
                        prompt,
                        answer,
                        states,
                        ids,
                        max_num_steps=1,
                        max_new_tokens=tokens - 1,
                        k=0.2,
                        lr=0.05,
                        eos_stop=False,
                    )
                )
            else:
                backend = way.split("-")[1]
                cfg = SeekConfig(
                    max_steps=1,
                    rho=0.2,
                    lr=0.05,
                    backend=backend,
                    latent_dtype="model" if backend == "reference" else "fp32",
                )
                out, dt = _timed(
                    lambda cfg=cfg: continue_seek(
                        model,
                        tok,
                        question="",
                        prompt_ids=ids[0, :P].tolist(),
                        answer_ids=ids[0, P:].tolist(),
                        latents=latents,
                        answer_text="",
                        r0=-1.0,
                        reward=lambda q, a: -1.0,
                        config=cfg,
                        cont_stop=frozenset(),
                        cont_cap=tokens,
                    )
                )
                text = out.answer
            times.append(dt)
        texts[way] = text
        med = sorted(times)[len(times) // 2]
        rows.append(
            {
                "bench": "iteration",
                "way": way,
                "new_tokens": tokens,
                "T": len(states),
                "L": int(0.2 * len(states)),
                "seconds": med,
                "runs": repeats,
            }
        )
    base = rows[0]["seconds"]
    for r in rows:
        r["speedup_vs_research"] = base / r["seconds"]
        r["same_answer"] = texts[r["way"]] == texts["research"]
    return rows


def bench_seek(model, tok, problems, verifier_tokens: int, max_new_tokens: int, steps: int) -> list[dict]:
    from latentseek_fast.rewards import SelfReward

    rows = []
    for i, item in enumerate(problems):
        q = item["question"]
        prompt = build_prompt(tok, q, dataset="gsm8k", style="boxed")
        # The research code caps at "more than N tokens made" (N + 1); ours at N: pass N - 1 to it.
        kw = dict(
            max_num_steps=steps, max_new_tokens=max_new_tokens - 1, k=0.2, lr=0.05, reward_threshold=-0.2
        )

        def research(q=q, prompt=prompt, kw=kw):
            rm = SelfReward(model, tok, max_new_tokens=verifier_tokens, batched=False)
            a, s, ids = baseline.original_generation(prompt, model, tok, "cpu", cap=max_new_tokens - 1)
            return baseline.optimized_generation(rm, model, tok, "cpu", q, prompt, a, s, ids, **kw)

        def ours(q=q, prompt=prompt):
            rm = SelfReward(model, tok, max_new_tokens=verifier_tokens, batched=True)
            res = seek(
                model,
                tok,
                q,
                rm,
                prompt=prompt,
                max_steps=steps,
                max_new_tokens=max_new_tokens,
                rho=0.2,
                lr=0.05,
                latent_dtype="model",
            )
            return res.answer, res.rewards, res.original_length

        r_out, r_dt = _timed(research)
        o_out, o_dt = _timed(ours)
        rows.append(
            {
                "bench": "seek",
                "problem": i,
                "research_s": r_dt,
                "ours_s": o_dt,
                "speedup": r_dt / o_dt,
                "iterations": len(o_out[1]) - 1,
                "T": o_out[2],
                "same_answer": r_out[0] == o_out[0],
                "same_rewards": r_out[1] == o_out[1],
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tokens", type=int, default=256, help="continuation length of the iteration bench")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--problems", type=int, default=2, help="GSM8K problems in the whole-seek bench")
    ap.add_argument("--verifier-tokens", type=int, default=128)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--skip-seek", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = load_model()
    problems = [json.loads(x) for x in DATA.read_text().splitlines()[: max(1, args.problems)]]
    rows = bench_iteration(model, tok, problems[0]["question"], args.tokens, args.repeats)
    print(
        markdown_table(rows, ["way", "new_tokens", "T", "L", "seconds", "speedup_vs_research", "same_answer"])
    )
    write_rows("seek_iteration", rows)
    if not args.skip_seek:
        srows = bench_seek(
            model, tok, problems[: args.problems], args.verifier_tokens, args.max_new_tokens, args.steps
        )
        print(
            markdown_table(
                srows,
                [
                    "problem",
                    "T",
                    "iterations",
                    "research_s",
                    "ours_s",
                    "speedup",
                    "same_answer",
                    "same_rewards",
                ],
            )
        )
        write_rows("seek_whole", srows)


if __name__ == "__main__":
    main()
