"""Frame and clip samplers as pure functions of (frame count or duration, fps, random generator).

Samplers return indices (or second ranges) for :func:`videolang.data.video.read_frames`; they
never open a file. Random draws accept a :class:`torch.Generator`, a ``numpy.random.Generator``
or a :class:`random.Random` (which replays the originals' Python-``random`` draws). Where an
original differs from its paper, the paper's behaviour is the default and ``compat=True`` /
``legacy=True`` gives the original's: docs/data.md ("Samplers").
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

Generator = torch.Generator | np.random.Generator | random.Random | None

__all__ = [
    "CLIPBERT_TASK_SAMPLING",
    "ClipBertTaskSampling",
    "ClipWindow",
    "clipbert_clip_indices",
    "clipbert_task_indices",
    "clipbert_task_sampling",
    "clipbert_window_starts",
    "resample_frame_indices",
    "uniform_frame_indices",
    "videoclip_exact_window",
    "videoclip_overlapped_pair",
    "videoclip_text_span",
    "videoclip_video_window",
    "vimpac_clip_indices",
    "vimpac_clip_starts",
    "window_spans",
]


# --------------------------------------------------------------------------------------------
# random helpers (one code path for the three generator kinds)


def _uniform(low: float, high: float, size: int, generator: Generator) -> np.ndarray:
    """``size`` floats uniform in [low, high]."""
    if isinstance(generator, random.Random):
        return np.array([generator.uniform(low, high) for _ in range(size)], dtype=np.float64)
    if isinstance(generator, np.random.Generator):
        return generator.uniform(low, high, size)
    u = torch.rand(size, generator=generator, dtype=torch.float64).numpy()
    return low + (high - low) * u


def _randint(low: int, high: int, size: int, generator: Generator) -> np.ndarray:
    """``size`` integers uniform in [low, high] (both ends included, like ``random.randint``)."""
    if high < low:
        raise ValueError(f"empty integer range [{low}, {high}]")
    if isinstance(generator, random.Random):
        return np.array([generator.randint(low, high) for _ in range(size)], dtype=np.int64)
    if isinstance(generator, np.random.Generator):
        return generator.integers(low, high + 1, size, dtype=np.int64)
    return torch.randint(low, high + 1, (size,), generator=generator).numpy().astype(np.int64)


def _random01(generator: Generator) -> float:
    """One float in [0, 1); with ``random.Random`` exactly one ``random()`` call."""
    if isinstance(generator, random.Random):
        return generator.random()
    if isinstance(generator, np.random.Generator):
        return float(generator.random())
    return float(torch.rand((), generator=generator, dtype=torch.float64).item())


def _coin(generator: Generator) -> bool:
    """A fair coin, ``random() > 0.5`` as in MMPT (True means "grow to the right")."""
    return _random01(generator) > 0.5


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value}")


# --------------------------------------------------------------------------------------------
# ClipBERT sparse sampling


def clipbert_window_starts(
    num_frames: int,
    clip_size: float,
    num_clips: int,
    mode: Literal["random", "uniform"],
    *,
    generator: Generator = None,
    compat: bool = False,
    compat_clip_idx: int | None = None,
    compat_num_clips: int | None = None,
) -> np.ndarray:
    """Start positions (in source frames, floats) of ``num_clips`` windows of ``clip_size`` frames.

    ``random``: independent uniform starts in [0, delta], delta = max(F - clip_size, 0) (sorted,
    so the clips are decoded in one forward pass). ``uniform``: evenly spaced test windows;
    ours run from 0 to delta (K=1: the centre, delta/2); with ``compat`` they start at
    ``delta * k / N`` like the original (``compat_clip_idx``/``compat_num_clips`` select the
    original's named windows: start = 0 of 3, middle = 1 of 3, end = 2 of 3).
    """
    delta = max(num_frames - clip_size, 0.0)
    if mode == "random":
        starts = _uniform(0.0, delta, num_clips, generator)
        return starts if compat else np.sort(starts)
    if mode != "uniform":
        raise ValueError(f"mode must be 'random' or 'uniform', got {mode!r}")
    if compat:
        if compat_clip_idx is not None:
            n = compat_num_clips or 3
            return np.array([delta * compat_clip_idx / n])
        return delta * np.arange(num_clips) / num_clips
    if num_clips == 1:
        return np.array([delta / 2.0])
    return delta * np.arange(num_clips) / (num_clips - 1)


def clipbert_clip_indices(
    num_frames: int,
    fps: float,
    *,
    num_clips: int = 1,
    frames_per_clip: int = 2,
    target_fps: float = 2.0,
    mode: Literal["random", "uniform"] = "random",
    generator: Generator = None,
    compat: bool = False,
    compat_clip_idx: int | None = None,
    compat_num_clips: int | None = None,
) -> np.ndarray:
    """ClipBERT sparse sampling: ``(num_clips, frames_per_clip)`` source frame indices.

    A clip spans ``frames_per_clip / target_fps`` seconds, i.e. ``clip_size`` source frames.

    * default (paper): the T frames sit at the centres of T equal parts of the window, so they
      are 1/target_fps seconds apart, and a 1-frame clip takes the window's middle frame.
    * ``compat=True`` (original code): frames at ``linspace(start, start + clip_size - 1, T)``
      (both window ends; T=1 gives the window's first frame), start rounded up to the first
      frame at or after the window start (the original selected frames by PTS >= start).
      Reproduces the original's golden indices (tests/data/test_sampling.py).
    """
    _check_positive(num_frames=num_frames, fps=fps, target_fps=target_fps)
    _check_positive(num_clips=num_clips, frames_per_clip=frames_per_clip)
    clip_size = frames_per_clip / target_fps * fps
    starts = clipbert_window_starts(
        num_frames, clip_size, num_clips, mode, generator=generator, compat=compat,
        compat_clip_idx=compat_clip_idx, compat_num_clips=compat_num_clips,
    )
    if compat:
        first = np.ceil(starts - 1e-9)
        offsets = np.linspace(0.0, clip_size - 1.0, frames_per_clip)
        idx = np.floor(first[:, None] + offsets[None, :])
    else:
        step = clip_size / frames_per_clip
        idx = np.floor(starts[:, None] + (np.arange(frames_per_clip)[None, :] + 0.5) * step)
    return np.clip(idx, 0, num_frames - 1).astype(np.int64)


def uniform_frame_indices(num_frames: int, num_samples: int, *, compat: bool = False) -> np.ndarray:
    """``num_samples`` frames spread over the whole video.

    Default: the centres of ``num_samples`` equal segments. ``compat=True``: ClipBERT's
    "uniform" path, ``linspace(0, F - 1, T)`` truncated (first and last frame included).
    """
    _check_positive(num_frames=num_frames, num_samples=num_samples)
    if compat:
        idx = np.linspace(0, num_frames - 1, num_samples).astype(np.int64)
    else:
        idx = np.floor((np.arange(num_samples) + 0.5) * num_frames / num_samples).astype(np.int64)
    return np.clip(idx, 0, num_frames - 1)


# --------------------------------------------------------------------------------------------
# VIMPAC token clips


def vimpac_clip_starts(
    num_frames: int,
    clip_len: int,
    stride: int = 1,
    *,
    mode: Literal["random", "uniform"] = "random",
    num_clips: int = 1,
    generator: Generator = None,
    bounds: tuple[int, int] | None = None,
    legacy: bool = False,
) -> np.ndarray:
    """Integer start frames of VIMPAC clips (``clip_len`` frames taken every ``stride``).

    ``video_size = F + stride - 1`` lets the last frame be used; delta = max(video_size -
    clip_len * stride, 0). ``random``: starts ~ U{l..r} with (l, r) = (0, delta) or ``bounds``
    clamped into it (used for the second clip of a pre-training pair, within the relevance
    range of the first). ``uniform``: ``int(delta * k / max(K - 1, 1))``, from the very start
    to the very end; with K = 1 the centre clip (``legacy=True``: the first clip, as the
    original did).
    """
    _check_positive(num_frames=num_frames, clip_len=clip_len, stride=stride, num_clips=num_clips)
    delta = max(num_frames + stride - 1 - clip_len * stride, 0)
    if mode == "random":
        lo, hi = 0, delta
        if bounds is not None:
            hi = min(max(bounds[1], 0), delta)
            lo = min(max(0, bounds[0]), hi)
        return _randint(lo, hi, num_clips, generator)
    if mode != "uniform":
        raise ValueError(f"mode must be 'random' or 'uniform', got {mode!r}")
    if num_clips == 1 and not legacy:
        return np.array([delta // 2], dtype=np.int64)
    k = np.arange(num_clips)
    return (delta * k / max(num_clips - 1, 1)).astype(np.int64)


def vimpac_clip_indices(
    num_frames: int, start: int, clip_len: int, stride: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Frame indices of one clip and its validity mask.

    Returns ``(indices (clip_len,), valid (clip_len,) bool)``: frames past the end of the
    video are invalid (the original pads them with the PAD token); their index is clamped to
    the last frame so the caller can gather safely.
    """
    idx = start + np.arange(clip_len) * stride
    valid = idx < num_frames
    return np.minimum(idx, num_frames - 1).astype(np.int64), valid


# --------------------------------------------------------------------------------------------
# VideoCLIP clip windows from caption timestamps (per-second features)


@dataclass(frozen=True)
class ClipWindow:
    """A video span ``[video_start, video_end)`` in seconds (feature rows) and an inclusive
    caption range ``[text_start, text_end]``."""

    video_start: int
    video_end: int
    text_start: int
    text_end: int


def videoclip_text_span(
    starts: Sequence[float],
    ends: Sequence[float],
    num_tokens: Sequence[int],
    center: int,
    max_tokens: int,
    *,
    max_seconds: float = 256.0,
    keep_prob: float = 1.0,
    generator: Generator = None,
) -> tuple[int, int]:
    """Grow a contiguous caption range around caption ``center`` (MMPT ``TextClipSampling``).

    One caption at a time, while there is room on either side, the token count is below
    ``max_tokens`` and the span is shorter than ``max_seconds``: with p = 0.5 append the next
    caption (if any), else prepend the previous one (if any), else append. With ``keep_prob``
    < 1 a caption may be skipped (jumped over); the skip coin is drawn at every step even when
    ``keep_prob`` is 1, as in the original, so a ``random.Random`` replays its draws exactly.
    Returns the inclusive range ``(s, e)``.
    """
    n = len(starts)
    if not 0 <= center < n:
        raise IndexError(f"caption index {center} out of range for {n} captions")
    s = e = center
    tokens = int(num_tokens[center])
    while (s > 0 or e < n - 1) and tokens < max_tokens and ends[e] - starts[s] < max_seconds:
        if (_coin(generator) and e < n - 1) or s == 0:
            if _random01(generator) > keep_prob and e + 2 < n:
                e += 1  # skip one caption
            e += 1
            tokens += int(num_tokens[e])
        else:
            if _random01(generator) > keep_prob and s - 1 > 0:
                s -= 1
            s -= 1
            tokens += int(num_tokens[s])
    return s, e


def videoclip_video_window(
    num_seconds: int, center: int, length: int, *, generator: Generator = None
) -> tuple[int, int]:
    """Grow a ``length``-second window ``[start, end)`` around second ``center`` (MMPT
    ``VideoClipSampling``): start from the empty window at ``center`` and add one second per
    step, right or left with p = 0.5 (forced at the borders), until ``length`` seconds or the
    whole video."""
    if num_seconds <= 0:
        raise ValueError("video has no feature rows")
    center = min(max(center, 0), num_seconds - 1)
    start = end = center
    target = min(length, num_seconds)
    while end - start < target:
        if start == 0:
            end += 1
        elif end == num_seconds:
            start -= 1
        elif _coin(generator):
            end += 1
        else:
            start -= 1
    return start, end


def videoclip_exact_window(
    starts: Sequence[float], ends: Sequence[float], s: int, e: int, *, max_len: int, num_seconds: int
) -> tuple[int, int]:
    """The exact-alignment baseline: ``[floor(start[s]), ceil(end[e]))`` cut to ``max_len``
    seconds and to the video."""
    lo = min(math.floor(starts[s]), max(num_seconds - 1, 0))
    hi = min(math.ceil(ends[e]), num_seconds, lo + max_len)
    return lo, max(hi, lo + 1)


def videoclip_overlapped_pair(
    starts: Sequence[float],
    ends: Sequence[float],
    num_tokens: Sequence[int],
    num_seconds: int,
    *,
    min_text_tokens: int = 8,
    max_text_tokens: int = 64,
    min_video_len: int = 3,
    max_video_len: int = 32,
    overlapped: bool = True,
    generator: Generator = None,
) -> ClipWindow:
    """One VideoCLIP positive pair (the overlapped sampling of MMPT's VideoCLIP pretraining).

    Draw a centre caption and a text length, grow the text span around it; draw the video
    centre inside the text span's seconds and a video length in [min_video_len, max_video_len],
    grow the video window around that centre. With ``overlapped=False`` the video span is the
    exact-alignment baseline instead.
    """
    n = len(starts)
    if n == 0:
        raise ValueError("video has no captions")
    center = int(_randint(0, n - 1, 1, generator)[0])
    max_tokens = int(_randint(min_text_tokens, max_text_tokens, 1, generator)[0])
    s, e = videoclip_text_span(starts, ends, num_tokens, center, max_tokens, generator=generator)
    if not overlapped:
        lo, hi = videoclip_exact_window(starts, ends, s, e, max_len=max_video_len, num_seconds=num_seconds)
        return ClipWindow(lo, hi, s, e)
    low, high = math.floor(starts[s]), math.ceil(ends[e])
    vcenter = int(_randint(low, high, 1, generator)[0]) if low < high else (low + high) // 2
    vcenter = min(max(vcenter, 0), num_seconds - 1)
    length = int(_randint(min_video_len, max_video_len, 1, generator)[0])
    lo, hi = videoclip_video_window(num_seconds, vcenter, length, generator=generator)
    return ClipWindow(lo, hi, s, e)


# --------------------------------------------------------------------------------------------
# ClipBERT per-task defaults (the original's fine-tuning configs; docs/clipbert.md, "Model")


@dataclass(frozen=True)
class ClipBertTaskSampling:
    """Sparse-sampling defaults of one ClipBERT task.

    ``target_fps`` and ``frames_per_clip`` (T) fix the clip length (T / target_fps seconds);
    ``train_clips`` is N_train, ``test_clips`` N_test (the paper's numbers: 16 for MSR-VTT and
    DiDeMo, 20 for ActivityNet; TGIF-QA's repo default 1). ``compat_test_window`` is the window
    the original took when N_test = 1: ``"start"`` (video QA, the window at the start of the
    video) or ``"middle"`` (retrieval and multiple choice: clip 1 of 3, starting at delta/3).
    """

    target_fps: float
    frames_per_clip: int
    train_clips: int
    test_clips: int
    compat_test_window: Literal["start", "middle"]


CLIPBERT_TASK_SAMPLING: dict[str, ClipBertTaskSampling] = {
    "msrvtt_ret": ClipBertTaskSampling(2.0, 2, 8, 16, "middle"),
    "didemo_ret": ClipBertTaskSampling(2.0, 2, 8, 16, "middle"),
    "anet_ret": ClipBertTaskSampling(1.0, 2, 4, 20, "middle"),
    "msrvtt_mc": ClipBertTaskSampling(2.0, 2, 8, 16, "middle"),
    "msrvtt_qa": ClipBertTaskSampling(2.0, 2, 8, 16, "start"),
    "tgif_frameqa": ClipBertTaskSampling(1.0, 1, 1, 1, "start"),
    "tgif_action": ClipBertTaskSampling(1.0, 1, 1, 1, "start"),
    "tgif_transition": ClipBertTaskSampling(1.0, 1, 1, 1, "start"),
}


def clipbert_task_sampling(task: str | ClipBertTaskSampling, **overrides: float | int | str | None) -> ClipBertTaskSampling:
    """The defaults of ``task`` (a key of :data:`CLIPBERT_TASK_SAMPLING`) with the non-None
    ``overrides`` (``target_fps``, ``frames_per_clip``, ``train_clips``, ``test_clips``) applied."""
    if isinstance(task, str):
        if task not in CLIPBERT_TASK_SAMPLING:
            raise ValueError(f"unknown ClipBERT task {task!r}; known: {', '.join(CLIPBERT_TASK_SAMPLING)}")
        task = CLIPBERT_TASK_SAMPLING[task]
    values = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(values) - set(ClipBertTaskSampling.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown ClipBERT sampling options: {', '.join(sorted(unknown))}")
    return ClipBertTaskSampling(**{**task.__dict__, **values})


def clipbert_task_indices(
    task: str | ClipBertTaskSampling,
    num_frames: int,
    fps: float,
    *,
    train: bool,
    num_clips: int | None = None,
    generator: Generator = None,
    compat: bool = False,
) -> np.ndarray:
    """``(N, T)`` source frame indices for one video of a ClipBERT task.

    Training: N_train independent random windows. Test: N_test evenly spaced windows covering
    the whole video (N_test = 1: the centre window). ``compat=True`` reproduces the original
    ClipBERT: frames at both window ends; a single test clip at the *start* of
    the video for video QA and at delta/3 for retrieval / multiple choice; several test clips
    starting at delta*k/N (the end of the video is never reached). ``num_clips`` overrides
    N_train / N_test.
    """
    s = clipbert_task_sampling(task)
    n = num_clips if num_clips is not None else (s.train_clips if train else s.test_clips)
    common = {"num_clips": n, "frames_per_clip": s.frames_per_clip, "target_fps": s.target_fps,
              "generator": generator, "compat": compat}
    if train:
        return clipbert_clip_indices(num_frames, fps, mode="random", **common)
    if compat and n == 1:
        clip_idx, of = (0, 1) if s.compat_test_window == "start" else (1, 3)
        return clipbert_clip_indices(num_frames, fps, mode="uniform", compat_clip_idx=clip_idx,
                                     compat_num_clips=of, **common)
    return clipbert_clip_indices(num_frames, fps, mode="uniform", **common)


def window_spans(rows: int, size: int, stride: int) -> list[tuple[int, int]]:
    """Row ranges ``[a, b)`` of windows of ``size`` rows every ``stride`` rows covering ``rows``.

    The last window ends at ``rows`` (it starts later when the stride does not fit), so the end
    of the video is always covered; a video shorter than one window is one window.
    """
    if rows <= 0:
        return []
    if size < 1 or stride < 1:
        raise ValueError(f"window size and stride must be >= 1, got {size} and {stride}")
    if rows <= size:
        return [(0, rows)]
    spans = [(a, a + size) for a in range(0, rows - size + 1, stride)]
    if spans[-1][1] < rows:
        spans.append((rows - size, rows))
    return spans


# --------------------------------------------------------------------------------------------
# frame-rate conversion


def resample_frame_indices(num_frames: int, source_fps: float, target_fps: float, *,
                           rounding: str = "near") -> np.ndarray:
    """Source frame index of every frame of the video resampled to ``target_fps``, as ffmpeg's
    ``fps`` filter picks them. Slower sources repeat frames, faster ones drop them.

    * ``rounding="near"`` (ffmpeg's default, what MMPT's ``ffmpeg -vf fps=30`` extractor ran):
      source frame ``i`` lands on output slot ``round(i * target / source)`` and slot ``k``
      shows the latest frame that landed on a slot ``<= k``; ``round(n * target / source)``
      frames (at least one);
    * ``rounding="down"`` (VIMPAC's tokenizer): slot ``k`` shows the frame on screen at time
      ``k / target``; ``floor(n * target / source)`` frames (at least one).
    """
    if num_frames <= 0:
        return np.zeros(0, dtype=np.int64)
    if source_fps <= 0 or target_fps <= 0:
        raise ValueError(f"frame rates must be positive, got {source_fps} -> {target_fps}")
    if rounding == "near":
        k = np.arange(max(1, round(num_frames * target_fps / source_fps)), dtype=np.float64)
        idx = np.ceil((2.0 * k + 1.0) * source_fps / (2.0 * target_fps)).astype(np.int64) - 1
    elif rounding == "down":
        k = np.arange(max(1, int(num_frames / source_fps * target_fps + 1e-6)))
        idx = np.floor(k * source_fps / target_fps + 1e-6).astype(np.int64)
    else:
        raise ValueError(f"rounding must be 'near' or 'down', got {rounding!r}")
    return np.clip(idx, 0, num_frames - 1)
