"""VideoCLIP data: caption tracks, positive pairs over per-second features, retrieval batches.

:func:`load_timestamped_captions` reads HowTo100M's ``raw_caption.json``; :class:`PretrainPairs`
gives overlapped (video window, text span) positives; :class:`VideoTextPairs` is the evaluation
side; :class:`RetrievalBatchSampler` builds retrieval-augmented batches (a video and its nearest
neighbours); :class:`VideoCLIPSplits` serves them by split. Text is ``[CLS] w1..wn [SEP] [PAD]..``
(``max_text_len + 2``), video features ``(max_video_len, D)`` with a mask. Details:
docs/videoclip.md ("Data").
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence, Sized
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import numpy as np
import torch
from pydantic import AfterValidator, Field
from torch.utils.data import BatchSampler, Dataset, DistributedSampler, Sampler, SequentialSampler

from videolang.data.annotations import (
    AnnotationError,
    Identifier,
    Record,
    Seconds,
    Text,
    TimedCaptions,
    read_csv_records,
    read_json_document,
    read_jsonl_records,
    read_text_file,
    validate_record,
)
from videolang.data.datasets import SkippedSample, collate_skipping, epoch_choice, item_generator
from videolang.data.sampling import videoclip_overlapped_pair
from videolang.data.splits import DataSplits, LoaderConfig
from videolang.data.stores import FeatureStore, feature_rows_per_second
from videolang.errors import ConfigError, StoreError, VideolangError

log = logging.getLogger(__name__)
RecordT = TypeVar("RecordT", bound=Record)

__all__ = [
    "CaptionLine",
    "CaptionTrack",
    "EvalFormat",
    "FineTunePairs",
    "MsrvttCsvRow",
    "MsrvttSentence",
    "MsrvttVideo",
    "PretrainPairs",
    "RetrievalBatchSampler",
    "Segment",
    "TextLayout",
    "TimedCaptions",
    "UnreadableFeatures",
    "VideoCLIPDataConfig",
    "VideoCLIPPretrainDataConfig",
    "VideoCLIPRetrievalDataConfig",
    "VideoCLIPSplits",
    "VideoTextPairs",
    "YouCook2Segment",
    "YouCook2Video",
    "all_skipped",
    "checked_window",
    "collate_pairs",
    "feature_rows",
    "keyed_records",
    "kmeans",
    "listed_records",
    "load_timestamped_captions",
    "protocol_name",
    "read_eval_pairs",
    "read_pretraining_videos",
    "read_timed_captions",
    "read_video_list",
    "read_video_list_entries",
    "retrieval_batches",
    "scale_pairs",
    "segment_window",
    "skips_unreadable",
    "tokenize_tracks",
]


@dataclass(frozen=True)
class TextLayout:
    """Token ids of the text sequence layout."""

    cls_id: int = 101
    sep_id: int = 102
    pad_id: int = 0
    max_text_len: int = 61
    # MMPT's layout ``[CLS] [SEP] words [SEP]`` (``_build_text_seq``): the first [SEP] is the
    # one VLM's joint sequence places after the video. Without it: ``[CLS] words [SEP]``.
    sep_after_cls: bool = False

    def build(self, words: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """``[CLS] ([SEP]) words [SEP] [PAD]..`` and its mask, length max_text_len + 2 (with
        ``sep_after_cls`` one word fewer fits)."""
        head = [self.cls_id, self.sep_id] if self.sep_after_cls else [self.cls_id]
        words = list(words)[: self.max_text_len + 1 - len(head)]
        seq = [*head, *words, self.sep_id]
        ids = torch.full((self.max_text_len + 2,), self.pad_id, dtype=torch.long)
        ids[: len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask = torch.zeros(self.max_text_len + 2, dtype=torch.bool)
        mask[: len(seq)] = True
        return ids, mask


@dataclass
class CaptionTrack:
    """Timed captions of one video, tokenized."""

    starts: np.ndarray
    ends: np.ndarray
    tokens: list[list[int]]

    def __len__(self) -> int:
        return len(self.tokens)


class _VideoKey(Record):
    """A video id on its own: a key of a JSON object, a line of a video list."""

    video_id: Identifier


def keyed_records(doc: Any, schema: type[RecordT], where: str) -> Iterator[tuple[str, RecordT]]:
    """``(key, record)`` of a JSON object of objects (``{video_id: {...}}``), each validated;
    errors name the key, e.g. ``raw_caption.json: 'video7': field 'start.3'``."""
    if not isinstance(doc, dict):
        raise AnnotationError(f"{where}: expected a JSON object {{video_id: {{...}}}}, got {type(doc).__name__}")
    for key, value in doc.items():
        validate_record(_VideoKey, {"video_id": key}, f"{where}: key {key!r}")
        yield key, validate_record(schema, value, f"{where}: {key!r}")


def listed_records(doc: Any, key: str, schema: type[RecordT], where: str) -> list[RecordT]:
    """The records of the list ``doc[key]``, each validated; errors name ``key[i]``."""
    value = doc.get(key) if isinstance(doc, dict) else None
    if not isinstance(value, list):
        raise AnnotationError(f"{where}: expected a JSON object with a list {key!r}")
    return [validate_record(schema, item, f"{where}: {key}[{i}]") for i, item in enumerate(value)]


def read_timed_captions(path: str | os.PathLike, video_ids: Collection[str] | None = None
                        ) -> dict[str, TimedCaptions]:
    """``raw_caption.json`` validated: every video (or only ``video_ids``, which a 1.2M-video
    file makes worth it), in file order."""
    wanted = set(video_ids) if video_ids is not None else None
    doc = read_json_document(path)
    if not isinstance(doc, dict):
        raise AnnotationError(f"{path}: expected a JSON object {{video_id: {{start, end, text}}}}")
    doc = {k: v for k, v in doc.items() if wanted is None or k in wanted}
    return dict(keyed_records(doc, TimedCaptions, os.fspath(path)))


def tokenize_tracks(captions: Mapping[str, TimedCaptions], tokenize: Callable[[list[str]], list[list[int]]],
                    *, max_clip_tokens: int = 32, source: str = "captions") -> dict[str, CaptionTrack]:
    """Tokenized tracks of validated captions; videos with no caption are dropped with a warning."""
    tracks: dict[str, CaptionTrack] = {}
    for vid, entry in captions.items():
        if not entry.text:
            log.warning("%s: video %s has no captions; dropped", source, vid)
            continue
        tokens = [t[:max_clip_tokens] for t in tokenize(list(entry.text))]
        tracks[vid] = CaptionTrack(np.asarray(entry.start, dtype=np.float64), np.asarray(entry.end, dtype=np.float64),
                                   tokens)
    return tracks


def load_timestamped_captions(
    path: str | os.PathLike,
    tokenize: Callable[[list[str]], list[list[int]]],
    *,
    max_clip_tokens: int = 32,
    video_ids: Sequence[str] | None = None,
) -> dict[str, CaptionTrack]:
    """Read ``raw_caption.json`` (checked against :class:`TimedCaptions`) and tokenize it;
    videos with no caption are dropped with a warning."""
    return tokenize_tracks(read_timed_captions(path, video_ids), tokenize, max_clip_tokens=max_clip_tokens,
                           source=os.fspath(path))


def read_pretraining_videos(list_path: str | os.PathLike, captions_path: str | os.PathLike
                            ) -> tuple[list[str], dict[str, TimedCaptions]]:
    """``data.train_list`` and the captions of its videos; a listed video that the caption file
    lacks is an error naming the list's line (a truncated or mistyped id)."""
    entries = read_video_list_entries(list_path)
    captions = read_timed_captions(captions_path, [v for _, v in entries])
    for line, vid in entries:
        if vid not in captions:
            raise AnnotationError(f"{list_path}:{line}: video {vid!r} has no entry in {captions_path}")
    return [v for _, v in entries], captions


