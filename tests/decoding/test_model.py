"""The model helpers: the LM head, cache truncation, and a cache that rolls back anywhere."""

import pytest
import torch
from conftest import make_tiny_model

from latentseek_fast.decoding.model import cache_length, hidden_states, lm_head_of, new_cache, truncate_cache


def test_truncate_cache(tiny):
    model, tok = tiny
    cache = new_cache(model)
    hidden_states(model, torch.tensor([[5, 6, 7, 8]]), cache)
    truncate_cache(cache, 2)
    assert cache_length(cache) == 2
    with pytest.raises(ValueError, match="cannot truncate"):
        truncate_cache(cache, 3)


def test_model_without_lm_head_is_rejected():
    bare = make_tiny_model(vocab_size=100).model
    with pytest.raises(ValueError, match="LM head"):
        lm_head_of(bare)


@pytest.mark.parametrize("arch", ["qwen2", "mistral"])
def test_sliding_window_cache_rolls_back_past_its_window(arch):
    """A window of 4 and 12 cached positions: the cache keeps them all (the mask applies the
    window), so it is cut back to 3 and refilled with the latents of a full forward."""
    model = make_tiny_model(arch, vocab_size=64, hidden=16, sliding_window=4, dtype=torch.float64)
    ids = torch.randint(3, 64, (1, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model.model(ids)[0][0]
        cache = new_cache(model)
        first = hidden_states(model, ids[:, :7], cache)[0]
        second = hidden_states(model, ids[:, 7:], cache)[0]
        torch.testing.assert_close(torch.cat([first, second]), full, rtol=0, atol=1e-12)
        truncate_cache(cache, 3)
        again = hidden_states(model, ids[:, 3:], cache)[0]
    torch.testing.assert_close(again, full[3:], rtol=0, atol=1e-12)
    # the window is real: the same weights without it give other latents
    assert not torch.allclose(full, make_full_attention_twin(model).model(ids)[0][0], atol=1e-3)


def make_full_attention_twin(model):
    """``model``'s weights under full causal attention."""
    from transformers import AutoModelForCausalLM

    cfg = model.config.to_dict()
    cfg.update(sliding_window=None, use_sliding_window=False, layer_types=None)
    twin = AutoModelForCausalLM.from_config(type(model.config)(**cfg)).to(torch.float64).eval()
    twin.load_state_dict(model.state_dict())
    return twin
