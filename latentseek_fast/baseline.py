"""The research code's way, re-implemented by us: no KV cache, the whole sequence re-run for every
new token, the stop test done by decoding each token's text.

It is the slow baseline of ``bench/bench_seek.py`` and an independent oracle for the tests of
``compat`` and ``seek``: it shares no decoding code with them, only the stop words and the
formula for L, which are definitions rather than code under test.
"""

from __future__ import annotations

import torch

from .config import update_length
from .decoding.stops import STOP_WORDS


@torch.no_grad()
def _next(model, ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    h = model.model(ids)[0][:, -1]
    return h, int(torch.argmax(model.lm_head(h), dim=-1).item())


def original_generation(input_text, model, tokenizer, device, cap: int = 1024):
    stops = set(STOP_WORDS) | {tokenizer.eos_token}
    ids = tokenizer([input_text], return_tensors="pt").input_ids.to(device)
    answer, latents, made = [], [], 0
    while True:
        h, tok = _next(model, ids)
        latents.append(h.clone())
        answer.append(tok)
        if tokenizer.decode(tok) in stops:
            break
        ids = torch.cat([ids, torch.tensor([[tok]], device=ids.device)], dim=-1)
        made += 1
        if made > cap:
            break
    return tokenizer.decode(answer), latents, ids


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
    eos_stop=True,
):
    """``eos_stop=False`` (benchmarks only) makes every continuation exactly ``max_new_tokens + 1`` long."""
    eos = tokenizer.eos_token if eos_stop else None
    reward = float(reward_model.get_reward(question, original_answer))
    history = [reward]
    T = len(original_hidden_states_list)
    L = update_length(T, k)
    if L <= 0:
        return original_answer, history, T, 0, L
    P = tokenizer([input_text], return_tensors="pt").input_ids.shape[1]
    prefix = input_ids[0][P : P + start_index].tolist()
    base = input_ids[:, : P + start_index]
    z = torch.nn.Parameter(
        torch.stack([s.detach().clone() for s in original_hidden_states_list[start_index : start_index + L]])
    )
    opt = torch.optim.Adam([z], lr=lr)
    latest = None
    for _ in range(max_num_steps):
        if reward > reward_threshold:
            final = latest if latest is not None else original_answer
            return final, history, T, len(tokenizer.encode(final)), L
        opt.zero_grad()
        probs = torch.softmax(model.lm_head(z), dim=-1) + 1e-8
        chosen = torch.argmax(probs, dim=-1).squeeze(-1)
        picked = probs[torch.arange(L), 0, chosen]
        (-reward * torch.log(picked + 1e-10).sum()).backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_([z], grad_clip)
        opt.step()
        with torch.no_grad():
            redecoded = torch.argmax(model.lm_head(z), dim=-1).squeeze(-1).tolist()
        seq = prefix + redecoded
        ids = torch.cat([base, torch.tensor([redecoded], device=base.device)], dim=-1)
        made = 0
        while True:
            _, tok = _next(model, ids)
            seq.append(tok)
            ids = torch.cat([ids, torch.tensor([[tok]], device=ids.device)], dim=-1)
            made += 1
            if tokenizer.decode(tok) == eos or made > max_new_tokens:
                break
        latest = tokenizer.decode(seq)
        reward = float(reward_model.get_reward(question, latest))
        history.append(reward)
    return latest, history, T, len(tokenizer.encode(latest)), L
