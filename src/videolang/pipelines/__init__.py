"""Inference pipelines: what :func:`videolang.load` returns, one per model family.

``videolang.load(folder, device=...)`` reads the folder's ``pipeline.json`` (written by a run's
export or ``videolang convert``) and returns the family's pipeline. Videos are paths, bytes,
:class:`Frames` or :class:`Features`; decoding streams at the model's rate and size. The
methods of each family: docs/inference.md.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import torch

from videolang.errors import ConfigError
from videolang.pipelines.base import Pipeline
from videolang.pipelines.folder import PIPELINE_FILE, read_pipeline_json, validate_spec
from videolang.pipelines.inputs import Features, Frames

__all__ = ["FAMILIES", "Features", "Frames", "Pipeline", "load", "pipeline_class"]

# family -> "module:class"
FAMILIES = {
    "videoclip": "videolang.pipelines.videoclip:VideoCLIPPipeline",
    "vlm": "videolang.pipelines.vlm:VLMPipeline",
    "clipbert": "videolang.pipelines.clipbert:ClipBERTPipeline",
    "vimpac": "videolang.pipelines.vimpac:VIMPACPipeline",
    "anticipation": "videolang.pipelines.anticipation:AnticipationPipeline",
    "vidlankd": "videolang.pipelines.vidlankd:VidLanKDPipeline",
}


def pipeline_class(family: str) -> type[Pipeline]:
    """The pipeline class of ``family`` (a key of :data:`FAMILIES`)."""
    if family not in FAMILIES:
        raise ConfigError(f"unknown pipeline family {family!r}; known: {', '.join(FAMILIES)}")
    module, _, name = FAMILIES[family].partition(":")
    return getattr(importlib.import_module(module), name)


def load(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> Pipeline:
    """Open a model folder for inference on ``device`` (see the module docstring)."""
    folder = Path(path)
    raw = read_pipeline_json(folder)
    cls = pipeline_class(str(raw["family"]))
    spec = validate_spec(cls.spec_class, raw, str(folder / PIPELINE_FILE))
    return cls.from_folder(folder, spec, device=device)
