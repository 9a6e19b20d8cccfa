"""``vlm.captioning``: teacher-forced training of the captioning head over ``[CLS] video
[SEP] [BOS] words``; evaluation decodes greedily and with beam search and scores both, and the
most frequent training caption as a baseline, against every reference of a video."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from videolang.data.videoclip import all_skipped
from videolang.engine import RunConfig, StagedEvalModule
from videolang.engine.evaluation import EvaluationBuffer, gather_stage, log_metrics
from videolang.metrics import caption_metrics
from videolang.recipes.vlm.model import (
    VLMModelConfig,
    build_vlm,
    export_vlm_folder,
    input_feature_dim,
)

log = logging.getLogger(__name__)


@dataclass
class VLMCaptionModelConfig(VLMModelConfig):
    num_beams: int = 5  # the original: beam 5
    max_decode_length: int = 24  # the original: 24 tokens
    length_penalty: float = 1.0
    eval_greedy: bool = True  # also decode greedily and log those scores


class VLMCaptioning(StagedEvalModule):
    """``vlm.captioning``: teacher-forced training, greedy + beam decoding at evaluation."""

    def __init__(self, cfg: RunConfig):
        super().__init__(cfg)
        from videolang.data.text import load_tokenizer

        self.tokenizer = load_tokenizer(cfg.data.tokenizer)
        self.model = build_vlm(cfg.model, input_feature_dim(cfg.model, cfg.data.features), tokenizer=self.tokenizer,
                               features=cfg.data.features)
        self._eval: dict[str, EvaluationBuffer] = {}

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor | None:
        if all_skipped(batch):
            return None  # every item was unreadable (the DataGuard counted them)
        caps, cmask = batch["caps"], batch["cmask"]
        logits = self.model.caption_logits(caps, cmask, batch["vfeats"], batch["vmask"])[:, :-1]
        targets = caps[:, 3:].masked_fill(~cmask[:, 3:].bool(), -100)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)
        self.log("train/loss", loss, prog_bar=True, batch_size=caps.shape[0])
        return loss

    def _decode(self, ids: list[list[int]]) -> list[str]:
        return [self.tokenizer.decode(row, skip_special_tokens=True).strip() for row in ids]

    def export_pretrained(self, out_dir) -> Path:
        """A model folder captioning as the evaluation decoded (beam size, length, penalty)."""
        from videolang.pipelines.vlm import CaptioningSpec

        m: VLMCaptionModelConfig = self.cfg.model
        decoding = CaptioningSpec(num_beams=m.num_beams, max_length=m.max_decode_length,
                                  length_penalty=m.length_penalty)
        return export_vlm_folder(self, out_dir, "captioning", window=self.cfg.data.max_video_len,
                                 tokenizer=self.tokenizer, captioning=decoding)

    def _eval_step(self, stage: str, batch: dict[str, torch.Tensor]) -> None:
        if all_skipped(batch):
            return
        m: VLMCaptionModelConfig = self.cfg.model
        beam = self.model.generate(batch["vfeats"], batch["vmask"], max_length=m.max_decode_length,
                                   num_beams=m.num_beams, length_penalty=m.length_penalty)
        greedy = (self.model.generate(batch["vfeats"], batch["vmask"], max_length=m.max_decode_length)
                  if m.eval_greedy and m.num_beams > 1 else beam)
        self._eval.setdefault(stage, EvaluationBuffer()).add(batch["index"], beam=self._decode(beam),
                                                             greedy=self._decode(greedy))

    def _eval_end(self, stage: str) -> None:
        outputs = gather_stage(self._eval, stage)
        if not outputs:
            return
        splits = self.trainer.datamodule.splits
        references = splits.dataset(stage).references
        order = outputs["index"].tolist()
        refs = [references[i] for i in order]
        protocol = splits.protocol(stage)
        results = {"beam": caption_metrics(outputs["beam"], refs)}
        if self.cfg.model.eval_greedy:
            results["greedy"] = caption_metrics(outputs["greedy"], refs)
        baseline = splits.most_frequent_caption()
        results["most_frequent"] = caption_metrics([baseline] * len(order), refs)
        log_metrics(self, {f"{stage}/{protocol}/{kind}/{name}": value
                           for kind, metrics in results.items() for name, value in metrics.items()})
        log_metrics(self, {f"{stage}/BLEU-4": results["beam"]["BLEU-4"],
                           f"{stage}/baseline_BLEU-4": results["most_frequent"]["BLEU-4"]})
        for k, i in enumerate(order[:3]):
            log.info("%s caption %d: beam %r | greedy %r | reference %r", stage, i, outputs["beam"][k],
                     outputs["greedy"][k], references[i][0])
