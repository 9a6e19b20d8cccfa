"""ClipBERT recipes (Lei et al., 2021): ``clipbert.retrieval``, ``.qa``, ``.mcqa``, ``.vqa`` and
``.pretrain`` (MLM + ITM on images), end to end on sparsely sampled raw frames. Losses, evaluation
protocols and ``model.init``: docs/clipbert.md ("Implementation notes"); data: data/clipbert.py."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F

from videolang.data.clipbert import (
    DATA_CONFIG_OF_RECIPE,
    AnswerVocab,
    ClipBertSplits,
    TextEncoder,
    answer_vocab,
    majority_answer_rate,
    task_sampling,
)
from videolang.engine import RunConfig, StagedEvalModule, create_recipe_model, register_recipe
from videolang.engine.evaluation import EvaluationBuffer, gather_stage, log_metrics
from videolang.errors import ConfigError
from videolang.losses import mlm_loss
from videolang.metrics import rank_metrics, retrieval_ranks_multi
from videolang.models.clipbert import ClipBert
from videolang.models.weights import load_strict

if TYPE_CHECKING:
    from videolang.pipelines.clipbert import ClipBERTSpec

log = logging.getLogger(__name__)


@dataclass
class ClipBertModelConfig:
    """``model.*`` of the ClipBERT recipes."""

    name: str = "clipbert-tiny"  # a registered model config
    init: str | None = None  # a model folder: converted pretrained checkpoint or run export
    consensus: Literal["mean", "max", "lse"] | None = None  # None: the model config's
    visual_padding_mask: bool = True  # False: the original (padding tokens attended)
    pixel_random_sampling_size: int | None = None  # pretraining: visual tokens kept per step
    overrides: dict[str, Any] = field(default_factory=dict)  # other registry keys (dotted)
    mlm_loss: Literal["masked", "all_positions"] = "masked"
    mlm_on_negatives: bool = True  # the original also ran MLM on mismatched captions
    retrieval_loss: Literal["itm", "in_batch"] = "itm"  # in_batch: symmetric InfoNCE over B x B scores
    temperature: float = 1.0  # in_batch: scores are divided by it


def build_clipbert(cfg: RunConfig, num_labels: int | None) -> ClipBert:
    """The run's model: the registered config with the task and options, optionally
    initialised from ``model.init`` (task heads of another task dropped, the rest strict)."""
    m, task = cfg.model, cfg.data.task
    overrides: dict[str, Any] = {"task": task, "visual_padding_mask": m.visual_padding_mask,
                                 "frame_size": cfg.data.frame_size, **m.overrides}
    overrides["num_labels"] = {"retrieval": 2, "mc": 1, "pretrain": 2}.get(task, num_labels)
    if m.consensus is not None:
        overrides["consensus"] = m.consensus
    if m.pixel_random_sampling_size is not None:
        overrides["pixel_random_sampling_size"] = m.pixel_random_sampling_size
    elif task != "pretrain":
        overrides["pixel_random_sampling_size"] = None  # the original samples pixels only in pretraining
    model = create_recipe_model(m, overrides)
    if m.init:
        load_init(model, m.init)
    return model


def load_init(model: ClipBert, folder: str) -> None:
    from safetensors.torch import load_file

    path = Path(folder)
    cfg_file, weights = path / "config.json", path / "model.safetensors"
    if not weights.is_file() or not cfg_file.is_file():
        raise ConfigError(f"model.init: {path} is not a model folder (config.json + model.safetensors)")
    state = load_file(str(weights))
    source_task = json.loads(cfg_file.read_text()).get("task")
    # A new task starts with a fresh head; the original dropped ``cls.*`` the same way.
    fresh = ("transformer.classifier.", "transformer.cls.") if source_task != model.config.task else ()
    load_strict(model, state, source=str(weights), fresh=fresh)


class ClipBertModule(StagedEvalModule):
    """All five ClipBERT recipes: the task is ``data.task`` (fixed by each recipe's data config)."""

    def __init__(self, cfg: RunConfig):
        super().__init__(cfg)
        if not cfg.model.temperature > 0:
            raise ConfigError(f"model.temperature must be > 0, got {cfg.model.temperature!r}")
        self.task = cfg.data.task
        self.vocab = answer_vocab(cfg.data)
        self.model = build_clipbert(cfg, self.vocab.num_labels if self.vocab else None)
        self._eval: dict[str, EvaluationBuffer] = {}

    # -- losses ----------------------------------------------------------------------------------
    def _mlm(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        from videolang.data.text import mask_tokens_for

        keep = batch["attention_mask"].clone()
        if not self.cfg.model.mlm_on_negatives:
            keep &= batch["labels"].bool()[:, None]
        tokenizer = self.trainer.datamodule.splits.text.tokenizer
        ids, labels = mask_tokens_for(tokenizer, batch["input_ids"].cpu(), keep.cpu(),
                                      mlm_probability=self.cfg.data.mlm_probability)
        return ids.to(self.device), labels.to(self.device)

    def _loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        labels = batch["labels"]
        if self.task == "pretrain":
            ids, mlm_labels = self._mlm(batch)
            out = self.model(batch["frames"], ids, batch["attention_mask"], batch["pixel_mask"],
                             batch["video_index"], mlm=True)
            itm = F.cross_entropy(out["itm_logits"], labels)
            mlm = mlm_loss(out["mlm_logits"], mlm_labels, self.cfg.model.mlm_loss)
            return mlm + itm, {"mlm": mlm.detach(), "itm": itm.detach()}
        if self.task == "retrieval" and self.cfg.model.retrieval_loss == "in_batch":
            loss = in_batch_retrieval_loss(self.model, batch, self.cfg.model.temperature)
            return loss, {}
        out = self.model(batch["frames"], batch["input_ids"], batch["attention_mask"], batch["pixel_mask"],
                         batch["video_index"])
        logits = out["logits"]
        if self.task == "mc":
            return F.cross_entropy(logits.view(len(labels), -1), labels), {}
        if self.task == "vqa":
            targets = batch["soft_targets"]
            return F.binary_cross_entropy_with_logits(logits, targets) * targets.shape[1], {}
        return F.cross_entropy(logits, labels, ignore_index=-1), {}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        if "frames" not in batch:
            return None  # every video of the batch was unreadable (logged by the dataset)
        loss, parts = self._loss(batch)
        n = batch["frames"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        for name, value in parts.items():
            self.log(f"train/{name}", value, batch_size=n)
        return loss

    # -- evaluation ------------------------------------------------------------------------------
    def _eval_step(self, stage: str, batch: dict[str, Any]) -> None:
        if "frames" not in batch:
            return
        store = self._eval.setdefault(stage, EvaluationBuffer())
        if self.task == "retrieval":  # one item per video: the captions are scored at the end
            visual, vmask = self.model.encode_visual(batch["frames"], batch["pixel_mask"])
            store.add(batch["visual_id"], visual=visual, vmask=vmask)
            return
        out = self.model(batch["frames"], batch["input_ids"], batch["attention_mask"], batch["pixel_mask"],
                         batch["video_index"], mlm=False)  # pretraining: ITM accuracy, no MLM logits
        logits = out["itm_logits" if self.task == "pretrain" else "logits"]
        if self.task == "mc":
            logits = logits.view(len(batch["labels"]), -1)
        if self.task == "vqa":
            score = batch["soft_targets"].gather(1, logits.argmax(-1, keepdim=True)).squeeze(1)
        else:
            score = (logits.argmax(-1) == batch["labels"]).float()
        store.add(batch["index"], score=score)

    def _eval_end(self, stage: str) -> None:
        outputs = gather_stage(self._eval, stage)
        if not outputs:
            return
        if self.task == "retrieval":
            return self._retrieval_metrics(stage, outputs)
        index, score = outputs["index"].tolist(), outputs["score"]
        name = {"pretrain": "itm_acc", "vqa": "vqa_score"}.get(self.task, "acc")
        metrics = {f"{stage}/{name}": float(score.mean() * 100)}
        if self.task in ("qa", "vqa"):
            records = self.trainer.datamodule.splits.dataset(stage).records
            for t in sorted({records[i]["answer_type"] for i in index}):
                sel = torch.tensor([records[i]["answer_type"] == t for i in index])
                metrics[f"{stage}/{name}_{t}"] = float(score[sel].mean() * 100)
        if self.task == "qa":
            metrics[f"{stage}/majority_acc"] = majority_answer_rate(self.cfg.data.train_file, records)
        log_metrics(self, metrics)

    @torch.no_grad()
    def _retrieval_metrics(self, stage: str, outputs: dict[str, Any]) -> None:
        ids, visual, vmask = outputs["index"], outputs["visual"], outputs["vmask"]
        ds = self.trainer.datamodule.splits.dataset(stage)
        # Videos that could not be decoded were skipped: their captions leave the ranking too.
        texts, truth = ds.captions_of(ids.tolist())
        if len(texts) < len(ds.records):
            log.warning("%s retrieval: %d captions of unreadable videos left out", stage,
                        len(ds.records) - len(texts))
        # Each process scores its share of the captions against every video.
        mine = list(range(self.global_rank, len(texts), self.trainer.world_size))
        rows = EvaluationBuffer()
        scores = (score_matrix(self.model, visual, vmask, ds.text, [texts[i] for i in mine],
                               self.cfg.data.pair_batch_size, self.device) if mine else torch.empty(0, len(ids)))
        rows.add(mine, scores=scores)
        ranks = retrieval_ranks_multi(rows.gather()["scores"], torch.tensor(truth))
        metrics = {f"{stage}/{direction}/{name}": value for direction, r in (("t2v", ranks.t2v), ("v2t", ranks.v2t))
                   for name, value in rank_metrics(r).items()}
        log_metrics(self, {**metrics, f"{stage}/R1": metrics[f"{stage}/t2v/R1"],
                           f"{stage}/chance_R1": 100.0 / visual.shape[0]})

    def export_pretrained(self, out_dir) -> Path:
        """A model folder: weights, tokenizer and how the test loop fed the model (:func:`export_spec`),
        so that ``videolang.load`` answers as the evaluation did."""
        from videolang.data.text import load_tokenizer
        from videolang.pipelines.folder import write_model_folder

        spec = export_spec(self.cfg, self.model, self.vocab)
        return write_model_folder(out_dir, self.model, spec, tokenizer=load_tokenizer(self.cfg.data.tokenizer))


def export_spec(cfg: RunConfig, model: ClipBert, vocab: AnswerVocab | None) -> ClipBERTSpec:
    """The :class:`~videolang.pipelines.clipbert.ClipBERTSpec` of a run: what its test loop
    used (the data module's test sampling and frame preprocessing, the model's consensus)."""
    from videolang.engine.export import export_provenance
    from videolang.pipelines.clipbert import ClipBERTSpec, ClipSamplingSpec, FramesSpec
    from videolang.pipelines.folder import TextSpec

    d, task = cfg.data, cfg.data.task
    sampling = None
    if task not in ("vqa", "pretrain"):  # images: one frame, no sampling
        s = task_sampling(d)
        sampling = ClipSamplingSpec(target_fps=s.target_fps, frames_per_clip=s.frames_per_clip,
                                    num_clips=s.test_clips, compat=d.compat_sampling,
                                    compat_test_window=s.compat_test_window)
    return ClipBERTSpec(task=task, input="video" if sampling else "image", text=TextSpec(max_len=d.max_text_len - 2),
                        frames=FramesSpec(size=d.frame_size, antialias=d.antialias), sampling=sampling,
                        consensus=model.config.consensus, answers=vocab.answers if vocab is not None else [],
                        provenance={**export_provenance(cfg), "sampling": d.sampling})


def pair_scores(model: ClipBert, visual: torch.Tensor, visual_mask: torch.Tensor, input_ids: torch.Tensor,
                attention_mask: torch.Tensor) -> torch.Tensor:
    """``(texts, videos)`` matching scores ``logit[1] - logit[0]`` of every text row with every video."""
    nt, nv = input_ids.shape[0], visual.shape[0]
    video_index = torch.arange(nv, device=visual.device).repeat(nt)  # row i*nv + j: text i, video j
    logits = model.score(visual, visual_mask, input_ids.repeat_interleave(nv, 0),
                         attention_mask.repeat_interleave(nv, 0), video_index)["logits"]
    return (logits[:, 1] - logits[:, 0]).view(nt, nv)


def in_batch_retrieval_loss(model: ClipBert, batch: dict[str, Any], temperature: float = 1.0) -> torch.Tensor:
    """Symmetric InfoNCE over :func:`pair_scores` / ``temperature`` of every (caption, video) pair
    of a batch: an item's first text row is its caption (ITM negatives after it unused), its video
    the positive; captions of the same video (``visual_id``) leave each other's denominators."""
    visual, vmask = model.encode_visual(batch["frames"], batch["pixel_mask"])
    counts = batch["rows_per_item"].to(visual.device)
    first = torch.cumsum(counts, 0) - counts
    ids, am = batch["input_ids"][first], batch["attention_mask"][first]
    scores = pair_scores(model, visual, vmask, ids, am) / temperature
    b = scores.shape[0]
    vid = batch["visual_id"].to(visual.device)
    duplicate = (vid[:, None] == vid[None, :]) & ~torch.eye(b, dtype=torch.bool, device=visual.device)
    scores = scores.masked_fill(duplicate, float("-inf"))
    target = torch.arange(b, device=visual.device)
    return (F.cross_entropy(scores, target) + F.cross_entropy(scores.t(), target)) / 2


@torch.no_grad()
def score_matrix(model: ClipBert, visual: torch.Tensor, visual_mask: torch.Tensor, text: TextEncoder,
                 texts: list[str], pair_batch_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """:func:`pair_scores` ``(num_texts, num_videos)`` in fusion batches of about ``pair_batch_size``
    (text, clip) pairs; ``visual`` ``(V, N, tokens, H)`` from :meth:`ClipBert.encode_visual`, on
    any device (moved chunk by chunk)."""
    was_training = model.training
    model.eval()
    ids, am = text.batch(texts)
    n_txt, n_vid, n_clips = len(texts), visual.shape[0], visual.shape[1]
    # Text chunks x video chunks: each fusion pass sees (text chunk x video chunk x clips) pairs.
    vid_chunk = max(1, min(n_vid, pair_batch_size // n_clips))
    txt_chunk = max(1, pair_batch_size // (vid_chunk * n_clips))
    sim = torch.empty(n_txt, n_vid)
    for v0 in range(0, n_vid, vid_chunk):
        vis = visual[v0 : v0 + vid_chunk].to(device)
        vm = visual_mask[v0 : v0 + vid_chunk].to(device)
        nv = vis.shape[0]
        for t0 in range(0, n_txt, txt_chunk):
            t_ids, t_am = ids[t0 : t0 + txt_chunk].to(device), am[t0 : t0 + txt_chunk].to(device)
            nt = t_ids.shape[0]
            length = int(t_am.sum(1).max())
            scores = pair_scores(model, vis, vm, t_ids[:, :length], t_am[:, :length])
            sim[t0 : t0 + nt, v0 : v0 + nv] = scores.float().cpu()
    model.train(was_training)
    return sim


for _name, _data_config in DATA_CONFIG_OF_RECIPE.items():
    register_recipe(f"clipbert.{_name}", ClipBertModule, ClipBertSplits, ClipBertModelConfig, _data_config)
