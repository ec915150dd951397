"""Batched greedy generation with a KV cache, used to run the self-reward verifiers together.

One left-padded batch, explicit ``attention_mask`` and ``position_ids`` (SmolLM2's pad token
is its eos, so the mask must always be passed), a ``DynamicCache`` and, whenever a row reaches
a stop token or its length cap, that row is dropped from the batch and from the cache
(``batch_select_indices``), so one long reply does not make the short ones pay for its length.

In fp32 the outputs are token-identical to generating each prompt alone (the logits of a
padded row differ from the unpadded ones by ~4e-5, far below the gaps between greedy choices;
``docs/notes.md``, "Batched verifiers"); ``tests/test_rewards.py`` checks it on a random tiny
model and on a few steps of the embedded model.
"""

from __future__ import annotations

import torch

from ._util import check_int
from .decode import CHAT_STOP_TOKENS, cache_keyword, forward_params, new_cache


def stop_token_ids(tokenizer, model=None) -> set[int]:
    """Token ids that end a reply: the tokenizer's eos, the model's generation-config eos and the
    chat stop tokens of ``decode.CHAT_STOP_TOKENS`` that exist in the vocabulary as single tokens."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    gen_cfg = getattr(model, "generation_config", None)
    eos = getattr(gen_cfg, "eos_token_id", None)
    if isinstance(eos, int):
        ids.add(eos)
    elif isinstance(eos, (list, tuple)):
        ids.update(int(e) for e in eos)
    vocab = tokenizer.get_vocab()
    for text in CHAT_STOP_TOKENS:
        if text in vocab:
            ids.add(int(vocab[text]))
    return ids


def _pad_id(tokenizer) -> int:
    for tid in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return int(tid)
    return 0


@torch.no_grad()
def greedy_generate_batch(
    model, tokenizer, prompts: list[str], max_new_tokens: int, *, add_special_tokens: bool = False
) -> list[list[int]]:
    """Greedily continue every prompt; returns the new token ids of each prompt, in order.

    ``prompts`` are complete texts (already chat-templated), so by default no special tokens
    are added when tokenizing them. A row stops after a stop token (see ``stop_token_ids``;
    the stop token is included in its output) or after ``max_new_tokens`` new tokens.
    """
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of strings, got a single str")
    check_int("max_new_tokens", max_new_tokens)
    prompts = list(prompts)
    if not prompts:
        return []
    encoded = [tokenizer(p, add_special_tokens=add_special_tokens)["input_ids"] for p in prompts]
    for i, ids in enumerate(encoded):
        if len(ids) == 0:
            raise ValueError(f"prompts[{i}]={prompts[i]!r} encodes to no tokens")

    device = next(model.parameters()).device
    n, width = len(encoded), max(len(ids) for ids in encoded)
    input_ids = torch.full((n, width), _pad_id(tokenizer), dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    for i, ids in enumerate(encoded):  # left padding
        input_ids[i, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        mask[i, width - len(ids) :] = 1
    input_ids, mask = input_ids.to(device), mask.to(device)
    position_ids = (mask.cumsum(-1) - 1).clamp_min(0)

    stops = torch.tensor(sorted(stop_token_ids(tokenizer, model)), dtype=torch.long, device=device)
    cache = new_cache(model)
    kw = cache_keyword(model)
    extra = {"logits_to_keep": 1} if "logits_to_keep" in forward_params(type(model)) else {}

    outputs: list[list[int]] = [[] for _ in range(n)]
    rows = torch.arange(n, device=device)  # original index of each row still in the batch
    out = model(
        input_ids=input_ids,
        attention_mask=mask,
        position_ids=position_ids,
        use_cache=True,
        **{kw: cache},
        **extra,
    )
    last_pos = position_ids[:, -1]
    for step in range(max_new_tokens):
        next_tok = out.logits[:, -1, :].argmax(dim=-1)
        for r, t in zip(rows.tolist(), next_tok.tolist()):
            outputs[r].append(t)
        done = torch.isin(next_tok, stops) if stops.numel() else torch.zeros_like(next_tok, dtype=torch.bool)
        if step == max_new_tokens - 1 or bool(done.all()):
            break
        if bool(done.any()):
            keep = (~done).nonzero(as_tuple=True)[0]
            cache.batch_select_indices(keep)
            rows, next_tok, mask, last_pos = rows[keep], next_tok[keep], mask[keep], last_pos[keep]
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
        last_pos = last_pos + 1
        out = model(
            input_ids=next_tok[:, None],
            attention_mask=mask,
            position_ids=last_pos[:, None],
            use_cache=True,
            **{kw: cache},
            **extra,
        )
    return outputs
