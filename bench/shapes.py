"""LM-head shapes of real models, for the benchmarks.

The numbers are the public ``config.json`` values of each model on the Hugging Face hub
(``vocab_size``, ``hidden_size``, ``tie_word_embeddings``, ``torch_dtype``, and Gemma 2's
``final_logit_softcapping``), written here from those configs; no file is downloaded.
``V`` is the LM head's row count (``vocab_size``: Qwen pads it above the tokenizer's
~151.6k entries, which is what the head really multiplies by), ``d`` its width
(``hidden_size``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HeadShape:
    name: str  # short CLI name
    model: str  # hub id the numbers come from
    V: int  # vocab_size: rows of the LM head
    d: int  # hidden_size: width of the latents
    dtype: str  # torch_dtype of the released checkpoint
    tied: bool  # tie_word_embeddings: the head is the input embedding
    softcap: float | None = None  # final_logit_softcapping (Gemma 2), else None


MODELS: dict[str, HeadShape] = {
    s.name: s
    for s in (
        # HuggingFaceTB/SmolLM2-135M(-Instruct)/config.json: vocab 49152, hidden 576, tied, bf16.
        # The embedded test model of this project.
        HeadShape("smollm2", "HuggingFaceTB/SmolLM2-135M-Instruct", 49152, 576, "bfloat16", True),
        # Qwen/Qwen2.5-0.5B(-Instruct)/config.json: vocab 151936, hidden 896, tied, bf16.
        HeadShape("qwen2.5-0.5b", "Qwen/Qwen2.5-0.5B-Instruct", 151936, 896, "bfloat16", True),
        # Qwen/Qwen2.5-1.5B(-Instruct)/config.json: vocab 151936, hidden 1536, tied, bf16.
        HeadShape("qwen2.5-1.5b", "Qwen/Qwen2.5-1.5B-Instruct", 151936, 1536, "bfloat16", True),
        # Qwen/Qwen2.5-7B(-Instruct)/config.json: vocab 152064, hidden 3584, untied, bf16.
        # The paper's main model.
        HeadShape("qwen2.5-7b", "Qwen/Qwen2.5-7B-Instruct", 152064, 3584, "bfloat16", False),
        # Qwen/Qwen2.5-14B(-Instruct)/config.json: vocab 152064, hidden 5120, untied, bf16.
        HeadShape("qwen2.5-14b", "Qwen/Qwen2.5-14B-Instruct", 152064, 5120, "bfloat16", False),
        # meta-llama/Llama-3.1-8B(-Instruct)/config.json: vocab 128256, hidden 4096, untied, bf16.
        HeadShape("llama-3.1-8b", "meta-llama/Llama-3.1-8B-Instruct", 128256, 4096, "bfloat16", False),
        # google/gemma-2-2b(-it)/config.json: vocab 256000, hidden 2304, tied, bf16 (released as
        # float32 for the base model), final_logit_softcapping 30.0 (logits = 30 tanh(l / 30)).
        HeadShape("gemma-2-2b", "google/gemma-2-2b-it", 256000, 2304, "bfloat16", True, softcap=30.0),
    )
}

# Default sweeps (see bench/README.md).
CPU_MODELS = ("smollm2", "qwen2.5-0.5b")
CPU_N = (64, 300)
GPU_N = (16, 64, 300)
# The GPU grid is the cross product of these (both ends of the real V range and the widths of
# the 0.5B, 7B and 8B heads).
GPU_V = (49152, 128256, 152064)
GPU_D = (896, 3584, 4096)

# Qwen/Qwen2.5-1.5B-Instruct/config.json, the fields that size the decoder (for a random-weight
# model of the real shape in bench_seek_gpu.py).
QWEN25_1_5B_CONFIG = dict(
    vocab_size=151936,
    hidden_size=1536,
    intermediate_size=8960,
    num_hidden_layers=28,
    num_attention_heads=12,
    num_key_value_heads=2,
    max_position_embeddings=32768,
    rope_theta=1000000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
    hidden_act="silu",
)


def grid_shape(V: int, d: int) -> HeadShape:
    """A synthetic head of ``V x d`` (named after a real model when one has that shape)."""
    for s in MODELS.values():
        if s.V == V and s.d == d:
            return s
    return HeadShape(f"V{V}xd{d}", "synthetic", V, d, "bfloat16", False)


def resolve(names) -> list[HeadShape]:
    """``HeadShape``s for CLI names; a ``VxD`` string (``152064x4096``) makes a synthetic one."""
    out = []
    for n in names:
        if n in MODELS:
            out.append(MODELS[n])
            continue
        parts = n.lower().split("x")
        if len(parts) == 2 and all(p.isdigit() for p in parts):
            out.append(grid_shape(int(parts[0]), int(parts[1])))
            continue
        raise ValueError(f"model {n!r}: known names are {sorted(MODELS)}, or give 'VxD' (e.g. 151936x896)")
    return out
