"""What every pipeline shares: the model folder it came from, the device, input lists, text.

A pipeline is what :func:`videolang.load` returns: a trained model with everything around it
that inference needs (tokenizer, feature backbone, preprocessing, similarity, labels), read
from a self-contained model folder (:mod:`videolang.pipelines.folder`). Its methods take
batches (lists) and single items alike, and give the same answer for an item whatever else is
in the batch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch

from videolang.pipelines.folder import PipelineSpec, TextSpec
from videolang.pipelines.inputs import Features, Frames, VideoInput

__all__ = ["Pipeline", "Prediction", "as_text_list", "as_video_list", "tokenize_sentences", "top_k_predictions"]


class Prediction(NamedTuple):
    """One ranked answer of a classifier: its ``label`` and ``score`` (a probability)."""

    label: str
    score: float


def top_k_predictions(probs: torch.Tensor, labels: Sequence[str], k: int) -> list[list[Prediction]]:
    """The ``k`` best labels of every row of ``probs`` ``(N, C)``, best first (ties: lower index)."""
    k = max(1, min(int(k), probs.shape[1]))
    values, indices = probs.float().topk(k, dim=1)
    return [[Prediction(labels[j], float(v)) for v, j in zip(vs.tolist(), js.tolist(), strict=True)]
            for vs, js in zip(values, indices, strict=True)]


class Pipeline:
    """Base class: ``model`` in eval mode on ``device``, its ``spec``, its ``tokenizer`` (text
    models) and the model ``folder`` it came from."""

    family: ClassVar[str] = ""
    spec_class: ClassVar[type[PipelineSpec]] = PipelineSpec

    def __init__(self, model: torch.nn.Module, spec: PipelineSpec, tokenizer: Any = None, *,
                 folder: str | os.PathLike | None = None, device: str | torch.device = "cpu"):
        self.model = model.eval()
        self.spec = spec
        self.tokenizer = tokenizer
        self.folder = Path(folder) if folder is not None else None
        self.device = torch.device("cpu")
        self.to(device)

    @classmethod
    def from_folder(cls, folder: Path, spec: Any, *, device: str | torch.device = "cpu") -> Pipeline:
        """Build the pipeline from a model folder whose ``pipeline.json`` gave ``spec``."""
        raise NotImplementedError

    def modules(self) -> dict[str, torch.nn.Module]:
        """The networks this pipeline runs (moved together by :meth:`to`)."""
        return {"model": self.model}

    def to(self, device: str | torch.device) -> Pipeline:
        """Move every network of the pipeline to ``device``; returns ``self``."""
        self.device = torch.device(device)
        for module in self.modules().values():
            module.to(self.device)
        return self

    @torch.inference_mode()
    def embed_sentences(self, texts: str | Sequence[str], embed: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                        dim: int, batch_size: int) -> torch.Tensor:
        """``embed(ids, mask)`` over batches of ``texts`` laid out as in training (on the device),
        as one ``(N, dim)`` CPU tensor."""
        texts = as_text_list(texts)
        out = []
        for s in range(0, len(texts), batch_size):
            ids, mask = tokenize_sentences(self.tokenizer, self.spec.text, texts[s : s + batch_size])
            out.append(embed(ids.to(self.device), mask.to(self.device)).float().cpu())
        return torch.cat(out) if out else torch.zeros(0, dim)

    def __repr__(self) -> str:
        where = f" from {self.folder}" if self.folder else ""
        return f"{type(self).__name__}(task={self.spec.task!r}{where}, device={self.device})"


def as_video_list(videos: VideoInput | Sequence[VideoInput]) -> list[VideoInput]:
    """One video or a sequence of videos, as a list."""
    single = (str, os.PathLike, bytes, bytearray, memoryview, Frames, Features, np.ndarray, torch.Tensor)
    if isinstance(videos, single):
        return [videos]
    return list(videos)


def as_text_list(texts: str | Sequence[str], what: str = "texts") -> list[str]:
    """One sentence or a sequence of sentences, as a list of strings (checked)."""
    items = [texts] if isinstance(texts, str) else list(texts)
    for i, t in enumerate(items):
        if not isinstance(t, str):
            raise TypeError(f"{what}[{i}] is {type(t).__name__}, not a string")
    return items


def text_layout(tokenizer: Any, spec: TextSpec):
    """The data layer's :class:`~videolang.data.videoclip.TextLayout` for a tokenizer and spec."""
    from videolang.data.videoclip import TextLayout

    return TextLayout(tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id, spec.max_len,
                      sep_after_cls=spec.layout == "mmpt")


def tokenize_sentences(tokenizer: Any, spec: TextSpec, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and mask ``(N, max_len + 2)`` laid out exactly as the training data were."""
    layout = text_layout(tokenizer, spec)
    words = tokenizer(list(texts), add_special_tokens=False)["input_ids"] if texts else []
    rows = [layout.build(w) for w in words]
    if not rows:
        width = spec.max_len + 2
        return torch.zeros((0, width), dtype=torch.long), torch.zeros((0, width), dtype=torch.bool)
    return torch.stack([r[0] for r in rows]), torch.stack([r[1] for r in rows])
