"""Shared fixtures: the embedded model (real, cached conversion) and tiny random models."""

from __future__ import annotations

import os

import pytest
import torch

# The triton backend runs under the numpy interpreter on CPU-only machines.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="session")
def smol():
    """``(model, tokenizer)``: the embedded SmolLM2-135M-Instruct, fp32 (first use converts the GGUF)."""
    from latentseek_fast.models import load_model

    torch.manual_seed(0)
    return load_model(None, dtype="float32")


@pytest.fixture(scope="session")
def tokenizer(smol):
    return smol[1]


def make_tiny_model(
    arch: str = "llama",
    vocab_size: int = 49152,
    hidden: int = 64,
    layers: int = 2,
    seed: int = 0,
    tie: bool = True,
    dtype=torch.float32,
):
    """A random decoder-only model that shares the embedded tokenizer's vocabulary."""
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    cls = {"llama": LlamaConfig, "qwen2": Qwen2Config}[arch]
    cfg = cls(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=tie,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg).to(dtype)
    model.eval()
    return model


@pytest.fixture(scope="session")
def tiny(tokenizer):
    """``(model, tokenizer)``: a 2-layer random Llama over the SmolLM2 vocabulary."""
    return make_tiny_model(), tokenizer
