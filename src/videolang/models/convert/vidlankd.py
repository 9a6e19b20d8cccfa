"""VidLanKD: the original teacher (``pytorch_model.bin`` + ``visn_model.chkpt``) and student
checkpoints -> :class:`~videolang.models.vidlankd.VidLanKDTeacher` / ``VidLanKDStudent``.

Keys follow HF ``BertForMaskedLM`` plus renamed KD heads and video tower; tied decoders are
checked, not trusted (tests in tests/models/test_vidlankd.py against the original's golden outputs).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from videolang.errors import ConfigError
from videolang.models.bert import IGNORED_KEYS
from videolang.models.vidlankd import VidLanKDStudent, VidLanKDTeacher
from videolang.models.weights import load_strict

log = logging.getLogger(__name__)

__all__ = ["CONVERTER", "STUDENT_DROPPED", "TEACHER_DROPPED", "convert_student_state_dict",
           "convert_teacher_state_dict"]



def _unwrap(state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    for wrapper in ("model", "state_dict"):
        if isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    # DistributedDataParallel wrappers save "module."-prefixed keys (the teacher's visn_model).
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def _mlm_keys(state: dict[str, torch.Tensor], model: nn.Module, source: str) -> dict[str, torch.Tensor]:
    """Map HF ``BertForMaskedLM`` keys (``bert.*``, ``cls.predictions.*``) onto ours.

    HF keeps the decoder bias twice (``cls.predictions.bias`` and ``.decoder.bias``, one
    tensor) and the decoder weight tied to the word embeddings: both are checked, not trusted.
    """
    out = dict(state)
    dec_bias = out.pop("cls.predictions.decoder.bias", None)
    if dec_bias is not None:
        if "cls.predictions.bias" not in out:
            out["cls.predictions.bias"] = dec_bias
        elif not torch.equal(dec_bias, out["cls.predictions.bias"]):
            raise ConfigError(f"{source}: cls.predictions.decoder.bias differs from cls.predictions.bias")
    dec_w = out.get("cls.predictions.decoder.weight")
    if dec_w is not None and model.config.tie_word_embeddings:
        words = out.get("bert.embeddings.word_embeddings.weight")
        if words is None or not torch.equal(dec_w, words):
            raise ConfigError(f"{source}: the MLM decoder is not tied to the word embeddings; "
                              "build the model with tie_word_embeddings=false")
        del out["cls.predictions.decoder.weight"]
    return out


# Original keys we drop on purpose: BERT poolers and position-id buffers (unused / recomputed),
# the teacher's ``visual_hinge_head`` (only used by its never-called-in-training predict()),
# the video BERT's word table (never read: video tokens come as inputs_embeds).
TEACHER_DROPPED = (*IGNORED_KEYS, "visual_hinge_head.", "video.bert.embeddings.word_embeddings.weight")
# The student's ``kd2_teacher_head`` is built by the original but never used.
STUDENT_DROPPED = (*IGNORED_KEYS, "kd2_teacher_head.")

_VISN_RENAMES = (
    ("backbone.video_encoder.new_video_embeddings.", "feature_proj."),
    ("backbone.bert.pooler.dense.", "pooler."),
    ("backbone.bert.", "bert."),
    ("mlp_map.", "mlp_map."),
)
_KD_RENAMES = (
    ("kd1_student_head.dense.", "nst_head.proj.net.0."),
    ("kd1_student_head.layer_norm.", "nst_head.proj.net.2."),
    ("kd1_student_head.decoder.", "nst_head.proj.net.3."),
    ("kd2_student_head.dense.", "contrastive_head.proj.net.0."),
    ("kd2_student_head.layer_norm.", "contrastive_head.proj.net.2."),
    ("kd2_student_head.decoder.", "contrastive_head.proj.net.3."),
)


def _rename(key: str, table: tuple[tuple[str, str], ...], prefix: str = "") -> str:
    for old, new in table:
        if key.startswith(old):
            return prefix + new + key[len(old):]
    return prefix + key


def _drop(state: dict[str, torch.Tensor], dropped: tuple[str, ...]) -> dict[str, torch.Tensor]:
    def gone(k: str) -> bool:
        return any(k.startswith(d) if d.endswith(".") else (k == d or k.endswith("." + d)) for d in dropped)

    return {k: v for k, v in state.items() if not gone(k)}


def convert_teacher_state_dict(text_state: Mapping[str, Any], visn_state: Mapping[str, Any],
                               model: VidLanKDTeacher, *, source: str = "checkpoint") -> None:
    """Load the original teacher strictly: ``text_state`` is ``CoLwithBert``'s
    ``pytorch_model.bin``, ``visn_state`` the ``VisnModel`` ``visn_model.chkpt``.

    The original's video tower always adds the position and token-type embeddings twice, so the
    converted model computes that way too: ``double_video_embeddings`` is switched on (it has no
    weights of its own; ``config.json`` records it). Off, the video embeddings would differ from
    the original's by up to a few hundredths, with nothing to say so.
    """
    text = _mlm_keys(_unwrap(text_state), model, source)
    visn = {_rename(k, _VISN_RENAMES, "video."): v for k, v in _unwrap(visn_state).items()}
    state = _drop({**text, **visn}, TEACHER_DROPPED)
    load_strict(model, state, source=source)
    if not model.config.double_video_embeddings:
        log.info("%s: double_video_embeddings switched on, as the original teacher computes", source)
    model.config.double_video_embeddings = True
    model.video.double_embeddings = True


def convert_student_state_dict(state: Mapping[str, Any], model: VidLanKDStudent, *,
                               source: str = "checkpoint") -> None:
    """Load an original ``vlm`` student (``CoLwithBert`` with KD heads, or a plain
    ``BertForMaskedLM``) strictly. An NST-only checkpoint needs ``contrastive_head=false``, a
    plain MLM one both heads off; the error lists what is missing."""
    state = _mlm_keys(_unwrap(state), model, source)
    state = {_rename(k, _KD_RENAMES): v for k, v in _drop(state, STUDENT_DROPPED).items()}
    try:
        load_strict(model, state, source=source)
    except ConfigError as exc:
        raise ConfigError(f"{exc} (heads in the file: nst={any(k.startswith('nst_head.') for k in state)}, "
                          f"contrastive={any(k.startswith('contrastive_head.') for k in state)}; set "
                          "nst_head / contrastive_head to match)") from None


def _load_original(obj: Mapping[str, Any], model: nn.Module, *, source: str = "checkpoint") -> None:
    """``videolang convert vidlankd``: a student ``pytorch_model.bin``, or a dict with the
    teacher's ``teacher`` (text) and ``visn`` (video) state dicts for a teacher model."""
    if isinstance(model, VidLanKDTeacher):
        if not (isinstance(obj.get("teacher"), Mapping) and isinstance(obj.get("visn"), Mapping)):
            raise ConfigError(f"{source}: a teacher conversion needs a dict with 'teacher' (pytorch_model.bin) "
                              "and 'visn' (visn_model.chkpt) state dicts")
        convert_teacher_state_dict(obj["teacher"], obj["visn"], model, source=source)
    elif isinstance(model, VidLanKDStudent):
        convert_student_state_dict(obj["student"] if isinstance(obj.get("student"), Mapping) else obj, model,
                                   source=source)
    else:
        raise ConfigError(f"{source}: no original VidLanKD layout for {type(model).__name__}")


# `videolang convert vidlankd`: the folder's pipeline.json comes from videolang.pipelines.vidlankd.
CONVERTER = {"default_model": "vidlankd-student-base", "load_state": _load_original,
             "description": "VidLanKD student pytorch_model.bin (vlm/), or {'teacher', 'visn'} state dicts "
                            "(-m vidlankd-teacher-base / -small)"}
