"""The decoding layer: greedy decoding that keeps the latents, with drafts, on one or many rows.

Modules, each importing only those listed before it (and ``_util``/``config``):

- ``model``: what decoding needs from a Hugging Face causal LM (LM head, cache keyword, a cache
  that rolls back anywhere, the post-final-norm latents);
- ``stops``: the stop-token sets (solver answers, ``compat``'s continuations, verifier replies);
- ``drafts``: n-gram drafts (``DraftPool``, ``DraftRow``) and the feed-width cost model;
- ``decoder``: the ``Decoder`` interface and ``CacheDecoder`` (one row, any causal LM);
- ``slots``: ``HFDecoder`` (many rows in one padded KV store) and ``slot_support``;
- ``rows``: ``Row``, the one decode step ``advance`` (drafts, ``accept``ance, stops, rollback),
  ``run``, ``DecodeStats``;
- ``greedy``: one row run to completion (``greedy`` -> ``Generation``);
- ``batch``: many prompts as rows that fork their shared prefix (``prompt_rows``,
  ``greedy_generate_batch``: the self-reward verifiers).
"""
