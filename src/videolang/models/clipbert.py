"""ClipBERT: a 2D CNN and a single-stream BERT trained end to end on sparse clips (Lei et al., 2021).

:class:`ClipBert` runs a ResNet + grid encoder per frame, mean-pools each clip's frames into a
grid of visual tokens, fuses ``[text ; visual]`` with BERT and scores each clip with a task head;
:func:`clip_consensus` combines the clips. Parameter names follow the original's ``ClipBert``
state dict (ResNet in torchvision layout); :mod:`videolang.models.convert.clipbert` loads the
released ``clipbert_image_text_pretrained.pt``. Layers, heads and the differences from the original (with
their switches): docs/clipbert.md ("Model").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from videolang.config_types import dataclass_from_dict
from videolang.errors import ConfigError
from videolang.models.backbones.resnet import ResNet, ResNetConfig
from videolang.models.bert import BertConfig, BertEncoder, BertMLMHead

__all__ = [
    "CLIPBERT_TASKS",
    "ClipBert",
    "ClipBertConfig",
    "clip_consensus",
    "lse_consensus_loss",
]

Task = Literal["pretrain", "retrieval", "qa", "mc", "vqa"]
Consensus = Literal["mean", "max", "lse"]
CLIPBERT_TASKS = ("pretrain", "retrieval", "qa", "mc", "vqa")

# Caffe/MSRA input convention of the detectron2 weights: BGR, 0-255, mean-subtracted, no std.
PIXEL_MEAN_RGB = (123.675, 116.28, 103.53)


@dataclass
class ClipBertConfig:
    """Architecture of a ClipBERT model (saved as ``config.json`` next to its weights)."""

    backbone: ResNetConfig = field(default_factory=ResNetConfig)
    bert: BertConfig = field(default_factory=BertConfig)
    task: Task = "retrieval"
    num_labels: int = 2  # classifier outputs: 2 for retrieval (ITM), answers for qa/vqa, 1 for mc
    consensus: Consensus = "lse"
    frame_size: int = 448  # L: frames are resized (longer side) and padded to L x L
    max_grid: int = 100  # rows/columns of the row and column embedding tables
    visual_padding_mask: bool = True  # False: attend to padding tokens like the original
    pixel_random_sampling_size: int | None = None  # pretraining: visual tokens kept in training
    tokenizer: str = "minilm"  # BERT's uncased WordPiece vocabulary

    def __post_init__(self) -> None:
        if self.task not in CLIPBERT_TASKS:
            raise ConfigError(f"ClipBERT: task must be one of {', '.join(CLIPBERT_TASKS)}, got {self.task!r}")
        if self.consensus not in ("mean", "max", "lse"):
            raise ConfigError(f"ClipBERT: consensus must be mean, max or lse, got {self.consensus!r}")
        if self.task == "retrieval" and self.num_labels != 2:
            raise ConfigError(f"ClipBERT retrieval scores image-text matching: num_labels must be 2, got {self.num_labels}")
        if self.task == "mc" and self.num_labels != 1:
            raise ConfigError(f"ClipBERT multiple choice scores one option per row: num_labels must be 1, got {self.num_labels}")
        if self.num_labels < 1:
            raise ConfigError(f"ClipBERT: num_labels must be positive, got {self.num_labels}")

    @classmethod
    def from_dict(cls, d: dict) -> ClipBertConfig:
        d = dict(d)
        if isinstance(d.get("backbone"), dict):
            d["backbone"] = ResNetConfig.from_dict(d["backbone"])
        if isinstance(d.get("bert"), dict):
            d["bert"] = BertConfig.from_dict(d["bert"], source="ClipBERT config 'bert'")
        return dataclass_from_dict(cls, d, "ClipBERT config", ignore=("architecture", "model_type"))

    def to_dict(self) -> dict:
        out = asdict(self)
        out["backbone"] = self.backbone.to_dict()
        out["bert"] = self.bert.to_dict()
        out["architecture"] = "clipbert"
        return out


# ---------------------------------------------------------------------------------------------
# clip consensus


def clip_consensus(clip_logits: torch.Tensor, kind: Consensus) -> torch.Tensor:
    """Combine per-clip scores ``(..., N, C)`` over the N clips into ``(..., C)``.

    ``mean``: average; ``max``: elementwise maximum per class; ``lse``: ``log sum_k exp``.
    Cross-entropy on the ``lse``-pooled logits is ClipBERT's LSE loss (:func:`lse_consensus_loss`).
    """
    if kind == "mean":
        return clip_logits.mean(dim=-2)
    if kind == "max":
        return clip_logits.amax(dim=-2)
    if kind == "lse":
        return torch.logsumexp(clip_logits, dim=-2)
    raise ConfigError(f"unknown clip consensus {kind!r} (mean, max or lse)")


def lse_consensus_loss(clip_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The original's LSE loss written directly: mean over the batch of
    ``logsumexp_{k,c} s[k, c] - logsumexp_k s[k, y]`` for ``clip_logits`` ``(B, N, C)``."""
    total = torch.logsumexp(clip_logits.flatten(1), dim=1)
    idx = targets.view(-1, 1, 1).expand(-1, clip_logits.shape[1], 1)
    true = torch.logsumexp(clip_logits.gather(2, idx).squeeze(2), dim=1)
    return (total - true).mean()


