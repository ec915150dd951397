"""The near-tie guard of token-for-token comparisons (conftest), on exact small-integer logits."""

from types import SimpleNamespace

import pytest
import torch
from conftest import AdamGradients, assert_same_or_near_tie, make_tiny_model, top2_gaps


class PositionLogits(torch.nn.Module):
    """A stand-in model: the logits after position ``i`` are ``rows[i]``, whatever the tokens."""

    def __init__(self, rows):
        super().__init__()
        self.rows = torch.tensor(rows, dtype=torch.float32)

    def forward(self, ids):
        return SimpleNamespace(logits=self.rows[: ids.shape[1]][None])


# after context [0]: position 0 decides a[0] (gap 2), position 1 decides a[1] (an exact tie)
MODEL = PositionLogits([[5, 3, 0], [4, 4, 1], [0, 2, 7], [1, 0, 0]])


def test_identical_sequences_pass():
    assert assert_same_or_near_tie(MODEL, [0], [0, 1, 2], [0, 1, 2]) is None


def test_a_difference_at_an_exact_tie_is_excused_and_located():
    assert assert_same_or_near_tie(MODEL, [0], [0, 1, 2], [0, 0, 1]) == 1


@pytest.mark.parametrize("b", [[1, 1, 2], [0, 1, 1], [0, 1]])
def test_a_difference_at_a_clear_gap_fails(b):
    with pytest.raises(AssertionError, match="not a near-tie"):
        assert_same_or_near_tie(MODEL, [0], [0, 1, 2], b)


def test_redecoded_positions_use_their_own_gaps():
    # position 0 was re-decoded from latents: the forward's gap (2) does not apply, the given one does
    assert assert_same_or_near_tie(MODEL, [0], [0, 1], [1, 1], redecoded=(0, [0.01], 0.02)) == 0
    with pytest.raises(AssertionError, match="0.03 >= 0.02"):
        assert_same_or_near_tie(MODEL, [0], [0, 1], [1, 1], redecoded=(0, [0.03], 0.02))
    # past the re-decoded positions the forward's gap decides again
    with pytest.raises(AssertionError, match="not a near-tie"):
        assert_same_or_near_tie(MODEL, [0], [0, 1, 2], [0, 1, 0], redecoded=(0, [0.0], 1.0))


def test_a_fake_divergence_on_a_real_model_fails():
    """Mutation: greedy tokens of a tiny model, one replaced by the runner-up where the gap is the
    largest: the guard must call it a real disagreement."""
    model = make_tiny_model(vocab_size=128, seed=3)
    ids = [5, 17, 40]
    with torch.no_grad():
        for _ in range(6):
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    gaps = top2_gaps(model, ids)[2:-1]
    k = max(range(len(gaps)), key=gaps.__getitem__)
    with torch.no_grad():
        runner_up = int(model(torch.tensor([ids[: 3 + k]])).logits[0, -1].topk(2).indices[1])
    fake = ids[3:]
    fake[k] = runner_up
    with pytest.raises(AssertionError, match="not a near-tie"):
        assert_same_or_near_tie(model, ids[:3], ids[3:], fake)
    assert assert_same_or_near_tie(model, ids[:3], ids[3:], ids[3:]) is None


def test_flip_reach_sums_the_fragile_entries_columns():
    grads = AdamGradients()
    # entry 1 of row 0 (1e-7 of its largest) and entry 0 of row 1 are fragile; the rest are not
    grads.grads = [torch.tensor([[1.0, 1e-7, -0.5], [0.0, 2.0, 1.0]])]
    weight = torch.tensor([[1.0, -3.0, 0.5], [-2.0, 1.0, 4.0]])
    # row 0: 2 * lr * steps * 2 * max|W[:, 1]| = 2 * 0.5 * 2 * 2 * 3 = 12; row 1: same with 2 -> 8
    assert grads.flip_reach(weight, lr=0.5, steps=2) == 12.0
