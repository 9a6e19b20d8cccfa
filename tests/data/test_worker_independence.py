"""The data layer's training datasets draw from (seed, epoch, index) alone: the same items in
the main process, in any reading order, and from DataLoader workers (whatever their RNG
state); and the recipes' DeferredDataLoader starts its workers with the first batch request,
so per-epoch state set after ``iter(loader)`` reaches them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.conftest import write_index_video
from tests.determinism import assert_worker_independent, read_with_workers, same
from torch.utils.data import DataLoader, Dataset

from videolang.data.clipbert import ClipBertItems, TextEncoder, VisualSource
from videolang.data.corpus import TokenBlocks
from videolang.data.datasets import DeferredDataLoader, VideoFramesDataset, item_generator
from videolang.data.sampling import ClipBertTaskSampling, clipbert_clip_indices
from videolang.data.transforms import random_crop
from videolang.data.videoclip import CaptionTrack, PretrainPairs, TextLayout, VideoTextPairs
from videolang.data.vlm import CaptionItems, SegmentationWindows, VideoSegments, caption_layout


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("workers")
    for i in range(4):
        write_index_video(root / f"v{i}.mp4", num_frames=20 + 5 * i, fps=10, gop=10, size=32)
    return root


@pytest.fixture(scope="module")
def features():
    rng = np.random.default_rng(0)
    return {f"v{i}": rng.normal(size=(6 + i, 5)).astype(np.float32) for i in range(5)}


def _sampler(meta, generator):
    return clipbert_clip_indices(meta.num_frames, meta.fps, num_clips=2, frames_per_clip=2, target_fps=4.0,
                                 generator=generator)


def test_item_generator_depends_on_seed_epoch_and_index_only():
    draw = [torch.rand(4, generator=item_generator(*key)) for key in [(0, 0, 0), (0, 0, 0), (1, 0, 0), (0, 1, 0),
                                                                      (0, 0, 1)]]
    assert torch.equal(draw[0], draw[1])
    assert all(not torch.equal(draw[0], d) for d in draw[2:])


def test_video_frames_dataset_and_its_random_crop(videos):
    records = [{"video": f"v{i}", "label": i} for i in range(4)]
    assert_worker_independent(lambda: VideoFramesDataset(records, _sampler, video_root=videos, seed=3))

    # a transform with a ``generator`` keyword gets the item's generator: crops are seeded too
    def crop_clips(frames, generator):
        return random_crop(frames.flatten(0, 1).permute(0, 3, 1, 2), 16, generator=generator)

    items = assert_worker_independent(
        lambda: VideoFramesDataset(records, _sampler, video_root=videos, seed=3, transform=crop_clips))
    assert items[0][0]["frames"].shape == (4, 3, 16, 16)


def test_clipbert_items_retrieval_and_pretraining(videos):
    class Tok:
        cls_token_id, sep_token_id, pad_token_id = 101, 102, 0

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [1000 + len(w) for w in text.split()]}

    sampling = ClipBertTaskSampling(2.0, 2, 2, 2, "middle")
    records = [{"visual": f"v{i % 4}", "text": "word " * (i + 1)} for i in range(6)]

    def make(kind):
        return ClipBertItems(records, kind, TextEncoder(Tok(), max_len=12),
                             lambda keys: VisualSource(keys, sampling=sampling, train=True, frame_size=32,
                                                       video_root=str(videos), seed=2),
                             itm_neg_size=2, itm_neg_prob=0.5, seed=2)

    assert_worker_independent(lambda: make("retrieval"))
    assert_worker_independent(lambda: make("pretrain"))


def test_videoclip_pretrain_pairs(features):
    tracks = {k: CaptionTrack(np.arange(len(v), dtype=np.float64), np.arange(1, len(v) + 1, dtype=np.float64),
                              [[100 + j, 200 + j, 300 + j] for j in range(len(v))]) for k, v in features.items()}
    make = lambda: PretrainPairs(features, tracks, sorted(features), TextLayout(max_text_len=12),  # noqa: E731
                                 pairs_per_video=3, max_video_len=4, min_video_len=1, min_text_tokens=2,
                                 max_text_tokens=6, seed=7)
    assert_worker_independent(make)


def test_vlm_caption_items(features):
    pairs = [(vid, 0.0, None, f"caption {j} of {vid}") for vid in sorted(features) for j in range(4)]

    def tokenize(texts):
        return [[100 + sum(map(ord, w)) % 900 for w in t.split()] for t in texts]

    layout = TextLayout(max_text_len=10, sep_after_cls=True)
    items = assert_worker_independent(lambda: CaptionItems(pairs, features, tokenize, layout, max_video_len=4,
                                                           seed=1), epochs=(0, 1, 2))
    options = [caption_layout(layout, words)[0] for words in tokenize([p[3] for p in pairs[:4]])]
    assert all(any(same(item["caps"], o) for o in options) for item in (epoch[0] for epoch in items))


def test_datasets_without_random_draws(features):
    """Evaluation and fixed-item datasets: the same items everywhere (nothing to vary)."""
    pairs = [(vid, 0.0, None, f"a {vid}") for vid in sorted(features)]
    tokenize = lambda texts: [[5, len(t)] for t in texts]  # noqa: E731
    assert_worker_independent(lambda: VideoTextPairs(pairs, features, tokenize, TextLayout(max_text_len=6),
                                                     max_video_len=4), varies_with_epoch=False)
    segments = [VideoSegments(vid, ((0.0, 2.0, 1), (3.0, 5.0, 2))) for vid in sorted(features)]
    assert_worker_independent(lambda: SegmentationWindows(segments, features, window=4, stride=2),
                              varies_with_epoch=False)
    stream = np.arange(200, dtype=np.int64)
    assert_worker_independent(lambda: TokenBlocks(stream, 101, 102, block_size=16), varies_with_epoch=False)


class _EpochItems(Dataset):
    """Items that are the dataset's epoch (what a worker's copy of the dataset saw)."""

    def __init__(self):
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return 4

    def __getitem__(self, i):
        return self.epoch


@pytest.mark.parametrize("num_workers", [0, 2])
def test_deferred_loader_hands_state_set_after_iter_to_its_workers(num_workers):
    """Lightning makes the training iterator before ``on_train_epoch_start`` (first epoch,
    resume): a plain DataLoader's workers would keep the old epoch."""
    ds = _EpochItems()
    it = iter(DeferredDataLoader(ds, batch_size=2, num_workers=num_workers))
    ds.set_epoch(3)  # what the recipe's on_train_epoch_start does
    assert [b.tolist() for b in it] == [[3, 3], [3, 3]]
    assert len(iter(DeferredDataLoader(ds, batch_size=2))) == 2
    if num_workers:  # the failure the deferral prevents
        ds.set_epoch(0)
        plain = iter(DataLoader(ds, batch_size=2, num_workers=num_workers))
        ds.set_epoch(3)
        assert [b.tolist() for b in plain] == [[0, 0], [0, 0]]


def test_read_with_workers_matches_the_main_process(features):
    ds = VideoTextPairs([(v, 0.0, None, "x") for v in sorted(features)], features, lambda t: [[1]] * len(t),
                        TextLayout(max_text_len=4), max_video_len=3)
    assert all(same(ds[i], item) for i, item in enumerate(read_with_workers(ds, 0)))
