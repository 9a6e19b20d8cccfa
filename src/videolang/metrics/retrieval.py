"""Retrieval metrics: Recall@K (percent), median and mean rank, with ties counted against the query.

``sim[i, j]`` scores query ``i`` against candidate ``j`` (higher is better). The rank of a true
candidate is 1-based and pessimistic, ``1 + #{other candidates j with sim[i, j] >= sim[i, true]}``,
so constant scores give every query the worst rank, never a perfect score.
:func:`retrieval_metrics` is one-to-one, :func:`retrieval_metrics_multi` several captions per video.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from videolang.errors import ConfigError, VideolangError

__all__ = [
    "MultiRanks",
    "rank_metrics",
    "retrieval_metrics",
    "retrieval_metrics_multi",
    "retrieval_ranks",
    "retrieval_ranks_multi",
]

#: Upper bound on the number of elements of a temporary comparison block (bool), so that a
#: 10k × 10k matrix is processed in row chunks instead of materializing big temporaries.
_BLOCK_ELEMENTS = 1 << 24

DEFAULT_KS: tuple[int, ...] = (1, 5, 10)


def _as_matrix(sim: Any, name: str = "sim") -> torch.Tensor:
    """Convert to a 2-D torch tensor without changing the dtype (no rounding, no copy if
    possible) and reject NaN."""
    if isinstance(sim, torch.Tensor):
        t = sim.detach()
    elif isinstance(sim, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(sim))
    else:
        t = torch.as_tensor(np.asarray(sim))
    if t.dim() != 2:
        raise ConfigError(
            f"{name} must be a 2-D (queries, candidates) matrix, got shape {tuple(t.shape)}"
        )
    if t.dtype == torch.bool or t.is_complex():
        raise ConfigError(f"{name} must hold real scores, got dtype {t.dtype}")
    if t.is_floating_point():
        nan = torch.isnan(t)
        if bool(nan.any()):
            r, c = (int(x) for x in nan.nonzero()[0])
            raise VideolangError(
                f"{name} holds {int(nan.sum())} NaN score(s) (first at row {r}, column {c}); "
                "ranks are undefined"
            )
    return t


def as_index_vector(values: Any, n: int, upper: int, device: torch.device, *, name: str, what: str) -> torch.Tensor:
    """``values`` as a long tensor of shape ``(n,)`` with entries in ``[0, upper)``; anything
    else is a :class:`ConfigError` naming ``name``."""
    t = values.detach() if isinstance(values, torch.Tensor) else torch.as_tensor(np.asarray(values))
    if t.dim() != 1 or t.numel() != n:
        raise ConfigError(f"{name} must have shape ({n},), got {tuple(t.shape)}")
    if t.dtype.is_floating_point or t.dtype == torch.bool or t.is_complex():
        raise ConfigError(f"{name} must hold integer indices, got dtype {t.dtype}")
    t = t.to(device=device, dtype=torch.long)
    if n and (int(t.min()) < 0 or int(t.max()) >= upper):
        bad = int(t[(t < 0) | (t >= upper)][0])
        raise ConfigError(f"{name} holds {bad}, outside [0, {upper}) {what}")
    return t


def _count_at_least(scores: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``out[i] = #{j : scores[i, j] >= ref[i]}`` (int64), chunked over rows."""
    n, m = scores.shape
    step = max(1, _BLOCK_ELEMENTS // max(1, m))
    out = torch.empty(n, dtype=torch.long, device=scores.device)
    for start in range(0, n, step):
        stop = min(n, start + step)
        out[start:stop] = (scores[start:stop] >= ref[start:stop, None]).sum(dim=1)
    return out


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    ks = tuple(ks)
    if not ks or any(
        not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1 for k in ks
    ):
        raise ConfigError(f"ks must be positive ints, got {ks!r}")
    return tuple(int(k) for k in ks)


def rank_metrics(ranks: Any, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """Summarize 1-based ranks: ``R{k}`` (percent of ranks ``<= k``) for each ``k``, ``MedR``
    (``numpy.median``: the mean of the two middle ranks for an even count) and ``MeanR``."""
    ks = _check_ks(ks)
    r = torch.as_tensor(ranks).detach().cpu().to(torch.float64).flatten()
    if r.numel() == 0:
        raise VideolangError("no ranks to summarize (empty query set)")
    out = {f"R{k}": float((r <= k).to(torch.float64).mean() * 100.0) for k in ks}
    out["MedR"] = float(np.median(r.numpy()))
    out["MeanR"] = float(r.mean())
    return out


def retrieval_ranks(sim: torch.Tensor | np.ndarray) -> torch.Tensor:
    """1-based rank of each query's true candidate, ties counted against the query.

    Args:
        sim: ``(Q, C)`` scores with ``Q <= C``; query ``i``'s true candidate is column ``i``
            (columns ``Q..C-1`` are extra distractors). Any real dtype, torch or numpy, any
            device; it is compared as given (never rounded).

    Returns:
        int64 CPU tensor ``(Q,)``: ``rank[i] = 1 + #{j != i : sim[i, j] >= sim[i, i]}``.

    NaN scores raise :class:`~videolang.errors.VideolangError`; ``±inf`` are ordinary values.
    Vectorized and chunked over rows (bounded temporary memory, e.g. for 10k × 10k).
    """
    s = _as_matrix(sim)
    q, c = s.shape
    if q > c:
        raise ConfigError(
            f"sim has more queries than candidates ({q} > {c}); query i's true candidate must be "
            "column i (use retrieval_metrics_multi for several queries per candidate)"
        )
    if q == 0:
        return torch.zeros(0, dtype=torch.long)
    idx = torch.arange(q, device=s.device)
    true = s[idx, idx]
    # Counting j == i as well (sim[i, i] >= sim[i, i]) supplies the "1 +".
    return _count_at_least(s, true).cpu()


def retrieval_metrics(
    sim: torch.Tensor | np.ndarray, ks: Sequence[int] = DEFAULT_KS
) -> dict[str, float]:
    """Recall@K (percent), median and mean rank for a one-to-one retrieval matrix.

    ``sim[i, j]`` scores query ``i`` against candidate ``j``; query ``i``'s true candidate is
    candidate ``i``. ``Q <= C`` is allowed (extra columns are distractors only); for the other
    direction pass ``sim.T`` (needs ``Q == C``). Ties count against the query (see the module
    docstring): constant scores give every query rank ``C``, so ``R1 = 0`` (for ``C > 1``) and
    ``MedR = MeanR = C``; the identity matrix gives ``R1 = 100``, ``MedR = MeanR = 1``.

    The originals differ on purpose: MMPT's ``RetrievalMetric`` (fairseq
    ``examples/MMPT/mmpt/evaluators/metric.py``) finds the true column with ``sx - d == 0``, so a
    tie adds hits for the same query (a 4×4 matrix with one tie gives R@1 = 0.8 there) and ties
    partly count *for* the query; ClipBERT's ``eval_retrieval`` rounds scores to 4 decimals,
    breaks ties by ``torch.sort``'s order and ranks video-to-text by inverting a ``{text: video}``
    dict, wrong when a video has several captions (:func:`retrieval_metrics_multi` handles that).

    Returns:
        ``{"R1", "R5", "R10", "MedR", "MeanR"}`` (``R{k}`` for each ``k`` in ``ks``) as floats.
    """
    return rank_metrics(retrieval_ranks(sim), ks)


class MultiRanks(NamedTuple):
    """Ranks from :func:`retrieval_ranks_multi`."""

    #: ``(Q,)`` rank of each query's (caption's) true candidate (video).
    t2v: torch.Tensor
    #: ``(V,)`` rank of the best true query (caption) of each candidate that has at least one.
    v2t: torch.Tensor
    #: ``(V,)`` the candidate (video) index of each entry of ``v2t``, ascending.
    v2t_candidates: torch.Tensor


def retrieval_ranks_multi(
    sim: torch.Tensor | np.ndarray, query_to_candidate: torch.Tensor | np.ndarray | Sequence[int]
) -> MultiRanks:
    """Ranks in both directions when several queries share a true candidate.

    Typical use: ``sim`` is ``(n_captions, n_videos)`` and ``query_to_candidate[q]`` is the video
    of caption ``q`` (videos may have several captions; videos with none are distractors).

    * **t2v** (rows): ``rank[q] = 1 + #{videos j != t(q) : sim[q, j] >= sim[q, t(q)]}``.
    * **v2t** (columns): for each video ``v`` with at least one caption, the captions are ranked
      by ``sim[:, v]`` and the rank is that of its **best true caption**, counting only
      *wrong* captions against it: ``rank[v] = 1 + #{q : t(q) != v and sim[q, v] >= max_{t(q')=v}
      sim[q', v]}``. Other true captions never push a true caption down (even when tied), wrong
      captions tied with the best true one do.

    With ``query_to_candidate = arange(n)`` and a square matrix this equals
    ``retrieval_ranks(sim)`` and ``retrieval_ranks(sim.T)``.
    """
    s = _as_matrix(sim)
    q, c = s.shape
    t = as_index_vector(query_to_candidate, q, c, s.device, name="query_to_candidate", what="candidates")
    if q == 0:
        empty = torch.zeros(0, dtype=torch.long)
        return MultiRanks(empty, empty, empty)

    true = s[torch.arange(q, device=s.device), t]  # (Q,) score of each caption vs its video
    t2v = _count_at_least(s, true)

    # Best true-caption score per video (the dtype's minimum for videos without captions,
    # which are excluded anyway). Same dtype as sim: nothing is rounded.
    lowest = float("-inf") if s.is_floating_point() else torch.iinfo(s.dtype).min
    best = torch.full((c,), lowest, dtype=s.dtype, device=s.device)
    best = best.scatter_reduce(0, t, true, reduce="amax", include_self=True)
    has_caption = torch.zeros(c, dtype=torch.bool, device=s.device)
    has_caption[t] = True
    videos = has_caption.nonzero().squeeze(1)
    # at_least[v] = #{captions q : sim[q, v] >= best[v]}, chunked over videos.
    ref = best[videos]
    at_least = torch.empty(videos.numel(), dtype=torch.long, device=s.device)
    step = max(1, _BLOCK_ELEMENTS // q)
    for start in range(0, videos.numel(), step):
        cols = videos[start : start + step]
        at_least[start : start + step] = (s[:, cols] >= ref[None, start : start + step]).sum(0)
    # True captions >= the best true score are exactly those equal to it (>= 1 per video).
    pos_at_best = torch.zeros(c, dtype=torch.long, device=s.device)
    pos_at_best.scatter_add_(0, t, (true >= best[t]).to(torch.long))
    v2t = 1 + at_least - pos_at_best[videos]
    return MultiRanks(t2v.cpu(), v2t.cpu(), videos.cpu())


def retrieval_metrics_multi(
    sim: torch.Tensor | np.ndarray,
    query_to_candidate: torch.Tensor | np.ndarray | Sequence[int],
    ks: Sequence[int] = DEFAULT_KS,
) -> dict[str, dict[str, float]]:
    """:func:`retrieval_metrics` in both directions for a many-captions-per-video matrix.

    ``sim`` is ``(n_captions, n_videos)``, ``query_to_candidate[q]`` the true video of caption
    ``q``; ranks as in :func:`retrieval_ranks_multi` (ties against the query; for v2t the best
    true caption counts, only wrong captions rank above it). v2t averages over the videos that
    have at least one caption.

    Returns:
        ``{"t2v": {"R1", "R5", "R10", "MedR", "MeanR"}, "v2t": {...}}``.
    """
    ranks = retrieval_ranks_multi(sim, query_to_candidate)
    return {"t2v": rank_metrics(ranks.t2v, ks), "v2t": rank_metrics(ranks.v2t, ks)}
