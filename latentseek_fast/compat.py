"""Drop-in replacements for the research code's ``original_generation`` / ``optimized_generation``.

Same arguments, same return values, same stop rules (``docs/algorithm.md``, "Interface details of
the research code"), with a KV cache
instead of re-running the whole sequence per token. By default the latent step is the research
code's own (autograd, ``torch.optim.Adam`` on model-dtype latents), so an fp32 model gives the same
answers; ``configure(backend="auto", latent_dtype="fp32")`` switches to the fused fast path.
"""

from __future__ import annotations

import torch

from .config import SeekConfig, update_length
from .decoding.greedy import greedy
from .decoding.model import lm_head_of
from .decoding.stops import answer_stop_ids, eos_stop_ids
from .engine.sequential import continue_seek
from .rewards import as_reward

# The research code stops its original generation once more than 1024 tokens were made.
ORIGINAL_TOKEN_CAP = 1025

_settings = {"backend": "reference", "latent_dtype": "model"}


def configure(*, backend: str | None = None, latent_dtype: str | None = None) -> dict:
    """Choose the latent-step backend used by ``optimized_generation``; returns the settings."""
    new = dict(_settings)
    if backend is not None:
        new["backend"] = backend
    if latent_dtype is not None:
        new["latent_dtype"] = latent_dtype
    SeekConfig(**new)  # validates the combination
    _settings.update(new)
    return dict(_settings)


def original_generation(input_text, model, tokenizer, device):
    """Greedy answer to the templated ``input_text``.

    Returns ``(answer, hidden_states_list, input_ids)``: the decoded answer with special tokens
    kept, one ``[1, d]`` latent per generated token (stop token included), and the prompt plus
    every generated token but a final stop token, ``[1, P + T - 1]``.
    """
    lm_head_of(model)
    prompt_ids = tokenizer([input_text], return_tensors="pt").input_ids.to(device)
    gen = greedy(
        model, prompt_ids[0].tolist(), stop=answer_stop_ids(tokenizer), max_tokens=ORIGINAL_TOKEN_CAP
    )
    kept = gen.ids[:-1] if gen.stopped_by == "stop" else gen.ids
    input_ids = torch.cat(
        [prompt_ids, torch.tensor([kept], dtype=torch.long, device=prompt_ids.device)], dim=1
    )
    hidden_states_list = [gen.latents[i : i + 1].clone() for i in range(gen.latents.shape[0])]
    return tokenizer.decode(gen.ids), hidden_states_list, input_ids


def optimized_generation(
    reward_model,
    model,
    tokenizer,
    device,
    question,
    input_text,
    original_answer,
    original_hidden_states_list,
    input_ids,
    start_index=0,
    max_num_steps=10,
    lr=0.03,
    max_new_tokens=1024,
    grad_clip=None,
    k=0.1,
    reward_threshold=-0.2,
):
    """LatentSeek from an original answer, as the research code's function of the same name.

    Returns ``(final_answer, reward_history, original_length, optimized_length, update_length)``.
    """
    reward = as_reward(reward_model)
    history_r0 = reward(question, original_answer)
    T = len(original_hidden_states_list)
    L = update_length(T, k)
    if L <= 0:
        return original_answer, [history_r0], T, 0, L
    config = SeekConfig(
        lr=lr,
        rho=k,
        max_steps=max_num_steps,
        reward_threshold=reward_threshold,
        max_new_tokens=max_new_tokens,
        grad_clip=grad_clip,
        start_index=start_index,
        **_settings,
    )
    P = len(tokenizer([input_text]).input_ids[0])
    input_ids = torch.as_tensor(input_ids).to(device)
    latents = torch.cat([torch.as_tensor(h).reshape(1, -1) for h in original_hidden_states_list]).to(device)
    res = continue_seek(
        model,
        tokenizer,
        question=question,
        prompt_ids=input_ids[0, :P].tolist(),
        answer_ids=input_ids[0, P:].tolist(),
        latents=latents,
        answer_text=original_answer,
        r0=history_r0,
        reward=reward,
        config=config,
        cont_stop=eos_stop_ids(tokenizer),
        cont_cap=max_new_tokens + 1,
    )
    return res.answer, res.rewards, T, len(tokenizer.encode(res.answer)), L
