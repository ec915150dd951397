"""Integer arguments: ``_util.check_int`` and the API entry points that use it reject bools,
floats, None and values below their minimum, naming the value and what is allowed, before any
work starts."""

import re

import pytest

from latentseek_fast._util import check_int
from latentseek_fast.app.data import Problem
from latentseek_fast.decoding import drafts
from latentseek_fast.decoding.batch import greedy_generate_batch
from latentseek_fast.decoding.greedy import greedy
from latentseek_fast.decoding.slots import HFDecoder
from latentseek_fast.engine.batched import Engine
from latentseek_fast.rewards.self_reward import SelfReward


@pytest.mark.parametrize("value", [0, -3, True, False, 1.0, 2.5, "2", None])
def test_check_int_rejects_and_names_the_value(value):
    with pytest.raises(ValueError, match=re.escape(f"n={value!r}: expected an integer >= 1")):
        check_int("n", value)


def test_check_int_bounds_none_and_note():
    assert check_int("n", 1) == 1 and check_int("n", 10**12) == 10**12
    assert check_int("k", 0, low=0) == 0
    assert check_int("m", None, allow_none=True) is None
    with pytest.raises(ValueError, match=re.escape("m=0: expected None or an integer >= 1")):
        check_int("m", 0, allow_none=True)
    with pytest.raises(ValueError, match=re.escape("k=-1: expected an integer >= 0 (why)")):
        check_int("k", -1, low=0, note="why")


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m, t: drafts.DraftPool(max_n=0), "max_n=0: expected an integer >= 1"),
        (
            lambda m, t: drafts.DraftRow(None, k=-1),
            "k=-1: expected an integer >= 0 (0 turns drafting off)",
        ),
        (
            lambda m, t: greedy(m, [4, 5], stop=frozenset(), max_tokens=0, drafts=drafts.DraftRow(None)),
            "max_tokens=0: expected an integer >= 1",
        ),
        (
            lambda m, t: greedy_generate_batch(m, t, ["hi"], 2.0),
            "max_new_tokens=2.0: expected an integer >= 1",
        ),
        (lambda m, t: SelfReward(m, t, max_new_tokens=True), "max_new_tokens=True: expected an integer >= 1"),
        (lambda m, t: HFDecoder(m, max_positions=0), "max_positions=0: expected None or an integer >= 1"),
        (
            lambda m, t: Engine(m, t, [Problem("p0", "What is 1 + 1?", "2", "gsm8k")], batch_size=0),
            "batch_size=0: expected an integer >= 1",
        ),
    ],
)
def test_entry_points_reject_bad_integers(tiny, call, message):
    model, tok = tiny
    with pytest.raises(ValueError, match=re.escape(message)):
        call(model, tok)
