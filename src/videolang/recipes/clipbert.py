"""ClipBERT recipes: end-to-end training on sparsely sampled raw frames (Lei et al., 2021).

``clipbert.retrieval``, ``clipbert.qa``, ``clipbert.mcqa``, ``clipbert.vqa`` and
``clipbert.pretrain`` (MLM + ITM on images), each reading the original's JSONL annotations and
sampling clips with the task's defaults. Losses, evaluation protocols and ``model.init``:
docs/clipbert.md ("Implementation notes").
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from videolang.data.clipbert import (
    AnswerVocab,
    ClipBertItems,
    TextEncoder,
    VisualSource,
    collate_clipbert,
    load_annotations,
)
from videolang.data.datasets import DeferredDataLoader
from videolang.data.sampling import clipbert_task_sampling
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

TASK_OF_RECIPE = {"retrieval": "retrieval", "qa": "qa", "mcqa": "mc", "vqa": "vqa", "pretrain": "pretrain"}
HEAD_PREFIXES = ("transformer.classifier.", "transformer.cls.")


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


@dataclass
class ClipBertDataConfig:
    """``data.*`` of the ClipBERT recipes."""

    train_file: str | None = None  # ClipBERT JSONL
    val_file: str | None = None
    test_file: str | None = None
    video_root: str | None = None  # <root>/<clip_name><extension>
    video_lmdb: str | None = None  # LMDB store keyed by file basename (videolang data pack)
    image_root: str | None = None  # images (vqa, pretrain): <root>/<image_id>[.jpg|.png]
    extension: str = ".mp4"
    ans2label: str | None = None  # qa / vqa answer vocabulary; None: built from train_file
    min_num_labels: int = 0  # the original: 1540 (TGIF FrameQA), 1500 (MSRVTT-QA), 3129 (VQA)
    tokenizer: str = "minilm"
    max_text_len: int = 20
    frame_size: int = 448
    antialias: bool = True  # False: the original's resize without antialiasing
    sampling: str = "msrvtt_ret"  # per-task defaults (videolang.data.sampling.CLIPBERT_TASK_SAMPLING)
    target_fps: float | None = None
    frames_per_clip: int | None = None
    train_clips: int | None = None
    test_clips: int | None = None
    compat_sampling: bool = False  # the original's frame positions and test windows
    itm_neg_size: int = 1
    itm_neg_prob: float = 0.5
    mlm_probability: float = 0.15
    batch_size: int = 16
    eval_batch_size: int = 16
    pair_batch_size: int = 2048  # retrieval evaluation: (text, clip) pairs per fusion pass
    num_workers: int = 0


def recipe_task(cfg: RunConfig) -> str:
    return TASK_OF_RECIPE[cfg.recipe.rpartition(":")[2].split(".", 1)[1]]


def answer_vocab(cfg: RunConfig) -> AnswerVocab | None:
    """The answer vocabulary of a qa / vqa run (``data.ans2label``, else built from train_file)."""
    task, d = recipe_task(cfg), cfg.data
    if task not in ("qa", "vqa"):
        return None
    if d.ans2label:
        return AnswerVocab.from_file(d.ans2label, d.min_num_labels)
    if task == "vqa" or not d.train_file:
        raise ConfigError(f"data.ans2label: {cfg.recipe} needs an answer vocabulary file")
    return AnswerVocab.from_records(load_annotations(d.train_file, "qa"), d.min_num_labels)


def build_clipbert(cfg: RunConfig, num_labels: int | None) -> ClipBert:
    """The run's model: the registered config with the task and options, optionally
    initialised from ``model.init`` (task heads of another task dropped, the rest strict)."""
    m, task = cfg.model, recipe_task(cfg)
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
    fresh = HEAD_PREFIXES if source_task != model.config.task else ()
    load_strict(model, state, source=str(weights), fresh=fresh)


class ClipBertDataModule(L.LightningDataModule):
    def __init__(self, cfg: RunConfig):
        super().__init__()
        self.cfg, self.d = cfg, cfg.data
        self.task = recipe_task(cfg)
        self.vocab = answer_vocab(cfg)
        self.sampling = clipbert_task_sampling(self.d.sampling, target_fps=self.d.target_fps,
                                               frames_per_clip=self.d.frames_per_clip,
                                               train_clips=self.d.train_clips, test_clips=self.d.test_clips)
        self._text: TextEncoder | None = None
        self._sets: dict[str, ClipBertItems] = {}

    @property
    def text(self) -> TextEncoder:
        if self._text is None:
            from videolang.data.text import load_tokenizer

            self._text = TextEncoder(load_tokenizer(self.d.tokenizer), self.d.max_text_len)
        return self._text

    def _visual_factory(self, train: bool):
        d = self.d
        store = None
        if d.video_lmdb:
            from videolang.data.stores import LmdbVideoStore

            store = LmdbVideoStore(d.video_lmdb)
        image_root = d.image_root if self.task in ("vqa", "pretrain") else None
        if self.task in ("vqa", "pretrain") and not image_root:
            raise ConfigError(f"data.image_root: {self.cfg.recipe} reads images")

        def make(keys):
            return VisualSource(keys, sampling=self.sampling, train=train, frame_size=d.frame_size,
                                video_root=d.video_root, video_store=store, image_root=image_root,
                                extension=d.extension, antialias=d.antialias, compat=d.compat_sampling,
                                seed=self.cfg.seed)
        return make

    def dataset(self, stage: str) -> ClipBertItems:
        if stage not in self._sets:
            path = getattr(self.d, f"{stage}_file")
            if not path:
                raise ConfigError(f"data.{stage}_file: no {stage} annotations given")
            records = load_annotations(path, self.task)
            train = stage == "train"
            self._sets[stage] = ClipBertItems(
                records, self.task, self.text, self._visual_factory(train), vocab=self.vocab,
                itm_neg_size=self.d.itm_neg_size, itm_neg_prob=self.d.itm_neg_prob,
                eval_visual_only=not train and self.task == "retrieval", seed=self.cfg.seed)
        return self._sets[stage]

    def _loader(self, stage: str) -> DataLoader:
        ds = self.dataset(stage)
        train = stage == "train"
        pad = self.text.pad
        return DeferredDataLoader(ds, batch_size=self.d.batch_size if train else self.d.eval_batch_size, shuffle=train,
                          drop_last=train and len(ds) > self.d.batch_size, num_workers=self.d.num_workers,
                          collate_fn=partial(collate_clipbert, pad_id=pad))

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader | list:
        return self._loader("val") if self.d.val_file else []

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")


class ClipBertModule(StagedEvalModule):
    """All five ClipBERT recipes: the task comes from the recipe name."""

    def __init__(self, cfg: RunConfig):
        super().__init__(cfg)
        if not cfg.model.temperature > 0:
            raise ConfigError(f"model.temperature must be > 0, got {cfg.model.temperature!r}")
        self.task = recipe_task(cfg)
        self.vocab = answer_vocab(cfg)
        self.model = build_clipbert(cfg, self.vocab.num_labels if self.vocab else None)
        self._eval: dict[str, EvaluationBuffer] = {}
        self._tokenizer = None

    # -- losses ----------------------------------------------------------------------------------

    def _mlm(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        from videolang.data.text import load_tokenizer, mask_tokens_for

        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.cfg.data.tokenizer)
        keep = batch["attention_mask"].clone()
        if not self.cfg.model.mlm_on_negatives:
            keep &= batch["labels"].bool()[:, None]
        ids, labels = mask_tokens_for(self._tokenizer, batch["input_ids"].cpu(), keep.cpu(),
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

    def on_train_epoch_start(self) -> None:
        loader = self.trainer.train_dataloader
        if isinstance(loader, DataLoader) and hasattr(loader.dataset, "set_epoch"):
            loader.dataset.set_epoch(self.current_epoch)

    # -- evaluation ------------------------------------------------------------------------------

    def _eval_step(self, stage: str, batch: dict[str, Any]) -> None:
        if "frames" not in batch:
            return
        store = self._eval.setdefault(stage, EvaluationBuffer())
        if self.task == "retrieval":  # one item per video: the captions are scored at the end
            visual, vmask = self.model.encode_visual(batch["frames"], batch["pixel_mask"])
            store.add(batch["visual_id"], visual=visual, vmask=vmask)
            return
        if self.task == "pretrain":
            out = self.model(batch["frames"], batch["input_ids"], batch["attention_mask"], batch["pixel_mask"],
                             batch["video_index"], mlm=False)
            store.add(batch["index"], score=(out["itm_logits"].argmax(-1) == batch["labels"]).float())
            return
        out = self.model(batch["frames"], batch["input_ids"], batch["attention_mask"], batch["pixel_mask"],
                         batch["video_index"])
        logits = out["logits"]
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
            self._retrieval_metrics(stage, outputs)
            return
        index, score = outputs["index"].tolist(), outputs["score"]
        name = {"pretrain": "itm_acc", "vqa": "vqa_score"}.get(self.task, "acc")
        metrics = {f"{stage}/{name}": float(score.mean() * 100)}
        if self.task in ("qa", "vqa"):
            records = self.trainer.datamodule.dataset(stage).records
            for t in sorted({records[i]["answer_type"] for i in index}):
                sel = torch.tensor([records[i]["answer_type"] == t for i in index])
                metrics[f"{stage}/{name}_{t}"] = float(score[sel].mean() * 100)
        if self.task == "qa":
            metrics[f"{stage}/majority_acc"] = self._majority_rate(stage)
        log_metrics(self, metrics)

    def _majority_rate(self, stage: str) -> float:
        """Accuracy of always answering the most frequent training answer."""
        dm = self.trainer.datamodule
        train = load_annotations(dm.d.train_file, "qa") if dm.d.train_file else []
        if not train:
            return float("nan")
        counts: dict[str, int] = {}
        for r in train:
            counts[r["answer"]] = counts.get(r["answer"], 0) + 1
        top = max(counts, key=lambda a: (counts[a], a))
        records = dm.dataset(stage).records
        return 100.0 * sum(r["answer"] == top for r in records) / len(records)

    @torch.no_grad()
    def _retrieval_metrics(self, stage: str, outputs: dict[str, Any]) -> None:
        ids, visual, vmask = outputs["index"], outputs["visual"], outputs["vmask"]
        ds = self.trainer.datamodule.dataset(stage)
        # Videos that could not be decoded were skipped: their captions leave the ranking too.
        column = {int(v): j for j, v in enumerate(ids)}
        kept = [r for r in ds.records if ds.visual_pos[r["visual"]] in column]
        if len(kept) < len(ds.records):
            log.warning("%s retrieval: %d captions of unreadable videos left out", stage, len(ds.records) - len(kept))
        texts = [r["text"] for r in kept]
        truth = torch.tensor([column[ds.visual_pos[r["visual"]]] for r in kept])
        # Each process scores its share of the captions against every video.
        mine = list(range(self.global_rank, len(texts), self.trainer.world_size))
        rows = EvaluationBuffer()
        scores = (score_matrix(self.model, visual, vmask, ds.text, [texts[i] for i in mine],
                               self.cfg.data.pair_batch_size, self.device) if mine else torch.empty(0, len(ids)))
        rows.add(mine, scores=scores)
        ranks = retrieval_ranks_multi(rows.gather()["scores"], truth)
        metrics = {f"{stage}/{direction}/{name}": value for direction, r in (("t2v", ranks.t2v), ("v2t", ranks.v2t))
                   for name, value in rank_metrics(r).items()}
        log_metrics(self, {**metrics, f"{stage}/R1": metrics[f"{stage}/t2v/R1"],
                           f"{stage}/chance_R1": 100.0 / visual.shape[0]})

    def export_pretrained(self, out_dir) -> Path:
        """A self-contained model folder: weights, tokenizer, and how the test loop fed the model
        (sampling, frame size, text length, consensus, answer vocabulary), so that
        ``videolang.load`` answers as the evaluation did."""
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

    d, task = cfg.data, recipe_task(cfg)
    sampling = None
    if task not in ("vqa", "pretrain"):  # images: one frame, no sampling
        s = clipbert_task_sampling(d.sampling, target_fps=d.target_fps, frames_per_clip=d.frames_per_clip,
                                   train_clips=d.train_clips, test_clips=d.test_clips)
        sampling = ClipSamplingSpec(target_fps=s.target_fps, frames_per_clip=s.frames_per_clip,
                                    num_clips=s.test_clips, compat=d.compat_sampling,
                                    compat_test_window=s.compat_test_window)
    answers = sorted(vocab.ans2label, key=vocab.ans2label.__getitem__) if vocab is not None else []
    return ClipBERTSpec(
        task=task, input="video" if sampling else "image", text=TextSpec(max_len=d.max_text_len - 2),
        frames=FramesSpec(size=d.frame_size, antialias=d.antialias), sampling=sampling,
        consensus=model.config.consensus, answers=answers,
        provenance={**export_provenance(cfg), "sampling": d.sampling},
    )


def in_batch_retrieval_loss(model: ClipBert, batch: dict[str, Any], temperature: float = 1.0) -> torch.Tensor:
    """Symmetric InfoNCE over the cross-encoder scores of every (caption, video) pair of a batch.

    The first text row of each item is its caption (any ITM negatives after it are not used).
    ``scores[i, j] = logit[1] - logit[0]`` of caption i with video j, divided by
    ``temperature``; caption i's positive is video i. Other captions of the same video (same
    ``visual_id``) are left out of each other's denominators rather than counted as negatives.
    """
    visual, vmask = model.encode_visual(batch["frames"], batch["pixel_mask"])
    counts = batch["rows_per_item"].to(visual.device)
    first = torch.cumsum(counts, 0) - counts
    ids, am = batch["input_ids"][first], batch["attention_mask"][first]
    b = ids.shape[0]
    video_index = torch.arange(b, device=visual.device).repeat(b)  # row i*b + j: caption i, video j
    logits = model.score(visual, vmask, ids.repeat_interleave(b, 0), am.repeat_interleave(b, 0),
                         video_index)["logits"]
    scores = (logits[:, 1] - logits[:, 0]).view(b, b) / temperature
    vid = batch["visual_id"].to(visual.device)
    duplicate = (vid[:, None] == vid[None, :]) & ~torch.eye(b, dtype=torch.bool, device=visual.device)
    scores = scores.masked_fill(duplicate, float("-inf"))
    target = torch.arange(b, device=visual.device)
    return (F.cross_entropy(scores, target) + F.cross_entropy(scores.t(), target)) / 2


@torch.no_grad()
def score_matrix(model: ClipBert, visual: torch.Tensor, visual_mask: torch.Tensor, text: TextEncoder,
                 texts: list[str], pair_batch_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``(num_texts, num_videos)`` raw matching scores ``logit[1] - logit[0]`` (after clip
    consensus) of every text against every video, in fusion batches of about
    ``pair_batch_size`` (text, clip) pairs. ``visual`` ``(V, N, tokens, H)`` from
    :meth:`ClipBert.encode_visual`, on any device (moved chunk by chunk)."""
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
            t_ids, t_am = t_ids[:, :length], t_am[:, :length]
            video_index = torch.arange(nv, device=device).repeat(nt)
            logits = model.score(vis, vm, t_ids.repeat_interleave(nv, 0), t_am.repeat_interleave(nv, 0),
                                 video_index)["logits"]
            sim[t0 : t0 + nt, v0 : v0 + nv] = (logits[:, 1] - logits[:, 0]).view(nt, nv).float().cpu()
    model.train(was_training)
    return sim


for _name in TASK_OF_RECIPE:
    register_recipe(f"clipbert.{_name}", ClipBertModule, ClipBertDataModule, ClipBertModelConfig, ClipBertDataConfig)