# ---------------------------------------------------------------------------------------------
# modules


class GridEncoder(nn.Module):
    """``cnn``: ResNet backbone then ``grid_encoder`` (3x3 conv to hidden, 2x2 max-pool, ReLU)."""

    def __init__(self, cfg: ClipBertConfig):
        super().__init__()
        self.backbone = ResNet(cfg.backbone)
        self.grid_encoder = nn.Sequential(
            nn.Conv2d(cfg.backbone.out_channels, cfg.bert.hidden_size, 3, padding=1, bias=False),
            nn.MaxPool2d(2, 2),
            nn.ReLU(inplace=True),
        )
        self.register_buffer("pixel_mean_bgr", torch.tensor(PIXEL_MEAN_RGB[::-1]).view(1, 3, 1, 1),
                             persistent=False)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """RGB frames ``(F, 3, L, L)`` (uint8 or float, 0-255) -> grid ``(F, hidden, h, w)``."""
        x = frames.flip(1).to(self.pixel_mean_bgr.dtype) - self.pixel_mean_bgr
        return self.grid_encoder(self.backbone(x))


class VisualInputEmbedding(nn.Module):
    """Row, column and type embeddings on the clip-mean grid, LayerNorm, dropout."""

    def __init__(self, cfg: ClipBertConfig):
        super().__init__()
        h = cfg.bert.hidden_size
        self.row_position_embeddings = nn.Embedding(cfg.max_grid, h)
        self.col_position_embeddings = nn.Embedding(cfg.max_grid, h)
        self.token_type_embeddings = nn.Embedding(1, h)
        self.LayerNorm = nn.LayerNorm(h, eps=cfg.bert.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.bert.hidden_dropout_prob)

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        """``grid`` ``(..., h, w, H)`` -> tokens ``(..., h*w, H)`` (row-major)."""
        h, w = grid.shape[-3], grid.shape[-2]
        if max(h, w) > self.row_position_embeddings.num_embeddings:
            raise ValueError(f"visual grid {h}x{w} exceeds max_grid={self.row_position_embeddings.num_embeddings}")
        dev = grid.device
        pos = (self.row_position_embeddings(torch.arange(h, device=dev))[:, None, :]
               + self.col_position_embeddings(torch.arange(w, device=dev))[None, :, :])
        x = (grid + pos).flatten(-3, -2) + self.token_type_embeddings.weight[0]
        return self.dropout(self.LayerNorm(x))


