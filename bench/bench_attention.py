"""What a slot-store forward costs by rows, feed width and cache length, with transformers' sdpa
attention (key/value heads repeated for their query heads whenever more than one token per row
is fed) and with ``decoding.attention.slot_gqa_attention`` (the heads grouped inside SDPA).

Embedded SmolLM2 in fp32 (9 query heads over 3 key/value heads), ``HFDecoder`` with every row
holding ``--cached`` positions (zeros: attention costs the same whatever the values), one forward
of ``rows x width`` tokens, the median of ``--repeats`` after one warm-up. These numbers chose
``decoding.drafts``' cost model (``CPU_FORWARD_COST``).

Run alone on the machine: ``python bench/bench_attention.py --threads 2`` (about 3 minutes on
the 2-core CPU); results in ``bench/results/attention/attention.csv`` and ``README.md``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import bench_device, env_info, markdown_table, write_rows  # noqa: E402

from latentseek_fast.app.models import load_model  # noqa: E402
from latentseek_fast.decoding.slots import HFDecoder  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "attention"
COLUMNS = ["cached", "rows", "width", "sdpa_ms", "slot_gqa_ms", "speedup"]


def forward_ms(dec: HFDecoder, rows: list[int], n: int, width: int, cached: int, repeats: int) -> float:
    times = []
    for _ in range(repeats + 1):
        feeds = {r: [100] * width for r in rows[:n]}
        t0 = time.perf_counter()
        dec.step(feeds)
        times.append(time.perf_counter() - t0)
        for r in rows[:n]:
            dec.rollback(r, cached)
    return statistics.median(times[1:]) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cached", default="100,300,400", help="cached positions per row (comma-separated)")
    ap.add_argument("--rows", default="1,16,64")
    ap.add_argument("--widths", default="1,2,4,9,16")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    bench_device(ap, "cpu", args.threads)
    model, _ = load_model(dtype="float32")
    cached_list = [int(x) for x in args.cached.split(",")]
    ns = [int(x) for x in args.rows.split(",")]
    widths = [int(x) for x in args.widths.split(",")]
    dec = HFDecoder(model)
    gqa = dec.attn_config
    if gqa is None:
        ap.error("the model does not run sdpa on a CPU: nothing to compare")
    rows = [dec.add_row() for _ in range(max(ns))]
    results = []
    for cached in cached_list:
        dec._grow(len(rows), cached + max(widths) + 1)
        for r in rows:
            dec.lengths[r] = cached  # zeros in the store: the cost does not depend on the values
        for n in ns:
            for w in widths:
                dec.attn_config = None  # transformers' sdpa
                plain = forward_ms(dec, rows, n, w, cached, args.repeats)
                dec.attn_config = gqa
                grouped = forward_ms(dec, rows, n, w, cached, args.repeats)
                row = {"cached": cached, "rows": n, "width": w, "sdpa_ms": round(plain, 1),
                       "slot_gqa_ms": round(grouped, 1), "speedup": round(plain / grouped, 2)}  # fmt: skip
                print(row, flush=True)
                results.append(row)
    out = Path(args.out)
    write_rows(str(out / "attention.csv"), results)
    env = env_info()
    (out / "README.md").write_text(
        "# Slot-store forwards: transformers' sdpa vs grouped heads (`bench/bench_attention.py`)\n\n"
        f"Machine: {env['machine']}, {args.threads} threads; torch {env['torch']}, transformers "
        f"{env['transformers']}; commit {env['commit']}. Embedded SmolLM2 fp32, one forward of rows x "
        f"width tokens over rows holding `cached` positions, median of {args.repeats} (ms).\n\n"
        + markdown_table(results, COLUMNS)
        + "\n"
    )
    print(f"wrote {out}/attention.csv and README.md")


if __name__ == "__main__":
    main()
