"""What the VLM recipes share: the ``model`` section's common keys, building the run's VLM
(from a registered config, a saved folder or an original MMPT checkpoint) and exporting it as a
model folder that records how the run evaluated (:func:`videolang.load`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
from torch import nn

from videolang.data.stores import FeatureStore, feature_rows_per_second
from videolang.data.vlm import feature_statistics
from videolang.engine import RunConfig
from videolang.engine.export import export_provenance
from videolang.errors import ConfigError
from videolang.models import create_model, load_pretrained
from videolang.models.convert.vlm import convert_mmpt_vlm_state_dict
from videolang.models.vlm import VLM
from videolang.models.weights import load_strict, read_checkpoint
from videolang.recipes.videoclip import MMPTModelConfig, VideoCLIPModule


@dataclass
class VLMModelConfig(MMPTModelConfig):
    """``model.*`` shared by the VLM recipes."""

    name: str = "vlm-minilm"  # a registered model (videolang.list_models())
    # A fresh model (no model.init) standardizes input features per dimension with the mean
    # and std of the feature store's rows (unlabelled statistics, stored in the model).
    standardize_features: bool = False


def _tokenizer_overrides(name: str, tokenizer: Any | None) -> dict[str, Any]:
    """A registered config without pretrained text weights takes the data's tokenizer (its
    vocabulary size and special ids); one with pretrained weights must already agree."""
    if tokenizer is None:
        return {}
    from videolang.models.registry import get_model_config

    cfg = get_model_config(name)
    ids = {"cls_token_id": tokenizer.cls_token_id, "sep_token_id": tokenizer.sep_token_id,
           "pad_token_id": tokenizer.pad_token_id, "mask_token_id": tokenizer.mask_token_id}
    if not cfg.get("text_pretrained"):
        return {**ids, "bert.vocab_size": len(tokenizer), "bert.pad_token_id": tokenizer.pad_token_id}
    if cfg["bert"]["vocab_size"] != len(tokenizer) or any(cfg[k] != v for k, v in ids.items()):
        raise ConfigError(f"model.name {name!r} starts from pretrained text weights with a "
                          f"{cfg['bert']['vocab_size']}-token vocabulary; data.tokenizer has {len(tokenizer)} "
                          f"tokens or other special ids: use the matching tokenizer (e.g. minilm)")
    return {}


def build_vlm(m: VLMModelConfig, feature_dim: int, *, num_classes: int = 0, tokenizer: Any | None = None,
              features: str | None = None, zero_head: bool = False) -> VLM:
    """The run's VLM: from a saved folder / original checkpoint or a registered config; a
    ``num_classes`` head is added (freshly initialised, with zeros when ``zero_head``) when the
    source has none. A registered config without pretrained text weights is sized to
    ``tokenizer``."""
    model, fresh_head = _build_vlm(m, feature_dim, num_classes, tokenizer, features)
    if zero_head and fresh_head:
        nn.init.zeros_(model.classifier[-1].weight)
        nn.init.zeros_(model.classifier[-1].bias)
    return model


def _build_vlm(m: VLMModelConfig, feature_dim: int, num_classes: int, tokenizer: Any | None,
               features: str | None) -> tuple[VLM, bool]:
    """The model and whether its ``num_classes`` head is new (not loaded from ``model.init``)."""
    if m.init and m.init_format == "videolang":
        source = load_pretrained(m.init)
        if not isinstance(source, VLM):
            raise ConfigError(f"model.init {m.init}: not a VLM model folder ({type(source).__name__})")
        if source.config.feature_dim != feature_dim:
            raise ConfigError(f"model.init {m.init}: expects {source.config.feature_dim}-d features, "
                              f"the feature store has {feature_dim}")
        if source.config.num_classes == num_classes:
            return source.train(), False
        cfg = source.config
        cfg.num_classes = num_classes
        model = VLM(cfg)
        load_strict(model, source.state_dict(), source=f"model.init {m.init}", fresh=("classifier.",))
        return model, num_classes > 0
    overrides: dict[str, Any] = {"feature_dim": feature_dim, **_tokenizer_overrides(m.name, tokenizer)}
    if num_classes:
        overrides["num_classes"] = num_classes
    if m.init:  # an original MMPT checkpoint: its weights replace any pretrained init
        overrides["text_pretrained"] = None
    if m.standardize_features:
        overrides["standardize_features"] = True
    model = create_model(m.name, **overrides)
    if not isinstance(model, VLM):
        raise ConfigError(f"model.name {m.name!r} is not a VLM architecture")
    if m.init:
        state = read_checkpoint(m.init)
        head = {k: v for k, v in model.state_dict().items() if k.startswith("classifier.")}
        if head:  # the pretrained checkpoint has no classifier: keep our fresh one
            state = dict(state.get("model", state))
            state.update({f"mmmodel.mm_encoder.{k}": v for k, v in head.items()})
        convert_mmpt_vlm_state_dict(state, model, source=m.init)
    if m.standardize_features:
        if not features:
            raise ConfigError("model.standardize_features needs the feature store (data.features)")
        model.set_feature_statistics(*feature_statistics(features))
    return model, num_classes > 0


def input_feature_dim(m: VLMModelConfig, features: str) -> int:
    """``model.feature_dim``, else the feature store's."""
    return m.feature_dim or FeatureStore(features).dim


def data_tokenizer(cfg: RunConfig) -> Any:
    """The tokenizer of ``data.tokenizer``."""
    from videolang.data.text import load_tokenizer

    return load_tokenizer(cfg.data.tokenizer)


def export_vlm_folder(module: L.LightningModule, out_dir, task: str, *, window: int, tokenizer: Any = None,
                      similarity: Any = None, **sections: Any) -> Path:
    """Write ``module.model`` as a VLM model folder for ``task``: the tokenizer (when the task
    has text), the feature store's backbone, the feature rate, the evaluation's ``window`` rows
    and the task's settings (:class:`videolang.pipelines.vlm.VLMSpec`)."""
    from videolang.pipelines.features import backbone_from_store
    from videolang.pipelines.folder import (
        SimilaritySpec,
        TextSpec,
        VideoFeaturesSpec,
        write_model_folder,
    )
    from videolang.pipelines.vlm import VLMSpec

    cfg = module.cfg
    d = cfg.data
    backbone, backbone_spec = backbone_from_store(d.features)
    rate = feature_rows_per_second(d.features, d.feature_rate)
    spec = VLMSpec(
        task=task,
        text=TextSpec(max_len=d.max_text_len, layout="mmpt") if tokenizer is not None else None,
        video=VideoFeaturesSpec(backbone=backbone_spec, feature_rate=rate, max_len=window),
        similarity=similarity or SimilaritySpec(),
        provenance=export_provenance(cfg),
        **sections,
    )
    return write_model_folder(out_dir, module.model, spec, tokenizer=tokenizer, backbone=backbone)


def retrieval_export(module: VideoCLIPModule, out_dir, task: str = "retrieval", **sections: Any) -> Path:
    """The retrieval evaluation's settings: cosine when ``model.normalize``, the loss's
    temperature (pretraining has neither: dot product, 1)."""
    from videolang.pipelines.folder import SimilaritySpec

    m = module.cfg.model
    temperature = module.temperature() if hasattr(m, "temperature") else 1.0
    similarity = SimilaritySpec(metric="cosine" if getattr(m, "normalize", False) else "dot", temperature=temperature)
    return export_vlm_folder(module, out_dir, task, window=module.cfg.data.max_video_len,
                             tokenizer=data_tokenizer(module.cfg), similarity=similarity, **sections)
