"""Model folders: everything inference needs, in one self-contained folder.

``config.json`` + ``model.safetensors`` + ``pipeline.json`` (+ ``tokenizer/``,
``backbone.safetensors``); the layout is in docs/inference.md. ``pipeline.json`` is validated by
the family's :class:`PipelineSpec` (pydantic), so an error names the file and the key. Nothing
points back into a run, so a folder can be copied to another machine.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from videolang.errors import ConfigError
from videolang.utils.io import atomic_output, sha256_file

__all__ = [
    "PIPELINE_FILE",
    "BackboneSpec",
    "PipelineSpec",
    "SimilaritySpec",
    "TextSpec",
    "VideoFeaturesSpec",
    "read_pipeline_json",
    "write_model_folder",
]

PIPELINE_FILE = "pipeline.json"
TOKENIZER_DIR = "tokenizer"
BACKBONE_FILE = "backbone.safetensors"


class StrictModel(BaseModel):
    """Unknown keys are errors; values are checked against their types."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class TextSpec(StrictModel):
    """How sentences become token ids (the data layer's ``TextLayout``)."""

    tokenizer: str = TOKENIZER_DIR  # a folder inside the model folder
    max_len: int = Field(ge=1)  # word pieces between the special tokens
    # "cls_words_sep": [CLS] w.. [SEP]; "mmpt": [CLS] [SEP] w.. [SEP] (MMPT's text layout)
    layout: Literal["cls_words_sep", "mmpt"] = "cls_words_sep"


class BackboneSpec(StrictModel):
    """The frozen network that turned decoded frames into feature rows during training."""

    name: str  # videolang.models.backbones registry name
    options: dict[str, Any] = Field(default_factory=dict)  # create_backbone(name, **options)
    weights: str | None = None  # a file in the folder, an absolute local path, or None (no weights)
    sha256: str | None = None
    feature_dim: int = Field(ge=1)
    l2_normalize: bool = False
    # Precision of the stored features the model trained on: features are rounded through it.
    dtype: Literal["float16", "float32"] = "float32"


class VideoFeaturesSpec(StrictModel):
    """Per-second (or ``feature_rate`` per second) feature rows fed to a video model."""

    backbone: BackboneSpec | None = None  # None: videos must be given as features
    feature_rate: float = Field(default=1.0, gt=0)  # rows per second of video
    max_len: int = Field(ge=1)  # rows in one window of the model


class SimilaritySpec(StrictModel):
    """The similarity the model was trained and evaluated with."""

    metric: Literal["cosine", "dot"] = "dot"
    temperature: float = Field(default=1.0, gt=0)  # logits = similarity / temperature


class PipelineSpec(StrictModel):
    """Common head of every ``pipeline.json``; each family adds its own sections."""

    format: Literal["videolang-pipeline"] = "videolang-pipeline"
    version: Literal[1] = 1
    family: str
    task: str
    # Informational only (never read to load): recipe, videolang version, converted file.
    provenance: dict[str, Any] = Field(default_factory=dict)


def _format_validation_error(exc: ValidationError, where: str) -> str:
    problems = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        problems.append(f"{key}: {err['msg']}")
    return f"{where}: " + "; ".join(problems)


