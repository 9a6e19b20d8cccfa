"""The second stage of a search: re-score the first stage's best moments with a stronger model.

:class:`Reranker` orders the candidates with a ClipBERT folder (its text-video matching score on
the moment's frames, :func:`moment_frames`) or a VLM folder (its multiple-choice scorer or
retrieval similarity on the moment's feature rows, computed once per video);
``videolang search --rerank DIR``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch

from videolang.errors import ConfigError
from videolang.pipelines.inputs import Features, Frames

__all__ = ["Reranker", "moment_frames"]

# ClipBERT samples a few frames per clip: decode the moment at most this often per second.
_MAX_FPS = 8.0


def moment_frames(path: str | os.PathLike, start: float, end: float, fps: float, *,
                  max_frames: int = 256) -> Frames:
    """Frames of ``[start, end]`` seconds of a video at ``fps`` (at most ``max_frames``)."""
    from videolang.data.video import VideoReader

    with VideoReader(path) as reader:
        meta = reader.metadata
        end = min(end, meta.duration)
        count = max(1, min(max_frames, math.ceil((end - start) * fps)))
        times = [min(start + i / fps, max(end - 1e-6, start)) for i in range(count)]
        frames = reader.read([meta.index_at(t) for t in times])
    return Frames(frames, fps)


class Reranker:
    """A ClipBERT or VLM model folder that scores (query, moment) pairs."""

    def __init__(self, folder: str | os.PathLike, *, device: str | torch.device = "cpu"):
        from videolang.pipelines import load

        self.folder = Path(folder)
        self.pipe = load(self.folder, device=device)
        spec = self.pipe.spec
        if (spec.family, spec.task) not in {("clipbert", "retrieval"), ("clipbert", "pretrain"),
                                            ("vlm", "mcqa"), ("vlm", "retrieval")}:
            raise ConfigError(f"--rerank {folder}: a {spec.family} {spec.task} model cannot score text against a "
                              "moment; give a ClipBERT retrieval or VLM retrieval / multiple-choice folder")

    def score(self, query: str, moments: list[tuple[Path, float, float]]) -> list[float]:
        """The re-ranker's score of ``query`` against each ``(video file, start, end)``."""
        if self.pipe.spec.family == "clipbert":
            fps = min(_MAX_FPS, 2 * self.pipe.spec.sampling.target_fps)
            inputs = [moment_frames(p, a, b, fps) for p, a, b in moments]
            return self.pipe.score(inputs, [query])[:, 0].tolist()
        rows: dict[Path, torch.Tensor] = {}  # feature rows once per video
        rate = self.pipe.spec.video.feature_rate
        inputs = []
        for path, a, b in moments:
            if path not in rows:
                rows[path] = self.pipe.video_features(str(path))
            lo = min(int(a * rate), len(rows[path]) - 1)
            inputs.append(Features(rows[path][lo : max(lo + 1, math.ceil(b * rate))]))
        if self.pipe.spec.task == "mcqa":
            return [float(a.scores[0]) for a in self.pipe.answer(inputs, [[query]] * len(inputs), pooling="first")]
        return self.pipe.score(inputs, [query])[:, 0].tolist()

    def describe(self) -> dict[str, Any]:
        return {"folder": str(self.folder), "family": self.pipe.spec.family, "task": self.pipe.spec.task}
