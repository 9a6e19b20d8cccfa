"""Masked-modality losses against their definitions written with log-softmax by hand."""

from __future__ import annotations

import pytest
import torch

from videolang.losses.masked import masked_frame_nce_loss, mlm_loss, mtm_loss


def nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood of ``targets`` (one column per row)."""
    return -logits.log_softmax(-1).gather(1, targets[:, None]).mean()


def test_mtm_loss_with_the_extra_zero_logit():
    torch.manual_seed(0)
    video, text = torch.randn(3, 6), torch.randn(4, 5)
    targets = torch.tensor([0, 4, 2, 1])
    padded = torch.cat([text, torch.zeros(4, 1)], 1)  # the constant 0 logit joins each word row
    expected = -torch.cat([video.log_softmax(-1)[:, 0],
                           padded.log_softmax(-1).gather(1, targets[:, None])[:, 0]]).mean()
    torch.testing.assert_close(mtm_loss(video, text, targets), expected)
    torch.testing.assert_close(mtm_loss(video, torch.cat([text, torch.zeros(4, 1)], 1), targets, zero_logit=False),
                               expected)
    with pytest.raises(ValueError, match="columns"):
        mtm_loss(video, text, targets, zero_logit=False)  # 6 frame columns, 5 word columns


def test_masked_frame_nce_targets_column_zero_and_can_drop_the_vocabulary():
    torch.manual_seed(1)
    rows = torch.randn(5, 9)
    torch.testing.assert_close(masked_frame_nce_loss(rows), nll(rows, torch.zeros(5, dtype=torch.long)))
    torch.testing.assert_close(masked_frame_nce_loss(rows, include_vocab=False, vocab_size=4),
                               nll(rows[:, :5], torch.zeros(5, dtype=torch.long)))
    with pytest.raises(ValueError, match="vocab_size"):
        masked_frame_nce_loss(rows, include_vocab=False)


def test_mlm_loss_and_its_vocabulary_slice():
    torch.manual_seed(2)
    rows, targets = torch.randn(4, 7), torch.tensor([1, 0, 3, 2])
    torch.testing.assert_close(mlm_loss(rows, targets), nll(rows, targets))
    torch.testing.assert_close(mlm_loss(rows, targets, vocab_size=4), nll(rows[:, :4], targets))


@pytest.mark.parametrize("loss", [lambda t: mlm_loss(t, torch.zeros(0, dtype=torch.long)), masked_frame_nce_loss])
def test_nothing_masked_is_zero_and_still_differentiable(loss):
    empty = torch.zeros(0, 6, requires_grad=True)
    value = loss(empty)
    assert value.item() == 0.0
    value.backward()  # the graph stays connected, so a step with no masked item does not fail
    assert empty.grad is not None


def test_mlm_loss_on_whole_sequences_ignores_unmasked_positions():
    torch.manual_seed(3)
    logits = torch.randn(2, 5, 7)
    labels = torch.full((2, 5), -100)
    labels[0, 1], labels[1, 4] = 3, 6
    rows = logits[[0, 1], [1, 4]]
    torch.testing.assert_close(mlm_loss(logits, labels), nll(rows, torch.tensor([3, 6])))
    torch.testing.assert_close(mlm_loss(logits, labels, "all_positions"), nll(rows, torch.tensor([3, 6])) * 2 / 10)
    nothing = torch.randn(2, 5, 7, requires_grad=True)
    value = mlm_loss(nothing, torch.full((2, 5), -100))
    assert value.item() == 0.0
    value.backward()
    assert nothing.grad is not None