def read_pipeline_json(folder: str | os.PathLike) -> dict[str, Any]:
    """The raw ``pipeline.json`` of a model folder, with clear errors when it is missing."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"{folder}: not a model folder (no such directory)")
    path = folder / PIPELINE_FILE
    if not path.is_file():
        raise ConfigError(f"{folder}: no {PIPELINE_FILE}; a model folder is written by a run's export "
                          "or by `videolang convert`")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read it ({exc})") from None
    if not isinstance(raw, dict) or "family" not in raw:
        raise ConfigError(f"{path}: no 'family' key; this folder was written by an older videolang: "
                          "export it again from its run (videolang fit ... or the checkpoint)")
    return raw


def validate_spec(spec_cls: type[PipelineSpec], raw: dict[str, Any], where: str) -> PipelineSpec:
    try:
        return spec_cls.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, where)) from None


def write_model_folder(
    out_dir: str | os.PathLike,
    model: Any,
    spec: PipelineSpec,
    *,
    tokenizer: Any = None,
    backbone: Any = None,
    extra: Callable[[Path], None] | None = None,
    overwrite: bool = True,
) -> Path:
    """Write a complete model folder atomically (see the module docstring).

    ``tokenizer`` (a Hugging Face tokenizer) is saved into ``tokenizer/``; ``backbone`` (a
    :class:`~videolang.models.backbones.VideoBackbone` with parameters) into
    ``backbone.safetensors``, and ``spec``'s backbone section then points to that file.
    ``extra(tmp_dir)`` may add files of its own.
    """
    from safetensors.torch import save_file

    from videolang.models.registry import write_model_files

    with atomic_output(out_dir, overwrite=overwrite, is_dir=True) as tmp:
        write_model_files(model, tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp / TOKENIZER_DIR))
        if backbone is not None and any(True for _ in backbone.parameters()):
            state = {k: v.detach().contiguous().cpu() for k, v in backbone.state_dict().items()}
            save_file(state, str(tmp / BACKBONE_FILE), metadata={"format": "pt"})
            spec = _with_backbone_file(spec, BACKBONE_FILE, sha256_file(tmp / BACKBONE_FILE))
        if extra is not None:
            extra(tmp)
        (tmp / PIPELINE_FILE).write_text(json.dumps(spec.model_dump(mode="json"), indent=2, sort_keys=True) + "\n")
    return Path(out_dir)


def _with_backbone_file(spec: PipelineSpec, name: str, sha256: str) -> PipelineSpec:
    """``spec`` with ``video.backbone.weights`` set to ``name`` (a file inside the folder)."""
    video = getattr(spec, "video", None)
    backbone = getattr(video, "backbone", None)
    if backbone is None:
        raise ConfigError("write_model_folder: a backbone was given but the spec has no video.backbone section")
    backbone = backbone.model_copy(update={"weights": name, "sha256": sha256})
    return spec.model_copy(update={"video": video.model_copy(update={"backbone": backbone})})


def resolve_in_folder(folder: Path, name: str, what: str) -> Path:
    """A file named by ``pipeline.json``: inside the folder, or an absolute local path."""
    path = Path(name)
    if not path.is_absolute():
        path = folder / path
        if ".." in Path(name).parts:
            raise ConfigError(f"{folder / PIPELINE_FILE}: {what} {name!r} must stay inside the folder")
    if not path.exists():
        raise ConfigError(f"{folder / PIPELINE_FILE}: {what} {name!r} not found ({path})")
    return path


def load_folder_tokenizer(folder: Path, text: TextSpec):
    from videolang.data.text import load_tokenizer

    return load_tokenizer(resolve_in_folder(folder, text.tokenizer, "tokenizer"))


def load_folder_backbone(folder: Path, spec: BackboneSpec):
    """Rebuild the feature backbone of a model folder (its weights checked by SHA-256)."""
    from videolang.models.backbones import create_backbone

    weights = None
    if spec.weights is not None:
        weights = resolve_in_folder(folder, spec.weights, "backbone weights")
        if spec.sha256 and sha256_file(weights) != spec.sha256:
            raise ConfigError(f"{weights}: SHA-256 differs from the one {folder / PIPELINE_FILE} records: "
                              "not the backbone this model was trained with")
    backbone = create_backbone(spec.name, weights=weights, **spec.options)
    if backbone.feature_dim != spec.feature_dim:
        raise ConfigError(f"{folder / PIPELINE_FILE}: backbone {spec.name} gives {backbone.feature_dim}-d "
                          f"features, the spec says {spec.feature_dim}")
    return backbone
