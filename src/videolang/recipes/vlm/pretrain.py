"""``vlm.pretrain`` (masked modality modelling over ``[CLS] video [SEP] text``, zero-shot
retrieval for validation) and ``vlm.retrieval`` (fine-tuning and evaluation of the isolated
halves). Masking draws come from a generator seeded by (seed, global step), so a resumed run
masks as an uninterrupted one. Objectives: docs/vlm.md ("Implementation notes").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from videolang.data.videoclip import all_skipped
from videolang.data.vlm import whole_modality_masks
from videolang.losses import masked_frame_nce_loss, mlm_loss, mtm_loss
from videolang.recipes.videoclip import VideoCLIPModule
from videolang.recipes.vlm.model import VLMModelConfig, build_vlm, data_tokenizer, retrieval_export


@dataclass
class VLMPretrainModelConfig(VLMModelConfig):
    objective: Literal["mlm_mfm", "mtm"] = "mlm_mfm"
    mlm_weight: float = 1.0
    mfm_weight: float = 1.0
    mm_prob: float = 0.5  # share of items with one whole modality masked (split evenly)
    mlm_probability: float = 0.15
    mfm_probability: float = 0.15
    zero_logit: bool = True  # objective mtm: the original's constant zero logit (parity)


@dataclass
class VLMRetrievalModelConfig(VLMModelConfig):
    loss: Literal["symmetric", "t2v", "v2t"] = "t2v"  # the original: T2VContra (V2T for QA)
    normalize: bool = False  # cosine similarity (the original: raw dot product)
    temperature: float = 1.0
    learn_temperature: bool = False
    gather_negatives: bool = False


def _mask_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


class VLMPretrain(VideoCLIPModule):
    """Masked modality pretraining; zero-shot retrieval for validation."""

    def build_model(self, m: VLMPretrainModelConfig, feature_dim: int) -> nn.Module:
        return build_vlm(m, feature_dim, tokenizer=data_tokenizer(self.cfg), features=self.cfg.data.features)

    def export_pretrained(self, out_dir) -> Path:
        """A model folder for zero-shot retrieval (this recipe's validation)."""
        return retrieval_export(self, out_dir)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor | None:
        if all_skipped(batch):
            return None  # every item was unreadable (the DataGuard counted them)
        m: VLMPretrainModelConfig = self.cfg.model
        cfg = self.model.config
        g = _mask_generator(self.cfg.seed, self.global_step)
        special = [cfg.cls_token_id, cfg.sep_token_id, cfg.pad_token_id, cfg.mask_token_id]
        caps, labels, video_label = whole_modality_masks(
            batch["caps"].cpu(), batch["cmask"].cpu(), batch["vmask"].cpu(), special_ids=special,
            mask_token_id=cfg.mask_token_id, vocab_size=cfg.bert.vocab_size, mm_prob=m.mm_prob,
            mlm_probability=m.mlm_probability, mfm_probability=m.mfm_probability, generator=g)
        dev = batch["caps"].device
        video_logits, text_logits, targets = self.model.mtm_logits(
            caps.to(dev), batch["cmask"], batch["vfeats"], batch["vmask"], video_label.to(dev), labels.to(dev))
        n = batch["caps"].shape[0]
        if m.objective == "mtm":
            rows = video_logits.shape[0] + text_logits.shape[0]
            loss = mtm_loss(video_logits, text_logits, targets, zero_logit=m.zero_logit) if rows else video_logits.sum() * 0
        else:
            mfm = masked_frame_nce_loss(video_logits)
            mlm = mlm_loss(text_logits, targets)
            loss = m.mlm_weight * mlm + m.mfm_weight * mfm
            self.log("train/mlm", mlm, batch_size=n)
            self.log("train/mfm", mfm, batch_size=n)
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        return loss


class VLMRetrieval(VideoCLIPModule):
    """Retrieval fine-tuning / evaluation with the isolated halves (``vlm.retrieval``)."""

    def build_model(self, m: VLMRetrievalModelConfig, feature_dim: int) -> nn.Module:
        return build_vlm(m, feature_dim, tokenizer=data_tokenizer(self.cfg), features=self.cfg.data.features)

    def export_pretrained(self, out_dir) -> Path:
        """A model folder answering as the retrieval evaluation (window, text layout, similarity)."""
        return retrieval_export(self, out_dir)
