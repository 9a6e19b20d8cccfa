"""``vlm.mcqa``: multiple-choice QA. Training on retrieval pairs (the original) or, with
``data.train_mc``, cross-entropy over each item's options; evaluation picks the best-scoring
option of each item, with a text-only control (the options against another item's video).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from videolang.data.videoclip import all_skipped
from videolang.engine.evaluation import EvaluationBuffer, gather_stage, log_metrics
from videolang.errors import ConfigError
from videolang.recipes.vlm.model import build_vlm, data_tokenizer, retrieval_export
from videolang.recipes.vlm.pretrain import VLMRetrieval, VLMRetrievalModelConfig


@dataclass
class VLMMultipleChoiceModelConfig(VLMRetrievalModelConfig):
    # isolated: the original; each option's pooled text half against the pooled video half (any
    # retrieval model scores options). joint: one full-attention pass over [CLS] video [SEP]
    # option per option, scored by a linear head on [CLS] (trained on data.train_mc items).
    # hybrid: the isolated score plus a zero-initialized linear head on the mean text state of
    # the full-attention pass, so training starts from the isolated scorer and the head learns
    # what pooled halves cannot see (the order of events).
    scoring: Literal["isolated", "joint", "hybrid"] = "isolated"
    # isolated / hybrid: S > 0 compares the halves also run by run (the first S-th of the video
    # with the first S-th of the option's words, ...; VLM.encode_video(segments=S)), so options
    # that only swap the order of two events score differently. Needs normalize: true.
    temporal_segments: int = 0


class VLMMultipleChoice(VLMRetrieval):
    """``vlm.mcqa``: retrieval training (or cross-entropy over the options of training items,
    with ``data.train_mc``), multiple-choice evaluation. ``model.scoring: joint`` scores each
    (video, option) pair with one full-attention pass instead of the isolated halves."""

    def build_model(self, m: VLMMultipleChoiceModelConfig, feature_dim: int) -> nn.Module:
        if m.temporal_segments < 0:
            raise ConfigError(f"model.temporal_segments={m.temporal_segments}: must be >= 0 (0: whole-sequence means)")
        if m.temporal_segments and (m.scoring == "joint" or not m.normalize):
            raise ConfigError(f"model.temporal_segments={m.temporal_segments} compares cosine similarities of the "
                              f"isolated halves: it needs model.normalize: true and model.scoring isolated or hybrid "
                              f"(got normalize={m.normalize}, scoring={m.scoring})")
        if m.scoring == "isolated":
            return super().build_model(m, feature_dim)
        if not self.cfg.data.train_mc:
            raise ConfigError(f"model.scoring={m.scoring} trains a fresh match head on multiple-choice items: "
                              "set data.train_mc (retrieval pairs train the isolated halves only)")
        return build_vlm(m, feature_dim, num_classes=1, tokenizer=data_tokenizer(self.cfg),
                         features=self.cfg.data.features, zero_head=m.scoring == "hybrid")

    def on_train_epoch_start(self) -> None:
        if not self.cfg.data.train_mc:
            super().on_train_epoch_start()

    def export_pretrained(self, out_dir) -> Path:
        """A model folder answering as the multiple-choice evaluation: its scorer, the order-aware
        segments, the similarity and temperature of the isolated score."""
        from videolang.pipelines.vlm import MultipleChoiceSpec

        m: VLMMultipleChoiceModelConfig = self.cfg.model
        return retrieval_export(self, out_dir, "mcqa", temporal_segments=m.temporal_segments,
                                 multiple_choice=MultipleChoiceSpec(scoring=m.scoring))

    def encode_pairs(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Training on retrieval pairs: pooled as the options are scored (``temporal_segments``)."""
        segments = self.cfg.model.temporal_segments
        return (self.model.encode_video(batch["vfeats"], batch["vmask"], segments=segments),
                self.model.encode_text(batch["caps"], batch["cmask"], segments=segments))

    def item_scores(self, batch: dict[str, torch.Tensor], video_shifts: Sequence[int] = (0,)) -> list[torch.Tensor]:
        """(B, K) logits of each item's options against the video of the item ``shift`` places
        earlier in the batch, one tensor per shift (shift 1: the text-only control). The
        isolated halves are encoded once for all shifts."""
        scoring = self.cfg.model.scoring
        if scoring != "joint":
            video, text = self.option_embeddings(batch)
            isolated = [self.option_scores(video.roll(shift, 0), text) for shift in video_shifts]
            if scoring == "isolated":
                return isolated
        b, k, length = batch["caps"].shape
        caps, cmask = batch["caps"].reshape(b * k, length), batch["cmask"].reshape(b * k, length)
        pooling = "cls" if scoring == "joint" else "text"
        joint = [self.model.match_scores(caps, cmask, batch["vfeats"].roll(shift, 0).repeat_interleave(k, 0),
                                         batch["vmask"].roll(shift, 0).repeat_interleave(k, 0),
                                         pooling=pooling).view(b, k)
                 for shift in video_shifts]
        if scoring == "joint":
            return joint
        return [a + j for a, j in zip(isolated, joint, strict=True)]

    def option_embeddings(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Video (B, E) and option (B, K, E) embeddings, normalized when the model compares
        cosine similarities; E is the hidden size, or (1 + S) times it with
        ``temporal_segments: S``."""
        b, k, length = batch["caps"].shape
        segments = self.cfg.model.temporal_segments
        video = self.model.encode_video(batch["vfeats"], batch["vmask"], segments=segments)
        text = self.model.encode_text(batch["caps"].reshape(b * k, length), batch["cmask"].reshape(b * k, length),
                                      segments=segments)
        text = text.view(b, k, -1)
        if self.cfg.model.normalize:
            video, text = F.normalize(video, dim=-1), F.normalize(text, dim=-1)
        return video, text

    def option_scores(self, video: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """(B, K) similarity of each video to each of its options (over the temperature)."""
        scores = torch.einsum("bh,bkh->bk", video.float(), text.float())
        if self.logit_scale is not None:
            return scores * self.logit_scale.clamp(max=math.log(100.0)).exp()
        return scores / self.cfg.model.temperature

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor | None:
        if "answer" not in batch:  # retrieval pairs, or a batch whose every item was skipped
            return super().training_step(batch, batch_idx)
        loss = F.cross_entropy(self.item_scores(batch)[0], batch["answer"])
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["answer"].shape[0])
        return loss

    def _eval_step(self, stage: str, batch: dict[str, torch.Tensor]) -> None:
        if all_skipped(batch):
            return
        k = batch["caps"].shape[1]
        # Control: the same options scored against another item's video. Accuracy above chance
        # there comes from the options' text alone.
        pred, control = (scores.argmax(-1) for scores in self.item_scores(batch, video_shifts=(0, 1)))
        self._eval.setdefault(stage, EvaluationBuffer()).add(
            batch["index"], correct=(pred == batch["answer"]).float(), options=torch.full_like(pred, k),
            control=(control == batch["answer"]).float())

    def _eval_end(self, stage: str) -> None:
        outputs = gather_stage(self._eval, stage)
        if not outputs:
            return
        accuracy = 100.0 * float(outputs["correct"].mean())
        protocol = self.trainer.datamodule.splits.protocol(stage)
        log_metrics(self, {f"{stage}/other_video_accuracy": 100.0 * float(outputs["control"].mean()),
                           f"{stage}/{protocol}/accuracy": accuracy, f"{stage}/accuracy": accuracy,
                           f"{stage}/chance_accuracy": 100.0 * float((1.0 / outputs["options"].float()).mean())})
