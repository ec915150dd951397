"""Load a GGUF through the conversion cache on every rank of a process group (tests/test_models.py).

Run under torchrun with ``$LATENTSEEK_CACHE`` at a cold cache. Each rank joins a gloo group
first, as ``eval`` does before it loads the model, then calls ``models.load_model`` and prints
``rank R sum S`` (the sum of the LM head's weights). ``--fake DIR``: "converting" loads the HF
directory DIR instead of parsing a real GGUF (seconds, not tens of seconds) and appends a line
to ``--calls`` for each conversion, so the test can count them. ``--first R``: the other
ranks wait a few seconds before loading, so that rank R converts (transformers' rank-0-only
save bit rank 1).
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.distributed as tdist

from latentseek_fast.app import models

# Enough for rank --first to take the conversion lock: loading the tiny fake takes well under 1 s.
FIRST_HEAD_START_S = 3.0


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("gguf")
    p.add_argument("--fake", default=None)
    p.add_argument("--calls", default=None)
    p.add_argument("--first", type=int, default=None)
    args = p.parse_args()
    if args.fake:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        def fake_load(gguf):
            with open(args.calls, "a") as f:
                f.write(f"{os.environ['RANK']}\n")
            return AutoModelForCausalLM.from_pretrained(args.fake), AutoTokenizer.from_pretrained(args.fake)

        models._load_gguf = fake_load
    tdist.init_process_group("gloo")
    try:
        if args.first is not None and tdist.get_rank() != args.first:
            time.sleep(FIRST_HEAD_START_S)
        model, _ = models.load_model(args.gguf)
        print(f"rank {tdist.get_rank()} sum {model.lm_head.weight.double().sum().item():.9e}", flush=True)
        tdist.barrier()
    finally:
        tdist.destroy_process_group()
    return 0


if __name__ == "__main__":
    torch.set_num_threads(1)
    raise SystemExit(main())
