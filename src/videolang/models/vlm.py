"""VLM: one BERT encoder over ``[CLS] video [SEP] text`` (``videoclip_vlm.md`` §3).

Sequence layout (MMPT ``MMBertEmbeddings``): the word embedding of ``caps[:, 0]`` ([CLS]), the
video tokens ``videomlp(features)``, then the word embeddings of ``caps[:, 1:]`` (the video's
[SEP], the words, the text's [SEP], padding). Positions run 0..L-1 over the joint sequence;
token type 0 for [CLS] + video + [SEP], 1 for the text.

Masked token modelling (MTM, §3.3): masked frames are zeroed before ``videomlp``; a masked frame
is classified among [its own original ``videomlp`` token, every non-masked valid frame token of
the batch, the vocabulary]; a masked word among [the vocabulary, the non-masked frame tokens].
:func:`videolang.losses.mtm_loss` adds the original's constant zero logit to the word rows
(parity) and takes one mean cross-entropy over all masked frames and words.

Attention: full (key padding), or :func:`isolated_mask`, where [CLS], the video (+ its [SEP])
and the text cannot see each other; that equals separate passes with shared weights (tested).
The original zeroed masked features in place on the caller's tensor; we do not.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from videolang.errors import ConfigError
from videolang.models.bert import IGNORED_KEYS, BertConfig, BertEncoder
from videolang.models.videoclip import VideoTokenMLP
from videolang.models.weights import load_strict

__all__ = ["VLM", "VLMConfig", "convert_mmpt_vlm_state_dict", "isolated_mask"]


@dataclass
class VLMConfig:
    feature_dim: int = 512
    max_video_len: int = 32
    bert: BertConfig = field(default_factory=BertConfig)
    cls_token_id: int = 101
    sep_token_id: int = 102
    pad_token_id: int = 0
    mask_token_id: int = 103
    tokenizer: str = "minilm"

    @classmethod
    def from_dict(cls, d: dict) -> VLMConfig:
        d = {k: v for k, v in d.items() if k not in ("architecture", "model_type")}
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"unknown VLM config keys: {', '.join(unknown)}")
        if isinstance(d.get("bert"), dict):
            d["bert"] = BertConfig.from_dict(d["bert"], source="VLM config 'bert'")
        return cls(**d)

    def to_dict(self) -> dict:
        return {**asdict(self), "architecture": "vlm"}


class MTMPredictions(nn.Module):
    """BERT's prediction head (dense, GELU, LayerNorm) and a bias-free vocabulary decoder."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.transform = nn.Module()
        self.transform.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.transform.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.decoder = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        return self.transform.LayerNorm(nn.functional.gelu(self.transform.dense(x)))


def isolated_mask(cmasks: torch.Tensor, vmasks: torch.Tensor) -> torch.Tensor:
    """(B, L, L) bool: [CLS] sees itself; video + video [SEP] see valid video + [SEP]; text sees
    valid text. Padding rows see what their block sees (they are ignored anyway)."""
    b, tv = vmasks.shape
    valid = torch.cat([cmasks[:, :1], vmasks, cmasks[:, 1:]], 1).bool()
    group = torch.cat([torch.zeros(b, 1), torch.ones(b, tv + 1), torch.full((b, cmasks.shape[1] - 2), 2.0)], 1)
    group = group.to(valid.device)
    same = group[:, :, None] == group[:, None, :]
    return same & valid[:, None, :]


class VLM(nn.Module):
    def __init__(self, cfg: VLMConfig):
        super().__init__()
        self.config = cfg
        self.videomlp = VideoTokenMLP(cfg.feature_dim, cfg.bert.hidden_size)
        self.bert = BertEncoder(cfg.bert)
        self.cls = nn.Module()
        self.cls.predictions = MTMPredictions(cfg.bert)

    def embed(self, caps, cmasks, vfeats, vmasks) -> tuple[torch.Tensor, torch.Tensor]:
        """Joint embeddings (after position/type embeddings and LayerNorm) and the key mask."""
        b, tv, _ = vfeats.shape
        if tv > self.config.max_video_len:
            raise ValueError(f"{tv} video tokens exceed max_video_len={self.config.max_video_len}")
        words = self.bert.embeddings.word_embeddings
        embeds = torch.cat([words(caps[:, :1]), self.videomlp(vfeats), words(caps[:, 1:])], 1)
        length = embeds.shape[1]
        types = torch.ones(b, length, dtype=torch.long, device=caps.device)
        types[:, : tv + 2] = 0
        keys = torch.cat([cmasks[:, :1], vmasks, cmasks[:, 1:]], 1).bool()
        return self.bert.embeddings(inputs_embeds=embeds, token_type_ids=types), keys

    def forward(self, caps, cmasks, vfeats, vmasks, attention_mask=None) -> torch.Tensor:
        """Last hidden states (B, L, H); ``attention_mask`` defaults to full attention."""
        x, keys = self.embed(caps, cmasks, vfeats, vmasks)
        return self.bert.encode(x, keys if attention_mask is None else attention_mask)

    def mtm_logits(self, caps, cmasks, vfeats, vmasks, video_label, text_label):
        """MTM logits of the masked frames ``(Nv, 1 + N_nm + V)``, of the masked words
        ``(Nt, V + N_nm)``, and the word targets ``(Nt,)``."""
        video_label = video_label.bool() & vmasks.bool()
        masked_in = vfeats.masked_fill(video_label.unsqueeze(-1), 0.0)
        hidden = self.forward(caps, cmasks, masked_in, vmasks)
        tv = vfeats.shape[1]
        head = self.cls.predictions
        tokens_in = self.videomlp(masked_in)
        negatives = tokens_in[vmasks.bool() & ~video_label]  # (N_nm, H) non-masked valid frames
        targets = self.videomlp(vfeats)[video_label]  # the masked frames' original tokens
        gv = head.hidden(hidden[:, 1 : tv + 1][video_label])
        video_logits = torch.cat([(gv * targets).sum(-1, keepdim=True), gv @ negatives.t(), head.decoder(gv)], 1)
        pad = torch.full((caps.shape[0], tv), -100, dtype=text_label.dtype, device=text_label.device)
        joint_label = torch.cat([text_label[:, :1], pad, text_label[:, 1:]], 1)
        chosen = joint_label != -100
        gt = head.hidden(hidden[chosen])
        text_logits = torch.cat([head.decoder(gt), gt @ negatives.t()], 1)
        return video_logits, text_logits, joint_label[chosen]


# MMPT keys we drop: BERT's unused pooler, the never-used seg_embeddings table, position ids.
MMPT_VLM_IGNORED = (*IGNORED_KEYS, "position_ids", "seg_embeddings.weight")


def convert_mmpt_vlm_state_dict(state: dict[str, torch.Tensor], model: VLM, *, source: str = "checkpoint") -> None:
    """Load an original ``MMFusionMTM`` state dict (``mmmodel.mm_encoder.*`` or bare) strictly."""
    for wrapper in ("model", "state_dict"):
        if isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    prefix = "mmmodel.mm_encoder."
    state = {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state.items()}
    load_strict(model, state, source=source, ignore=MMPT_VLM_IGNORED)