def _video_window(feats: np.ndarray, start: int, end: int, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``[start, end)`` of ``feats`` cut to ``max_len``, zero-padded, with a mask."""
    rows = np.array(feats[start : min(end, start + max_len)], dtype=np.float32)  # a copy: stores are read-only
    out = torch.zeros(max_len, feats.shape[1])
    out[: len(rows)] = torch.from_numpy(rows)
    mask = torch.zeros(max_len, dtype=torch.bool)
    mask[: len(rows)] = True
    return out, mask


class UnreadableFeatures(VideolangError):
    """A video's feature rows could not be used; the item becomes a :class:`SkippedSample`."""

    def __init__(self, video_id: str, reason: str):
        super().__init__(f"{video_id}: {reason}")
        self.video_id, self.reason = video_id, reason


def feature_rows(features: Mapping[str, np.ndarray], video_id: str) -> np.ndarray:
    """``features[video_id]``, or :class:`UnreadableFeatures` when the store lacks the video,
    cannot read its rows (a damaged shard) or has none."""
    try:
        feats = features[video_id]
    except KeyError:
        raise UnreadableFeatures(video_id, "not in the feature store") from None
    except (StoreError, OSError, ValueError) as exc:
        raise UnreadableFeatures(video_id, f"feature rows unreadable ({exc})") from None
    if feats.ndim != 2 or len(feats) == 0:
        raise UnreadableFeatures(video_id, f"no feature rows (shape {feats.shape})")
    return feats


def checked_window(video_id: str, feats: np.ndarray, start: int, end: int, max_len: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_video_window`, refusing rows that cannot be read or are not finite (NaN
    features would make the loss NaN and stop the run)."""
    try:
        v, vm = _video_window(feats, start, end, max_len)
    except (OSError, ValueError) as exc:  # a memory-mapped shard cut short reads as an error here
        raise UnreadableFeatures(video_id, f"feature rows unreadable ({exc})") from None
    if not bool(torch.isfinite(v).all()):
        raise UnreadableFeatures(video_id, "non-finite feature values")
    return v, vm


def skips_unreadable(getitem: Callable[[Any, int], dict[str, Any]]) -> Callable[[Any, int], Any]:
    """``__getitem__`` that returns a :class:`SkippedSample` for an item whose features raise
    :class:`UnreadableFeatures`; the collate functions list it and the DataGuard counts it."""

    @functools.wraps(getitem)
    def wrapper(self: Any, index: int) -> dict[str, Any] | SkippedSample:
        try:
            return getitem(self, index)
        except UnreadableFeatures as exc:
            return SkippedSample(index, exc.video_id, exc.reason)

    return wrapper


class PretrainPairs(Dataset):
    """One item per video: ``pairs_per_video`` overlapped (video, text) positives.

    Items: ``vfeats (P, Tv, D)``, ``vmask (P, Tv)``, ``caps (P, Lt)``, ``cmask (P, Lt)``,
    ``video_index``. Each item's draws come from (seed, epoch, index), so they do not depend on
    the number of workers.
    """

    def __init__(
        self,
        features: Mapping[str, np.ndarray],
        captions: Mapping[str, CaptionTrack],
        video_ids: Sequence[str],
        layout: TextLayout,
        *,
        pairs_per_video: int = 4,
        max_video_len: int = 32,
        min_text_tokens: int = 8,
        max_text_tokens: int = 64,
        min_video_len: int = 3,
        overlapped: bool = True,
        seed: int = 0,
    ):
        missing = [v for v in video_ids if v not in captions or v not in features]
        if missing:
            raise VideolangError(
                f"{len(missing)} videos lack captions or features, e.g. {missing[:5]}"
            )
        self.features, self.captions, self.video_ids = features, captions, list(video_ids)
        self.layout = layout
        self.pairs_per_video = pairs_per_video
        self.max_video_len = max_video_len
        self.text_range = (min_text_tokens, max_text_tokens)
        self.min_video_len = min_video_len
        self.overlapped = overlapped
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.video_ids)

    @skips_unreadable
    def __getitem__(self, index: int) -> dict[str, Any]:
        vid = self.video_ids[index]
        feats = feature_rows(self.features, vid)
        track = self.captions[vid]
        g = item_generator(self.seed, self.epoch, index)
        seconds = max(len(feats), 1)
        n_tok = [len(t) for t in track.tokens]
        out: dict[str, list] = {"vfeats": [], "vmask": [], "caps": [], "cmask": []}
        for _ in range(self.pairs_per_video):
            w = videoclip_overlapped_pair(
                track.starts, track.ends, n_tok, seconds, min_text_tokens=self.text_range[0],
                max_text_tokens=self.text_range[1], min_video_len=self.min_video_len,
                max_video_len=self.max_video_len, overlapped=self.overlapped, generator=g,
            )
            v, vm = checked_window(vid, feats, w.video_start, w.video_end, self.max_video_len)
            words = [tok for c in range(w.text_start, w.text_end + 1) for tok in track.tokens[c]]
            ids, cm = self.layout.build(words)
            for key, val in zip(("vfeats", "vmask", "caps", "cmask"), (v, vm, ids, cm), strict=True):
                out[key].append(val)
        item = {k: torch.stack(v) for k, v in out.items()}
        item["video_index"] = torch.full((self.pairs_per_video,), index, dtype=torch.long)
        return item


class VideoTextPairs(Dataset):
    """Evaluation pairs: ``(video_id, start_second, end_second | None, sentence)`` each.

    ``end=None`` takes the first ``max_video_len`` seconds (MSR-VTT protocol); a segment takes
    rows ``[floor(start), ceil(end))`` (YouCook2 protocol).
    """

    def __init__(
        self,
        pairs: Sequence[tuple[str, float, float | None, str]],
        features: Mapping[str, np.ndarray],
        tokenize: Callable[[list[str]], list[list[int]]],
        layout: TextLayout,
        *,
        max_video_len: int = 32,
    ):
        missing = sorted({p[0] for p in pairs if p[0] not in features})
        if missing:
            raise VideolangError(f"{len(missing)} evaluation videos have no features, e.g. {missing[:5]}")
        self.pairs = list(pairs)
        self.features = features
        self.tokens = tokenize([p[3] for p in self.pairs])
        self.layout = layout
        self.max_video_len = max_video_len

    def __len__(self) -> int:
        return len(self.pairs)

    @skips_unreadable
    def __getitem__(self, index: int) -> dict[str, Any]:
        vid, start, end, _ = self.pairs[index]
        v, vm = segment_window(self.features, vid, start, end, self.max_video_len)
        ids, cm = self.layout.build(self.tokens[index])
        return {"vfeats": v, "vmask": vm, "caps": ids, "cmask": cm, "index": index}


def segment_window(features: Mapping[str, np.ndarray], video_id: str, start: float, end: float | None,
                   max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``[floor(start), ceil(end))`` of a video (``end=None``: to its end), at least one."""
    feats = feature_rows(features, video_id)
    lo = math.floor(start)
    hi = len(feats) if end is None else max(math.ceil(end), lo + 1)
    return checked_window(video_id, feats, min(lo, len(feats) - 1), hi, max_len)


def all_skipped(batch: Mapping[str, Any]) -> bool:
    """True for a batch whose every item was skipped (it holds only ``"skipped"``): a recipe's
    step returns without a loss or outputs for it."""
    return "vfeats" not in batch


def collate_pairs(batch: Sequence[dict[str, torch.Tensor] | SkippedSample]) -> dict[str, Any]:
    """Stack items and flatten their pair dimension: (B, P, ...) -> (B*P, ...); skipped items
    are listed under ``"skipped"`` (:func:`~videolang.data.datasets.collate_skipping`)."""
    good = [b for b in batch if not isinstance(b, SkippedSample)]
    out: dict[str, Any] = {k: torch.cat([b[k] for b in good]) for k in good[0]} if good else {}
    out["skipped"] = [b for b in batch if isinstance(b, SkippedSample)]
    return out


# ---------------------------------------------------------------------------------------------
# retrieval-augmented batches


def kmeans(x: torch.Tensor, k: int, *, iters: int = 20, generator: torch.Generator | None = None) -> torch.Tensor:
    """Plain Lloyd k-means (k-means++ seeding) in torch; returns ``(k, D)`` centroids."""
    n = x.shape[0]
    k = min(k, n)
    first = int(torch.randint(n, (1,), generator=generator))
    centroids = [x[first]]
    d2 = ((x - x[first]) ** 2).sum(1)
    for _ in range(1, k):
        probs = d2 / d2.sum() if d2.sum() > 0 else torch.full_like(d2, 1.0 / n)
        nxt = int(torch.multinomial(probs, 1, generator=generator))
        centroids.append(x[nxt])
        d2 = torch.minimum(d2, ((x - x[nxt]) ** 2).sum(1))
    c = torch.stack(centroids)
    for _ in range(iters):
        assign = torch.cdist(x, c).argmin(1)
        counts = torch.bincount(assign, minlength=k).clamp(min=1).unsqueeze(1).to(x.dtype)
        new = torch.zeros_like(c).index_add_(0, assign, x) / counts
        empty = torch.bincount(assign, minlength=k) == 0
        new[empty] = c[empty]  # keep empty clusters where they were
        if torch.allclose(new, c):
            break
        c = new
    return c


def _faiss_candidates(emb: np.ndarray, queries: np.ndarray, n_candidates: int, n_clusters: int, nprobe: int) -> np.ndarray:
    import faiss  # a dependency; the torch fallback below serves installs without it

    d = emb.shape[1]
    quantizer = faiss.IndexFlatL2(d)
    index = faiss.IndexIVFFlat(quantizer, d, n_clusters, faiss.METRIC_L2)
    index.train(emb)
    index.add(emb)
    # Grow nprobe until every query finds enough neighbours: batches are always full size
    # (the original searched one cell and produced undersized batches).
    probe = nprobe
    while True:
        index.nprobe = probe
        _, idx = index.search(emb[queries], n_candidates + 1)
        if (idx >= 0).all() or probe >= n_clusters:
            return idx
        probe = min(probe * 2, n_clusters)


def _torch_candidates(emb: torch.Tensor, queries: torch.Tensor, n_candidates: int, n_clusters: int,
                      nprobe: int, generator: torch.Generator) -> np.ndarray:
    centroids = kmeans(emb, n_clusters, generator=generator)
    assign = torch.cdist(emb, centroids).argmin(1)
    members = [torch.nonzero(assign == c).flatten() for c in range(len(centroids))]
    out = []
    for q in queries.tolist():
        order = torch.cdist(emb[q : q + 1], centroids)[0].argsort(stable=True)
        pool: list[torch.Tensor] = []
        size = 0
        for rank, c in enumerate(order.tolist()):
            pool.append(members[c])
            size += len(members[c])
            if rank + 1 >= nprobe and size > n_candidates:
                break
        cand = torch.cat(pool)
        dist = ((emb[cand] - emb[q]) ** 2).sum(1)
        out.append(cand[dist.argsort(stable=True)[: n_candidates + 1]].numpy())
    return np.stack(out)


def retrieval_batches(
    embeddings: torch.Tensor,
    videos_per_batch: int,
    *,
    generator: torch.Generator,
    candidates_factor: int = 2,
    n_clusters: int | None = None,
    nprobe: int = 8,
    backend: str = "auto",
) -> list[list[int]]:
    """VideoCLIP's retrieval-augmented batches over ``embeddings`` (N, H).

    Sample ``N // videos_per_batch`` query videos without replacement; for each, find its
    ``candidates_factor * videos_per_batch`` nearest videos (L2, IVF index: faiss when
    installed, torch k-means otherwise, probing more cells until enough are found) and return
    the query plus ``videos_per_batch - 1`` of them drawn at random. Every batch is full.
    """
    n = embeddings.shape[0]
    k = videos_per_batch
    if n < k:
        raise VideolangError(f"{n} videos cannot fill a batch of {k} videos")
    n_cand = min(candidates_factor * k, n - 1)
    # About sqrt(N) cells, with >= 40 videos each (what faiss needs to train an IVF index).
    n_clusters = n_clusters or max(1, min(int(math.sqrt(n)), n // 40))
    queries = torch.randperm(n, generator=generator)[: n // k]
    emb = embeddings.detach().float().cpu()
    use_faiss = backend == "faiss"
    if backend == "auto":
        try:
            import faiss  # noqa: F401

            use_faiss = True
        except ImportError:
            use_faiss = False
    if use_faiss:
        cand = _faiss_candidates(emb.numpy(), queries.numpy(), n_cand, n_clusters, nprobe)
    else:
        cand = _torch_candidates(emb, queries, n_cand, n_clusters, nprobe, generator)
    batches = []
    for q, row in zip(queries.tolist(), cand, strict=True):
        others = [int(i) for i in row if i != q][:n_cand]
        pick = torch.randperm(len(others), generator=generator)[: k - 1].tolist()
        batches.append([q, *(others[i] for i in pick)])
    return batches


class RetrievalBatchSampler(BatchSampler):
    """Batches of video indices: random until :meth:`set_embeddings` is called, then
    retrieval-augmented (the recipe refreshes the embeddings every epoch).

    ``sampler`` only tells the number of videos and, when it is a ``DistributedSampler``
    (Lightning injects one under DDP), this rank and the world size. Every rank builds the same
    batch list from the same seed, epoch and embeddings, and takes every ``world``-th batch, so
    ranks see disjoint batches of equal count.
    """

    def __init__(self, sampler: Sampler | Sized, videos_per_batch: int, drop_last: bool = True, *,
                 seed: int = 0, **retrieval_options: Any):
        super().__init__(sampler, videos_per_batch, drop_last=True)
        if isinstance(sampler, DistributedSampler):
            num_videos = len(sampler.dataset)
            self.rank, self.world_size = sampler.rank, sampler.num_replicas
        else:
            num_videos = len(sampler)
            self.rank, self.world_size = 0, 1
        if num_videos < videos_per_batch * self.world_size:
            raise VideolangError(
                f"{num_videos} videos are too few for {self.world_size} rank(s) x "
                f"{videos_per_batch} videos per batch"
            )
        self.num_videos, self.k = num_videos, videos_per_batch
        self.seed = seed
        self.options = retrieval_options
        self.epoch = 0
        self.embeddings: torch.Tensor | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def state_dict(self) -> dict[str, Any]:
        """The epoch and its embeddings: what a run resumed mid-epoch needs to draw the same batches
        (the model has changed since the epoch's embeddings were computed)."""
        return {"epoch": self.epoch, "embeddings": self.embeddings}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.embeddings = state["epoch"], state["embeddings"]

    def set_embeddings(self, embeddings: torch.Tensor | None) -> None:
        if embeddings is not None and embeddings.shape[0] != self.num_videos:
            raise ValueError(f"{embeddings.shape[0]} embeddings for {self.num_videos} videos")
        self.embeddings = embeddings

    def _all_batches(self) -> list[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        if self.embeddings is None:
            perm = torch.randperm(self.num_videos, generator=g).tolist()
            return [perm[i : i + self.k] for i in range(0, self.num_videos - self.k + 1, self.k)]
        return retrieval_batches(self.embeddings, self.k, generator=g, **self.options)

    def __iter__(self) -> Iterator[list[int]]:
        # A generator: the batches are drawn when the first one is requested, not when the
        # iterator is made. Lightning makes the iterator before ``on_train_epoch_start`` in the
        # first epoch and when it resumes a run, and that hook is where the recipe sets the
        # epoch and embeddings. With workers a DataLoader requests batches as soon as its
        # iterator exists: the recipes' DeferredDataLoader makes that the first batch request.
        batches = self._all_batches()
        usable = len(batches) - len(batches) % self.world_size
        yield from batches[self.rank : usable : self.world_size]

    def __len__(self) -> int:
        return (self.num_videos // self.k) // self.world_size


# --------------------------------------------------------------------------------------------
# evaluation and fine-tuning pairs: (video_id, start, end | None, sentence)

EvalFormat = Literal["msrvtt", "youcook2", "jsonl"]


class MsrvttCsvRow(Record):
    """A row of a JSFusion-style MSR-VTT CSV (``key,vid_key,video_id,sentence``)."""

    video_id: Identifier
    sentence: Text


class MsrvttVideo(Record):
    """An entry of ``MSRVTT_data.json``'s ``videos``."""

    video_id: Identifier
    split: Identifier


class MsrvttSentence(Record):
    """An entry of ``MSRVTT_data.json``'s ``sentences``."""

    video_id: Identifier
    caption: Text


def _ordered_segment(segment: list[float]) -> list[float]:
    if segment[0] > segment[1]:
        raise ValueError(f"starts at {segment[0]} after it ends at {segment[1]}")
    return segment


Segment = Annotated[list[Seconds], Field(min_length=2, max_length=2), AfterValidator(_ordered_segment)]
"""``[start, end]`` in seconds, start <= end."""


class YouCook2Segment(Record):
    """An annotated segment of ``youcookii_annotations_trainval.json``."""

    segment: Segment
    sentence: Text


class YouCook2Video(Record):
    """A video of YouCook2's ``database``."""

    subset: Identifier
    annotations: list[YouCook2Segment]


class CaptionLine(Record):
    """A line of our ``captions.jsonl``."""

    video_id: Identifier
    caption: Text
    split: Identifier


def _msrvtt_csv_pairs(p: Path) -> list[tuple]:
    rows = read_csv_records(p, MsrvttCsvRow, required_columns=("video_id", "sentence"))
    return [(r.video_id, 0.0, None, r.sentence) for _, r in rows]


def _msrvtt_json_pairs(p: Path, split: str, all_captions: bool) -> list[tuple]:
    doc = read_json_document(p)
    videos = listed_records(doc, "videos", MsrvttVideo, str(p))
    sentences = listed_records(doc, "sentences", MsrvttSentence, str(p))
    listed = {v.video_id for v in videos}
    keep = {v.video_id for v in videos if v.split == split}
    pairs, seen = [], set()
    for i, s in enumerate(sentences):
        if s.video_id not in listed:
            raise AnnotationError(f"{p}: sentences[{i}]: field 'video_id': {s.video_id!r} is not in 'videos'")
        if s.video_id in keep and (all_captions or s.video_id not in seen):
            seen.add(s.video_id)
            pairs.append((s.video_id, 0.0, None, s.caption))
    return pairs


def _youcook2_pairs(p: Path, split: str) -> list[tuple]:
    doc = read_json_document(p)
    if not isinstance(doc, dict) or "database" not in doc:
        raise AnnotationError(f"{p}: expected a JSON object with a 'database' object")
    videos = dict(keyed_records(doc["database"], YouCook2Video, f"{p}: database"))
    return [(vid, seg.segment[0], seg.segment[1], seg.sentence)
            for vid in sorted(videos) if videos[vid].subset == split for seg in videos[vid].annotations]


def _jsonl_pairs(p: Path, split: str, all_captions: bool) -> list[tuple]:
    pairs, seen = [], set()
    for _, rec in read_jsonl_records(p, CaptionLine):
        if rec.split == split and (all_captions or rec.video_id not in seen):
            seen.add(rec.video_id)
            pairs.append((rec.video_id, 0.0, None, rec.caption))
    return pairs


def read_eval_pairs(path: str, fmt: EvalFormat, split: str, *, all_captions: bool = False) -> list[tuple]:
    """Read evaluation or fine-tuning pairs ``(video_id, start_s, end_s | None, sentence)``,
    every record checked against its format's schema (errors name file, line or key, field).

    * ``msrvtt``: a JSFusion-style CSV (``key,vid_key,video_id,sentence``) gives its rows; an
      ``MSRVTT_data.json`` gives every sentence of the videos whose ``split`` matches.
    * ``youcook2``: ``youcookii_annotations_trainval.json``: one pair per annotated segment of
      the videos whose ``subset`` is ``split`` (``training`` / ``validation``).
    * ``jsonl``: our ``captions.jsonl`` (video_id, caption, split): the first caption of each
      video of the split (``all_captions`` keeps all, for fine-tuning).
    """
    p = Path(path)
    if fmt == "msrvtt" and p.suffix == ".csv":
        pairs = _msrvtt_csv_pairs(p)
    elif fmt == "msrvtt":
        pairs = _msrvtt_json_pairs(p, split, all_captions)
    elif fmt == "youcook2":
        pairs = _youcook2_pairs(p, split)
    else:
        pairs = _jsonl_pairs(p, split, all_captions)
    if not pairs:
        raise AnnotationError(f"{p}: no {fmt} pairs for split {split!r}")
    return pairs


def protocol_name(fmt: str, split: str) -> str:
    return f"{fmt}-{split}"


def scale_pairs(pairs: list[tuple], rate: float) -> list[tuple]:
    if rate == 1.0:
        return pairs
    return [(v, s * rate, None if e is None else e * rate, t) for v, s, e, t in pairs]


class FineTunePairs(Dataset):
    """One item per video per epoch, a random caption of it each time (MSR-VTT ``dup``)."""

    def __init__(self, pairs: list[tuple], features, tokenize, layout: TextLayout, max_video_len: int, seed: int):
        by_video: dict[str, list[tuple]] = {}
        for p in pairs:
            by_video.setdefault(p[0], []).append(p)
        self.videos = sorted(by_video)
        self.by_video = by_video
        self.inner = VideoTextPairs(pairs, features, tokenize, layout, max_video_len=max_video_len)
        self.index_of = {p: i for i, p in enumerate(self.inner.pairs)}
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, i: int) -> dict[str, Any]:
        options = self.by_video[self.videos[i]]
        pick = epoch_choice(self.seed, self.epoch, i, len(options))
        item = self.inner[self.index_of[options[pick]]]
        if isinstance(item, SkippedSample):
            item.index = i  # this dataset's index, not the inner pair's
        return item


def read_video_list_entries(path: str | os.PathLike) -> list[tuple[int, str]]:
    """``(line, video_id)`` of a video list: one id a line, or a ``.csv`` with a ``video_id``
    column (HowTo100M's). Bad and repeated ids are errors naming the line."""
    p = Path(path)
    if p.suffix == ".csv":
        entries = [(line, r.video_id) for line, r in read_csv_records(p, _VideoKey, required_columns=("video_id",))]
    else:
        entries = [(line, validate_record(_VideoKey, {"video_id": text.strip()}, f"{p}:{line}").video_id)
                   for line, text in enumerate(read_text_file(p).splitlines(), 1) if text.strip()]
    first: dict[str, int] = {}
    for line, vid in entries:
        if vid in first:
            raise AnnotationError(f"{p}:{line}: video {vid!r} is listed twice (first at line {first[vid]})")
        first[vid] = line
    if not entries:
        raise AnnotationError(f"{p}: no video ids")
    return entries


def read_video_list(path: str | os.PathLike) -> list[str]:
    """The ids of a video list (:func:`read_video_list_entries`)."""
    return [vid for _, vid in read_video_list_entries(path)]


# --------------------------------------------------------------------------------------------
# the data section and the datasets by split


@dataclass
class VideoCLIPDataConfig(LoaderConfig):
    """``data.*`` of the VideoCLIP recipes; each recipe registers a subclass fixing ``objective``."""

    objective: Literal["pretrain", "retrieval"] = "retrieval"  # which training set the recipe builds
    features: str = ""
    feature_rate: float | None = None  # rows per second; None: from the store's extraction.json, else 1
    tokenizer: str = "minilm"
    max_video_len: int = 32
    max_text_len: int = 61
    mmpt_text_layout: bool = False  # text as [CLS] [SEP] words [SEP] (MMPT); always on for VLM
    # pretraining (objective pretrain)
    captions: str | None = None
    train_list: str | None = None  # one video id per line; default: every captioned video
    pairs_per_video: int = 4
    videos_per_batch: int = 32
    overlapped: bool = True
    min_video_len: int = 3
    min_text_tokens: int = 8
    max_text_tokens: int = 64
    retrieval: bool = True
    retrieval_start_epoch: int = 1
    retrieval_candidates: int = 2  # sample k videos from the k * this nearest
    retrieval_nprobe: int = 8
    retrieval_pairs_per_video: int = 4  # clips averaged into a video's embedding
    # fine-tuning (objective retrieval)
    train_pairs: str | None = None
    train_format: EvalFormat = "jsonl"
    train_split: str = "train"
    batch_size: int = 64
    # evaluation
    val_pairs: str | None = None
    val_format: EvalFormat = "jsonl"
    val_split: str = "val"
    test_pairs: str | None = None
    test_format: EvalFormat = "msrvtt"
    test_split: str = "test"
    eval_batch_size: int = 256


@dataclass
class VideoCLIPPretrainDataConfig(VideoCLIPDataConfig):
    """``data.*`` of ``videoclip.pretrain``: (video window, caption span) pairs from timed captions."""

    objective: Literal["pretrain"] = "pretrain"


@dataclass
class VideoCLIPRetrievalDataConfig(VideoCLIPDataConfig):
    """``data.*`` of ``videoclip.retrieval``: fine-tuning on (video, sentence) pairs."""

    objective: Literal["retrieval"] = "retrieval"


class VideoCLIPSplits(DataSplits[VideoCLIPDataConfig]):
    """Training: pretraining pairs in retrieval-augmented batches or fine-tuning pairs
    (``data.objective``); evaluation: (video, sentence) pairs of ``data.<split>_pairs``.

    The feature store, its rate and the tokenizer are opened on first use and shared by splits.
    """

    def __init__(self, data: VideoCLIPDataConfig, seed: int = 0):
        if not data.features:
            raise ConfigError("data.features: give the feature store folder (videolang extract-features --out)")
        super().__init__(data, seed)

    @cached_property
    def features(self) -> FeatureStore:
        return FeatureStore(self.data.features)

    @cached_property
    def feature_rate(self) -> float:
        """Feature rows per second: annotation times are seconds, rows are not."""
        return feature_rows_per_second(self.data.features, self.data.feature_rate)

    @cached_property
    def tokenizer(self) -> Any:
        from videolang.data.text import load_tokenizer  # transformers: imported when data is read

        return load_tokenizer(self.data.tokenizer)

    @cached_property
    def layout(self) -> TextLayout:
        tok = self.tokenizer
        return TextLayout(tok.cls_token_id, tok.sep_token_id, tok.pad_token_id, self.data.max_text_len,
                          sep_after_cls=self.data.mmpt_text_layout)

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Word-piece ids of each text, without special tokens (the layout adds them)."""
        return self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]

    def has_split(self, split: str) -> bool:
        return split != "val" or bool(self.data.val_pairs)

    def protocol(self, split: str) -> str:
        """The evaluation protocol's name in metric keys (``msrvtt-test``, ``jsonl-val``, ...)."""
        return protocol_name(getattr(self.data, f"{split}_format"), getattr(self.data, f"{split}_split"))

    def pairs(self, split: str, *, all_captions: bool = False) -> list[tuple]:
        """``data.<split>_pairs`` read in its format, times in feature rows."""
        path = getattr(self.data, f"{split}_pairs")
        if not path:
            raise ConfigError(f"data.{split}_pairs: no {split} annotations given")
        fmt, name = getattr(self.data, f"{split}_format"), getattr(self.data, f"{split}_split")
        return scale_pairs(read_eval_pairs(path, fmt, name, all_captions=all_captions), self.feature_rate)

    def build(self, split: str) -> Dataset:
        d = self.data
        if split != "train":
            return VideoTextPairs(self.pairs(split), self.features, self.tokenize, self.layout,
                                  max_video_len=d.max_video_len)
        if d.objective == "pretrain":
            return self._pretrain_pairs()
        if not d.train_pairs:
            raise ConfigError("data.train_pairs: videoclip.retrieval fine-tuning needs (video, sentence) pairs")
        return FineTunePairs(self.pairs("train", all_captions=True), self.features, self.tokenize, self.layout,
                             d.max_video_len, self.seed)

    def _pretrain_pairs(self) -> PretrainPairs:
        d = self.data
        if not d.captions:
            raise ConfigError("data.captions: videoclip.pretrain needs timestamped captions (raw_caption.json)")
        if d.train_list:
            listed, captions = read_pretraining_videos(d.train_list, d.captions)
        else:
            captions = read_timed_captions(d.captions)
        tracks = tokenize_tracks(captions, self.tokenize, source=d.captions)
        if self.feature_rate != 1.0:  # caption times are seconds, feature rows are not
            for t in tracks.values():
                t.starts, t.ends = t.starts * self.feature_rate, t.ends * self.feature_rate
        if d.train_list:  # every listed video must have features (PretrainPairs says which do not)
            ids = [v for v in listed if v in tracks]
        else:
            ids = [v for v in sorted(tracks) if v in self.features]
            if len(ids) < len(tracks):
                log.warning("%s: %d of %d captioned videos have no features in %s; left out (give "
                            "data.train_list to make that an error)", d.captions, len(tracks) - len(ids),
                            len(tracks), d.features)
        return PretrainPairs(
            self.features, tracks, ids, self.layout, pairs_per_video=d.pairs_per_video,
            max_video_len=d.max_video_len, min_text_tokens=d.min_text_tokens, max_text_tokens=d.max_text_tokens,
            min_video_len=d.min_video_len, overlapped=d.overlapped, seed=self.seed,
        )

    def collate_fn(self, split: str) -> Callable[[Sequence[Any]], dict[str, Any]]:
        return collate_pairs if split == "train" and self.data.objective == "pretrain" else collate_skipping

    def train_batch_sampler(self, dataset: Dataset) -> Sampler | None:
        """Pretraining: :class:`RetrievalBatchSampler` (random until the recipe gives embeddings)."""
        if self.data.objective != "pretrain":
            return None
        d = self.data
        return RetrievalBatchSampler(SequentialSampler(dataset), d.videos_per_batch, seed=self.seed,
                                     candidates_factor=d.retrieval_candidates, nprobe=d.retrieval_nprobe)
