"""The verifiers' batch: many prompts decoded greedily as rows of one decoder.

``prompt_rows`` makes one ``Row`` per prompt. Prompts that share a long prefix (the four
self-reward verifier prompts of one answer differ only after the solution they quote) pay for it
once: the first prompt's row feeds it whole, the others fork its first positions
(``Decoder.fork``) and feed only the rest. ``greedy_generate_batch`` decodes a list of texts that
way on an ``HFDecoder`` (one forward per step for all rows; a finished row takes no further
part, and its slot is freed), or each prompt alone on a ``CacheDecoder`` where the slot store
cannot serve the model (``slots.slot_support``). In exact arithmetic the tokens are those of
each prompt decoded alone; ``tests/rewards/test_rewards.py`` checks it against a full recompute on a
tiny model and on the embedded model (where fp32 rounding may flip only near-ties).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .._util import check_int, say_once
from .drafts import DraftRow
from .greedy import greedy
from .model import lm_head_of, softcap_of
from .rows import Row, advance
from .slots import HFDecoder, slot_support
from .stops import reply_stop_ids

# Shortest common prompt prefix worth a fork (a copy of its cached columns instead of a prefill).
MIN_SHARED_PREFIX = 16


def common_prefix(seqs: Sequence[Sequence[int]]) -> int:
    """Length of the longest common prefix of ``seqs``."""
    n = min(map(len, seqs), default=0)
    for i in range(n):
        if any(s[i] != seqs[0][i] for s in seqs):
            return i
    return n


def prompt_rows(
    decoder,
    prompts_ids: list[list[int]],
    *,
    stop: frozenset[int],
    cap: int,
    drafts_k: int,
    policy: str,
    min_shared_prefix: int = MIN_SHARED_PREFIX,
) -> list[Row]:
    """One new row of ``decoder`` per prompt, to decode greedily until ``stop`` or ``cap`` tokens.

    The first row feeds its whole prompt; each other row forks the prompts' common prefix from
    it when that is at least ``min_shared_prefix`` tokens (each still feeds at least its last
    prompt token). ``drafts_k`` > 0: each row drafts up to that many tokens from its own prompt
    (which quotes the text it judges) and reply, fed by ``policy``; 0 turns drafts off.
    """
    check_int("drafts_k", drafts_k, low=0, note="0 turns drafting off")
    for i, ids in enumerate(prompts_ids):
        if len(ids) == 0:
            raise ValueError(f"prompts_ids[{i}] is empty: a prompt needs at least one token")
    shared = common_prefix(prompts_ids)
    rows: list[Row] = []
    for ids in prompts_ids:
        share = min(shared, len(ids) - 1) if rows else 0
        share = share if share >= min_shared_prefix else 0
        drafts = DraftRow(None, ids, k=drafts_k, index_context=True, policy=policy) if drafts_k else None
        row = Row(decoder.add_row(), ids[share:], stop=stop, cap=cap, keep_latents=False, drafts=drafts)
        if share:
            row.fork = (rows[0], share)
        rows.append(row)
    return rows


@torch.no_grad()
def greedy_generate_batch(
    model,
    tokenizer,
    prompts: list[str],
    max_new_tokens: int,
    *,
    add_special_tokens: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
    gaps: list | None = None,
) -> list[list[int]]:
    """Greedily continue every prompt; returns the new token ids of each prompt, in order.

    ``prompts`` are complete texts (already chat-templated), so by default no special tokens
    are added when tokenizing them. A row stops after a stop token (``stops.reply_stop_ids``;
    the stop token is included in its output) or after ``max_new_tokens`` new tokens.
    ``on_progress(done, tokens)``: called after every decode step (every token where the
    prompts decode one at a time) with the prompts finished and the tokens produced so far.
    ``gaps``: a list to which each prompt's decisions' top-2 logit gaps are appended, in order
    (``rows.Row.gaps``; the near-tie audit of verifier replies).
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
    head = lm_head_of(model)
    stop = reply_stop_ids(tokenizer, model)
    why = slot_support(model)
    if why is not None:
        say_once(f"batch-one-by-one-{why}", f"latentseek_fast: prompts decoded one at a time: {why}")
        out: list[list[int]] = []
        made = 0  # tokens produced by the prompts decoded so far

        def on_token(_):
            nonlocal made
            made += 1
            on_progress(len(out), made)

        one = dict(stop=stop, max_tokens=max_new_tokens, keep_latents=False)
        for ids in encoded:
            gen = greedy(model, ids, on_token=on_token if on_progress else None, **one)
            out.append(gen.ids)
            if gaps is not None:
                gaps.append(gen.gaps)
        if on_progress is not None:
            on_progress(len(out), made)
        return out
    decoder = HFDecoder(model)
    rows = prompt_rows(decoder, encoded, stop=stop, cap=max_new_tokens, drafts_k=0, policy="full")
    left, softcap = len(rows), softcap_of(model)
    while left:
        for r in advance(decoder, head, rows, softcap=softcap):
            decoder.drop_row(r.slot)
            left -= 1
        if on_progress is not None:
            on_progress(len(rows) - left, sum(len(r.ids) for r in rows))
    if gaps is not None:
        gaps.extend(r.gaps for r in rows)
    return [r.ids for r in rows]