class ClipBertFusion(BertEncoder):
    """``transformer.bert``: BERT text embeddings, visual embeddings, encoder and tanh pooler."""

    def __init__(self, cfg: ClipBertConfig):
        super().__init__(cfg.bert)
        self.visual_embeddings = VisualInputEmbedding(cfg)
        self.pooler = nn.Module()
        self.pooler.dense = nn.Linear(cfg.bert.hidden_size, cfg.bert.hidden_size)
        self.visual_embeddings.apply(self._init_weights)
        self.pooler.apply(self._init_weights)

    def fuse(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, visual: torch.Tensor,
             visual_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sequence ``(M, Lt + V, H)`` and pooled ``(M, H)`` for texts and their visual tokens."""
        x = torch.cat([self.embeddings(input_ids), visual], dim=1)
        mask = torch.cat([attention_mask.bool(), visual_mask.bool()], dim=1)
        seq = self.encode(x, mask)
        return seq, torch.tanh(self.pooler.dense(seq[:, 0]))


class MlpHead(nn.Sequential):
    """``classifier``: Linear(H, 2H) -> ReLU -> Linear(2H, C) (indices 0 and 2 as the original)."""

    def __init__(self, hidden: int, num_labels: int):
        super().__init__(nn.Linear(hidden, 2 * hidden), nn.ReLU(inplace=True), nn.Linear(2 * hidden, num_labels))


class PretrainingHeads(nn.Module):
    """``cls``: the MLM head (decoder tied to the word embeddings) and ITM (``seq_relationship``)."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.predictions = BertMLMHead(cfg, tied=True)
        self.seq_relationship = nn.Linear(cfg.hidden_size, 2)

    def mlm(self, text_seq: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        return self.predictions(text_seq, word_embeddings)


class ClipBert(nn.Module):
    """End-to-end ClipBERT. ``forward(frames, input_ids, attention_mask, ...)`` scores every
    text row against the clips of its video (``video_index``); :meth:`encode_visual` and
    :meth:`score` split that in two so that retrieval runs the CNN once per video."""

    def __init__(self, cfg: ClipBertConfig):
        super().__init__()
        self.config = cfg
        self.cnn = GridEncoder(cfg)
        self.transformer = nn.Module()
        self.transformer.bert = ClipBertFusion(cfg)
        if cfg.task == "pretrain":
            self.transformer.cls = PretrainingHeads(cfg.bert)
            self.transformer.cls.apply(self.transformer.bert._init_weights)
        else:
            self.transformer.classifier = MlpHead(cfg.bert.hidden_size, cfg.num_labels)
            self.transformer.classifier.apply(self.transformer.bert._init_weights)
        self.head_dropout = nn.Dropout(cfg.bert.hidden_dropout_prob)

    # -- visual side -----------------------------------------------------------------------------

    def encode_visual(self, frames: torch.Tensor, pixel_mask: torch.Tensor | None = None,
                      generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames ``(B, N, T, 3, L, L)`` -> visual tokens ``(B, N, V, H)`` and mask ``(B, V)``.

        ``pixel_mask`` ``(B, L, L)`` (or ``(L, L)``) is True on real pixels; with
        ``visual_padding_mask`` a token is masked when its whole grid cell is padding.
        """
        if frames.dim() != 6 or frames.shape[3] != 3:
            raise ValueError(f"expected frames (B, N, T, 3, L, L), got {tuple(frames.shape)}")
        b, n, t = frames.shape[:3]
        grid = self.cnn(frames.flatten(0, 2))  # (B*N*T, H, h, w)
        hidden, h, w = grid.shape[1:]
        grid = grid.view(b, n, t, hidden, h, w).mean(2).permute(0, 1, 3, 4, 2)  # clip mean
        tokens = self.transformer.bert.visual_embeddings(grid)  # (B, N, h*w, H)
        mask = torch.ones(b, h * w, dtype=torch.bool, device=tokens.device)
        if pixel_mask is not None and self.config.visual_padding_mask:
            pm = pixel_mask.expand(b, *pixel_mask.shape[-2:]) if pixel_mask.dim() == 2 else pixel_mask
            cells = F.adaptive_max_pool2d(pm[:, None].to(tokens.dtype), (h, w))
            mask = cells.flatten(1) > 0
        k = self.config.pixel_random_sampling_size
        if self.training and k is not None and k < h * w:
            # One random sorted subset for the whole batch (Pixel-BERT style sampling).
            keep = torch.randperm(h * w, generator=generator)[:k].sort().values.to(tokens.device)
            tokens, mask = tokens[:, :, keep], mask[:, keep]
        return tokens, mask

    # -- fusion and heads ------------------------------------------------------------------------

    def score(self, visual: torch.Tensor, visual_mask: torch.Tensor, input_ids: torch.Tensor,
              attention_mask: torch.Tensor, video_index: torch.Tensor | None = None,
              mlm: bool | None = None) -> dict[str, torch.Tensor]:
        """Score text rows ``(M, Lt)`` against the clips of video ``video_index[m]``.

        ``visual`` ``(B, N, V, H)``; ``video_index`` ``(M,)`` (default: row m is video m). Each
        clip is fused with the text separately (all M*N pairs in one batch); scores are then
        combined over clips by the configured consensus.

        Returns a dict: ``clip_logits`` ``(M, N, C)`` and ``logits`` ``(M, C)`` (after
        consensus); for pretraining ``itm_clip_logits``, ``itm_logits`` and, unless
        ``mlm=False``, ``mlm_logits`` ``(M, Lt, vocab)`` over the text positions.
        """
        m, n = input_ids.shape[0], visual.shape[1]
        if video_index is None:
            if visual.shape[0] != m:
                raise ValueError(f"{m} text rows for {visual.shape[0]} videos: give video_index")
            video_index = torch.arange(m, device=visual.device)
        vis = visual[video_index].flatten(0, 1)  # (M*N, V, H)
        vmask = visual_mask[video_index].repeat_interleave(n, dim=0)
        ids = input_ids.repeat_interleave(n, dim=0)
        amask = attention_mask.repeat_interleave(n, dim=0)
        bert = self.transformer.bert
        seq, pooled = bert.fuse(ids, amask, vis, vmask)
        if self.config.task == "pretrain":
            cls = self.transformer.cls
            clip_itm = cls.seq_relationship(pooled).view(m, n, 2)
            out = {"itm_clip_logits": clip_itm, "itm_logits": clip_consensus(clip_itm, self.config.consensus)}
            if mlm is not False:
                # MLM on the first clip's text positions only (images: the only clip).
                text_seq = seq.view(m, n, *seq.shape[1:])[:, 0, : input_ids.shape[1]]
                out["mlm_logits"] = cls.mlm(text_seq, bert.embeddings.word_embeddings.weight)
            return out
        clip_logits = self.transformer.classifier(self.head_dropout(pooled)).view(m, n, -1)
        return {"clip_logits": clip_logits, "logits": clip_consensus(clip_logits, self.config.consensus)}

    def forward(self, frames: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                pixel_mask: torch.Tensor | None = None, video_index: torch.Tensor | None = None,
                mlm: bool | None = None) -> dict[str, torch.Tensor]:
        """Frames ``(B, N, T, 3, L, L)`` of B videos, text rows ``(M, Lt)``; see :meth:`score`."""
        visual, vmask = self.encode_visual(frames, pixel_mask)
        return self.score(visual, vmask, input_ids, attention_mask, video_index, mlm=mlm)

    def example_inputs(self, batch_size: int = 2) -> dict[str, torch.Tensor]:
        """Random valid inputs: 2 clips x 2 frames per video, 6 text tokens, some padding."""
        cfg = self.config
        s = cfg.frame_size
        g = torch.Generator().manual_seed(0)
        frames = torch.rand(batch_size, 2, 2, 3, s, s, generator=g) * 255
        pixel_mask = torch.ones(batch_size, s, s, dtype=torch.bool)
        pixel_mask[:, s // 2 + s // 4:] = False  # a letterboxed frame: bottom quarter is padding
        ids = torch.randint(5, cfg.bert.vocab_size, (batch_size, 6), generator=g)
        attention_mask = torch.ones_like(ids, dtype=torch.bool)
        attention_mask[-1, 4:] = False
        return {"frames": frames, "input_ids": ids, "attention_mask": attention_mask,
                "pixel_mask": pixel_mask}


# Registry entry (videolang.models.registry) and shrink overrides for the generic registry test.
ARCHITECTURES = {"clipbert": (ClipBertConfig.from_dict, ClipBert)}
TEST_OVERRIDES: dict[str, Any] = {
    "backbone.blocks": [1, 1, 1], "backbone.stem_channels": 8, "backbone.width": 4,
    "backbone.res5_dilation": 2, "frame_size": 32,
    "bert.hidden_size": 32, "bert.num_hidden_layers": 1, "bert.num_attention_heads": 4,
    "bert.intermediate_size": 64, "bert.vocab_size": 128, "bert.max_position_embeddings": 64,
    "max_grid": 16,
}
