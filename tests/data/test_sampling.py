"""Samplers: golden indices of the originals (compat modes) and the paper-faithful defaults."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from videolang.data import sampling as S

# ClipBERT's clip choice (jayleicn/ClipBERT src/datasets/dataset_base.py) on a 300-frame, 30 fps,
# 10 s video, target fps 2, T = 2 unless noted.
F, FPS = 300, 30.0


def test_clipbert_compat_golden_indices():
    f = S.clipbert_clip_indices
    assert f(F, FPS, mode="random", generator=random.Random(1), compat=True).tolist() == [[37, 66]]
    named = [f(F, FPS, mode="uniform", compat=True, compat_clip_idx=k).tolist() for k in range(3)]
    assert named == [[[0, 29]], [[90, 119]], [[180, 209]]]  # start / middle / end
    assert f(F, FPS, mode="uniform", num_clips=4, compat=True).tolist() == [
        [0, 29], [68, 97], [135, 164], [203, 232]
    ]
    assert S.uniform_frame_indices(F, 3, compat=True).tolist() == [0, 149, 299]
    qa_eval = f(F, FPS, target_fps=1, frames_per_clip=1, mode="uniform", compat=True,
                compat_clip_idx=0, compat_num_clips=1)
    assert qa_eval.tolist() == [[0]]
    ret_eval = f(F, FPS, target_fps=1, frames_per_clip=1, mode="uniform", compat=True, compat_clip_idx=1)
    assert ret_eval.tolist() == [[90]]
    # mkv case of the goldens: 90 decoded frames, "middle" window
    assert f(90, FPS, mode="uniform", compat=True, compat_clip_idx=1).tolist() == [[20, 49]]


def test_clipbert_default_is_the_paper():
    f = S.clipbert_clip_indices
    # one test clip: the true middle; a 1-frame clip takes the window's middle frame
    assert f(F, FPS, target_fps=1, frames_per_clip=1, mode="uniform").tolist() == [[150]]
    # frames 1/target_fps apart (15 source frames at 30 fps, 2 fps), not at both window ends
    clips = f(F, FPS, num_clips=4, mode="uniform")
    assert (np.diff(clips, axis=1) == 15).all()
    # K test clips cover the video from the very start to the very end
    assert clips[0, 0] <= 15 and clips[-1, -1] >= F - 15


def test_clipbert_random_clips_are_sorted_in_range_and_seeded():
    g = torch.Generator().manual_seed(0)
    clips = S.clipbert_clip_indices(F, FPS, num_clips=8, frames_per_clip=4, generator=g)
    assert clips.shape == (8, 4)
    assert (clips >= 0).all() and (clips < F).all()
    assert (np.diff(clips[:, 0]) >= 0).all()
    again = S.clipbert_clip_indices(F, FPS, num_clips=8, frames_per_clip=4,
                                    generator=torch.Generator().manual_seed(0))
    assert np.array_equal(clips, again)
    # short video: window longer than the video is clamped, never out of range
    short = S.clipbert_clip_indices(10, FPS, frames_per_clip=4, generator=g)
    assert short.min() >= 0 and short.max() <= 9


def test_random_starts_cover_the_video_uniformly():
    starts = S.clipbert_window_starts(300, 30, 20000, "random", generator=np.random.default_rng(1))
    hist, _ = np.histogram(starts, bins=9, range=(0, 270))
    assert hist.min() > 0.9 * hist.mean()


def test_uniform_frame_indices_default_centres():
    assert S.uniform_frame_indices(300, 3).tolist() == [50, 150, 250]
    assert S.uniform_frame_indices(5, 8).max() <= 4


def test_vimpac_starts():
    # 100 frames, clip of 5 frames every 8: video_size = 107, clip_size = 40, delta = 67
    assert S.vimpac_clip_starts(100, 5, 8, mode="uniform", num_clips=3).tolist() == [0, 33, 67]
    assert S.vimpac_clip_starts(100, 5, 8, mode="uniform", legacy=True).tolist() == [0]
    assert S.vimpac_clip_starts(100, 5, 8, mode="uniform").tolist() == [33]
    r = S.vimpac_clip_starts(100, 5, 8, num_clips=500, generator=torch.Generator().manual_seed(0))
    assert r.min() >= 0 and r.max() <= 67 and len(set(r.tolist())) > 50
    bounded = S.vimpac_clip_starts(100, 5, 8, num_clips=200, bounds=(60, 90), generator=random.Random(0))
    assert bounded.min() >= 60 and bounded.max() <= 67
    idx, valid = S.vimpac_clip_indices(20, 10, 5, 2)
    assert idx.tolist() == [10, 12, 14, 16, 18] and valid.all()
    idx, valid = S.vimpac_clip_indices(15, 10, 5, 2)
    assert valid.tolist() == [True, True, True, False, False] and idx.max() == 14


def test_videoclip_video_window_golden():
    # MMPT's VideoClipSampling(T, 10 s, centre 40) after random.seed(1234) gives [36, 46) (the value
    # recorded by running the original, fairseq examples/MMPT)
    assert S.videoclip_video_window(100, 40, 10, generator=random.Random(1234)) == (36, 46)
    assert S.videoclip_video_window(5, 0, 32) == (0, 5)
    assert S.videoclip_video_window(50, 49, 3, generator=random.Random(0)) == (47, 50)


@pytest.mark.parametrize("seed", range(20))
def test_videoclip_overlapped_pair_invariants(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 30))
    durations = rng.uniform(1, 6, n)
    starts = np.concatenate([[0.0], np.cumsum(durations)[:-1]])
    ends = starts + durations
    tokens = rng.integers(1, 12, n)
    seconds = int(np.ceil(ends[-1]))
    w = S.videoclip_overlapped_pair(starts, ends, tokens, seconds, generator=random.Random(seed))
    assert 0 <= w.text_start <= w.text_end < n
    assert 0 <= w.video_start < w.video_end <= seconds
    assert 1 <= w.video_end - w.video_start <= 32
    # the span grew until it had >= 8 tokens or ran out of captions
    span_tokens = tokens[w.text_start : w.text_end + 1].sum()
    assert span_tokens >= 8 or (w.text_start == 0 and w.text_end == n - 1)
    exact = S.videoclip_overlapped_pair(starts, ends, tokens, seconds, overlapped=False,
                                        generator=random.Random(seed))
    assert exact.video_start == int(np.floor(starts[exact.text_start]))
    assert exact.video_end - exact.video_start <= 32


def test_text_span_respects_limits():
    starts = np.arange(10.0)
    ends = starts + 1
    s, e = S.videoclip_text_span(starts, ends, [5] * 10, 4, 12, generator=random.Random(0))
    assert e - s + 1 == 3 and s <= 4 <= e
    s, e = S.videoclip_text_span(starts, ends, [1] * 10, 0, 100, max_seconds=4)
    assert (s, e) == (0, 3)  # ends[3] - starts[0] = 4 s reaches the limit


def test_window_spans_cover_the_video_and_end_at_its_end():
    from videolang.data.sampling import window_spans

    assert window_spans(0, 4, 2) == []
    assert window_spans(3, 4, 2) == [(0, 3)]  # shorter than one window: one window
    assert window_spans(8, 4, 4) == [(0, 4), (4, 8)]
    assert window_spans(10, 4, 4) == [(0, 4), (4, 8), (6, 10)]  # the last window ends at the end
    assert window_spans(10, 4, 3) == [(0, 4), (3, 7), (6, 10)]
    with pytest.raises(ValueError, match=">= 1"):
        window_spans(10, 0, 1)
