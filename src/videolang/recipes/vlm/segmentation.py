"""``vlm.segmentation``: per-row action classes of the video tokens over sliding windows;
evaluation sums the logits of every window covering a row and reports frame accuracy beside
the majority-class rate."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from videolang.data.videoclip import all_skipped
from videolang.data.vlm import VLMSegmentationDataConfig, coin_label_names, read_coin
from videolang.engine import RunConfig, StagedEvalModule
from videolang.engine.evaluation import EvaluationBuffer, gather_stage, log_metrics
from videolang.recipes.vlm.model import (
    VLMModelConfig,
    build_vlm,
    export_vlm_folder,
    input_feature_dim,
)


@dataclass
class VLMSegmentationModelConfig(VLMModelConfig):
    num_classes: int | None = None  # None: 1 + the largest step id of the annotations


class VLMSegmentation(StagedEvalModule):
    """``vlm.segmentation``: per-row classification of the video tokens."""

    def __init__(self, cfg: RunConfig):
        super().__init__(cfg)
        d: VLMSegmentationDataConfig = cfg.data
        num_classes = cfg.model.num_classes or read_coin(d.annotations, d.train_subset)[1]
        self.model = build_vlm(cfg.model, input_feature_dim(cfg.model, d.features), num_classes=num_classes,
                               features=d.features)
        self._eval: dict[str, EvaluationBuffer] = {}

    def export_pretrained(self, out_dir) -> Path:
        """A model folder segmenting as the evaluation: windows, stride, class names."""
        from videolang.pipelines.vlm import SegmentationSpec

        d: VLMSegmentationDataConfig = self.cfg.data
        labels = coin_label_names(d.annotations, self.model.config.num_classes)
        return export_vlm_folder(self, out_dir, "segmentation", window=d.window,
                                 segmentation=SegmentationSpec(stride=d.eval_stride, labels=labels))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor | None:
        if all_skipped(batch):
            return None  # every item was unreadable (the DataGuard counted them)
        logits = self.model.segment_logits(batch["vfeats"], batch["vmask"])
        loss = F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=-100)
        self.log("train/loss", loss, prog_bar=True, batch_size=logits.shape[0])
        return loss

    def _eval_step(self, stage: str, batch: dict[str, torch.Tensor]) -> None:
        if all_skipped(batch):
            return
        logits = self.model.segment_logits(batch["vfeats"], batch["vmask"]).float()
        window_key = batch["video"] * 1_000_000 + batch["offset"]  # one window per (video, offset)
        self._eval.setdefault(stage, EvaluationBuffer()).add(
            window_key, video=batch["video"], offset=batch["offset"], logits=logits, labels=batch["labels"])

    def _eval_end(self, stage: str) -> None:
        outputs = gather_stage(self._eval, stage)
        if not outputs:
            return
        pred, row_label = row_predictions(outputs["video"], outputs["offset"], outputs["logits"], outputs["labels"])
        accuracy = 100.0 * float((pred == row_label).float().mean())
        splits = self.trainer.datamodule.splits
        majority = splits.majority_label()
        majority_rate = 100.0 * float((row_label == majority).float().mean())
        foreground = row_label != 0
        protocol = splits.protocol(stage)
        metrics = {f"{stage}/{protocol}/frame_accuracy": accuracy, f"{stage}/{protocol}/majority_rate": majority_rate}
        if bool(foreground.any()):
            fg = 100.0 * float((pred[foreground] == row_label[foreground]).float().mean())
            metrics[f"{stage}/{protocol}/foreground_accuracy"] = fg
        log_metrics(self, {**metrics, f"{stage}/frame_accuracy": accuracy, f"{stage}/majority_rate": majority_rate})


def row_predictions(video: torch.Tensor, offset: torch.Tensor, logits: torch.Tensor,
                    labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row predicted and true class of windows ``logits`` ``(N, window, C)`` starting at row
    ``offset`` of ``video``: the logits of every window covering a row are summed (rows labelled
    -100, padding, are left out)."""
    window = logits.shape[1]
    rows = (video[:, None] * 1_000_000 + offset[:, None] + torch.arange(window)).flatten()
    valid = labels.flatten() != -100
    rows, flat_logits, flat_labels = rows[valid], logits.flatten(0, 1)[valid], labels.flatten()[valid]
    unique, inverse = torch.unique(rows, return_inverse=True)
    summed = torch.zeros(len(unique), logits.shape[-1]).index_add_(0, inverse, flat_logits)
    row_label = torch.zeros(len(unique), dtype=torch.long).scatter_(0, inverse, flat_labels)
    return summed.argmax(-1), row_label
