"""Weighted k-nearest-neighbour classification of features against a labelled bank (the kNN
monitor of ``vimpac.pretrain``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["knn_predict"]


def knn_predict(feature: torch.Tensor, bank: torch.Tensor, bank_labels: torch.Tensor, num_classes: int,
                k: int = 200, temperature: float = 0.07) -> torch.Tensor:
    """Weighted kNN class scores (N, C): cosine similarity to the bank, the top ``k``
    neighbours vote with weight ``exp(sim / temperature)`` (the original's kNN monitor)."""
    sim = F.normalize(feature, dim=-1) @ F.normalize(bank, dim=-1).t()
    k = min(k, bank.shape[0])
    weight, idx = sim.topk(k, dim=-1)
    votes = F.one_hot(bank_labels[idx], num_classes).to(sim.dtype) * (weight / temperature).exp()[..., None]
    return votes.sum(1)
