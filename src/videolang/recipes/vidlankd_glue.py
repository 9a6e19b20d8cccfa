"""``vidlankd.glue``: GLUE fine-tuning of any BERT (a VidLanKD student or teacher export, a
classifier export, a local Hugging Face BERT folder or "minilm"); registered by
:mod:`videolang.recipes.vidlankd`. Details: docs/vidlankd.md ("GLUE").
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from videolang.data.glue import get_task
from videolang.data.text import load_tokenizer
from videolang.data.vidlankd import GlueDataConfig
from videolang.engine import RecipeModule, RunConfig
from videolang.engine.evaluation import EvaluationBuffer, batch_indices, log_metrics
from videolang.engine.export import export_provenance
from videolang.errors import ConfigError
from videolang.metrics.glue import glue_metrics
from videolang.models import load_pretrained
from videolang.models.bert import BertEncoder
from videolang.models.vidlankd import VidLanKDClassifier, VidLanKDStudent, VidLanKDTeacher

__all__ = ["GlueModelConfig", "GlueModule", "load_glue_encoder", "load_glue_encoder_tokenizer"]


def _folder_tokenizer(folder: Path) -> str | None:
    """The tokenizer saved inside a model folder (``write_model_folder``), if any."""
    from videolang.pipelines.folder import PIPELINE_FILE, TOKENIZER_DIR

    saved = folder / TOKENIZER_DIR
    return str(saved) if (folder / PIPELINE_FILE).is_file() and saved.is_dir() else None


@dataclass
class GlueModelConfig:
    """``model.*`` of ``vidlankd.glue``."""

    init: str = "minilm"  # a student / teacher / classifier export, a local HF BERT folder, or "minilm"
    classifier_dropout: float | None = None


def load_glue_encoder(init: str) -> tuple[BertEncoder, str]:
    """The BERT to fine-tune and its tokenizer name."""
    p = Path(init)
    is_folder = (p / "config.json").is_file() and (p / "model.safetensors").is_file()
    if is_folder and "architecture" in json.loads((p / "config.json").read_text()):  # a videolang model
        model = load_pretrained(p)
        if isinstance(model, VidLanKDClassifier | VidLanKDStudent | VidLanKDTeacher):
            return model.bert, _folder_tokenizer(p) or model.config.tokenizer
        raise ConfigError(f"model.init {init}: a {type(model).__name__} has no BERT to fine-tune")
    from videolang.models.videoclip import resolve_pretrained_dir

    path = resolve_pretrained_dir(init)
    return BertEncoder.from_pretrained(path), str(path) if init != "minilm" else "minilm"


def load_glue_encoder_tokenizer(init: str) -> str:
    """The tokenizer of ``init``: the one saved in its folder, else its config's, else ``init``."""
    p = Path(init)
    if saved := _folder_tokenizer(p):  # a complete model folder carries its tokenizer
        return saved
    if (p / "config.json").is_file():
        cfg = json.loads((p / "config.json").read_text())
        if "tokenizer" in cfg:
            return cfg["tokenizer"]
    return "minilm" if init == "minilm" else init


class GlueModule(RecipeModule):
    def __init__(self, cfg: RunConfig):
        super().__init__(cfg)
        task = get_task(cfg.data.task)
        self.task = task
        encoder, tokenizer = load_glue_encoder(cfg.model.init)
        problem = "regression" if task.is_regression else "classification"
        self.model = VidLanKDClassifier.from_encoder(encoder, task.num_labels, problem=problem,
                                                     tokenizer=cfg.data.tokenizer or tokenizer)
        if cfg.model.classifier_dropout is not None:
            self.model.dropout.p = cfg.model.classifier_dropout
            self.model.config.classifier_dropout = cfg.model.classifier_dropout
        # what the examples are tokenised with: data.tokenizer, else the one of model.init
        self.tokenizer_name = cfg.data.tokenizer or load_glue_encoder_tokenizer(cfg.model.init)
        self._eval = EvaluationBuffer()

    def setup(self, stage: str) -> None:
        self.trainer.datamodule.splits.tokenizer_name = self.tokenizer_name

    def export_pretrained(self, out_dir) -> Path:
        """A model folder: weights, the tokenizer the run used, how it tokenised (``max_length``
        tokens, pair layout) and the task's label names, so ``classify`` answers as evaluated."""
        from videolang.pipelines.folder import TextSpec, write_model_folder
        from videolang.pipelines.vidlankd import GlueSpec, VidLanKDSpec

        d: GlueDataConfig = self.cfg.data
        task = self.task
        glue = GlueSpec(task=task.name, labels=None if task.labels is None else list(task.labels),
                        pair=task.text_b is not None, max_length=d.max_seq_length, metrics=list(task.metrics))
        spec = VidLanKDSpec(task="classification", text=TextSpec(max_len=max(1, d.max_seq_length - 2)), glue=glue,
                            provenance=export_provenance(self.cfg))
        return write_model_folder(out_dir, self.model, spec, tokenizer=load_tokenizer(self.tokenizer_name))

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        if self.task.is_regression:
            return F.mse_loss(logits, labels, reduction=reduction)
        return F.cross_entropy(logits, labels, reduction=reduction)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        logits = self.model(batch["ids"], batch["mask"], batch["types"])
        loss = self._loss(logits, batch["label"])
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["ids"].shape[0])
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        logits = self.model(batch["ids"], batch["mask"], batch["types"])
        self._eval.add(batch_indices(self.trainer, "val", batch_idx),
                       pred=logits if self.task.is_regression else logits.argmax(-1), label=batch["label"],
                       loss=self._loss(logits, batch["label"], reduction="none"))

    def on_validation_epoch_end(self) -> None:
        outputs, self._eval = self._eval.gather(), EvaluationBuffer()
        if not outputs:
            return
        scores = glue_metrics(self.task.metrics, outputs["pred"].numpy(), outputs["label"].numpy())
        log_metrics(self, {"val/loss": float(outputs["loss"].mean()), **{f"val/{k}": v for k, v in scores.items()}})
        if "score" not in scores:
            log_metrics(self, {"val/score": next(iter(scores.values()))})
