"""The weighted kNN vote of the VIMPAC kNN monitor."""

from __future__ import annotations

import torch

from videolang.metrics import knn_predict


def test_knn_vote():
    bank = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    scores = knn_predict(torch.tensor([[1.0, 0.05], [0.1, 1.0]]), bank, labels, 2, k=2)
    assert scores.argmax(1).tolist() == [0, 1]
