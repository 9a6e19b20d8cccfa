"""VLM: one BERT encoder over ``[CLS] video [SEP] text`` (Xu et al., 2021; MMPT ``MMFusionMTM``).

:class:`VLM` runs the joint pass (full attention or :func:`isolated_mask`), the isolated halves
for retrieval / multiple choice (:meth:`VLM.encode_video`, :meth:`VLM.encode_text`), captioning
(:func:`textgen_mask`, :meth:`VLM.generate`), segmentation and masked token modelling. Every
pass pads the video to ``max_video_len`` slots, as MMPT's aligner does, so an output does not
depend on its batch. Layout and the differences from the original: docs/vlm.md.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
from torch import nn

from videolang.config_types import dataclass_from_dict
from videolang.errors import ConfigError
from videolang.models.bert import BertConfig, BertEncoder, BertMLMHead
from videolang.models.layers import masked_mean
from videolang.models.videoclip import VideoTokenMLP, pad_video_rows
from videolang.models.weights import load_strict

__all__ = ["VLM", "VLMConfig", "isolated_mask", "textgen_mask"]


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
    # A local BERT directory or "minilm": the encoder starts from its first
    # bert.num_hidden_layers layers (the original starts from bert-base-uncased).
    text_pretrained: str | None = None
    num_classes: int = 0  # > 0 adds the per-token classifier (action segmentation)
    # Standardize input features per dimension with stored statistics (buffers feature_mean /
    # feature_std, set by the recipes from the feature store). Off in the original.
    standardize_features: bool = False
    classifier_dropout: float = 0.1

    @classmethod
    def from_dict(cls, d: dict) -> VLMConfig:
        d = dict(d)
        if isinstance(d.get("bert"), dict):
            d["bert"] = BertConfig.from_dict(d["bert"], source="VLM config 'bert'")
        return dataclass_from_dict(cls, d, "VLM config", ignore=("architecture", "model_type"))

    def to_dict(self) -> dict:
        return {**asdict(self), "architecture": "vlm"}


def isolated_mask(cmasks: torch.Tensor, vmasks: torch.Tensor) -> torch.Tensor:
    """(B, L, L) bool: [CLS] sees itself; video + video [SEP] see valid video + [SEP]; text sees
    valid text. Padding rows see what their block sees (they are ignored anyway)."""
    b, tv = vmasks.shape
    valid = torch.cat([cmasks[:, :1], vmasks, cmasks[:, 1:]], 1).bool()
    group = torch.cat([torch.zeros(b, 1), torch.ones(b, tv + 1), torch.full((b, cmasks.shape[1] - 2), 2.0)], 1)
    group = group.to(valid.device)
    same = group[:, :, None] == group[:, None, :]
    return same & valid[:, None, :]


def textgen_mask(cmasks: torch.Tensor, vmasks: torch.Tensor) -> torch.Tensor:
    """(B, L, L) bool for generation (MMPT ``_build_textgeneration_mask``): [CLS], video and the
    video's [SEP] see [CLS] + valid video + [SEP]; text row r sees that prefix and the valid text
    positions <= r (causal). Padding rows see what the [CLS] row sees."""
    b, tv = vmasks.shape
    valid = torch.cat([cmasks[:, :1], vmasks, cmasks[:, 1:]], 1).bool()
    length = valid.shape[1]
    prefix = torch.zeros(length, dtype=torch.bool, device=valid.device)
    prefix[: tv + 2] = True
    causal = torch.ones(length, length, dtype=torch.bool, device=valid.device).tril()
    text_rows = ~prefix
    allowed = prefix[None, :] | (text_rows[:, None] & text_rows[None, :] & causal)  # (L, L)
    mask = allowed[None] & valid[:, None, :]
    cls_row = mask[:, :1, :].expand(b, length, length)
    return torch.where(valid[:, :, None], mask, cls_row)


class VLM(nn.Module):
    def __init__(self, cfg: VLMConfig):
        super().__init__()
        self.config = cfg
        self.videomlp = VideoTokenMLP(cfg.feature_dim, cfg.bert.hidden_size)
        self.bert = BertEncoder(cfg.bert)
        self.cls = nn.Module()
        self.cls.predictions = BertMLMHead(cfg.bert, tied=False, bias=False)  # MMPT: untied, no bias
        if cfg.standardize_features:
            self.register_buffer("feature_mean", torch.zeros(cfg.feature_dim))
            self.register_buffer("feature_std", torch.ones(cfg.feature_dim))
        if cfg.num_classes > 0:
            self.classifier = nn.Sequential(nn.Dropout(cfg.classifier_dropout),
                                            nn.Linear(cfg.bert.hidden_size, cfg.num_classes))
        if cfg.text_pretrained:
            self._load_pretrained_bert(cfg.text_pretrained)

    def _load_pretrained_bert(self, name: str) -> None:
        from videolang.models.videoclip import resolve_pretrained_dir

        path = resolve_pretrained_dir(name)
        bert = BertEncoder.from_pretrained(path, num_hidden_layers=self.config.bert.num_hidden_layers)
        if bert.config != self.config.bert:
            raise ConfigError(f"{path}: its BERT config differs from the VLM's bert section "
                              f"({bert.config} vs {self.config.bert})")
        load_strict(self.bert, bert.state_dict(), source=str(path))
        # The MLM transform starts as identity-ish; the decoder shares nothing (no bias, as MMPT).
        self.cls.predictions.decoder.weight.data.copy_(bert.embeddings.word_embeddings.weight)

    def standardize(self, vfeats: torch.Tensor) -> torch.Tensor:
        """Features as the video MLP sees them (per-dimension standardized when configured)."""
        if not self.config.standardize_features:
            return vfeats
        return (vfeats - self.feature_mean) / self.feature_std

    def set_feature_statistics(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        if not self.config.standardize_features:
            raise ConfigError("this VLM does not standardize features (standardize_features is false)")
        self.feature_mean.copy_(mean)
        self.feature_std.copy_(std.clamp(min=1e-6))

    def example_inputs(self, batch_size: int = 2) -> dict[str, torch.Tensor]:
        """Random valid inputs for ``forward`` (registry tests)."""
        cfg = self.config
        frames = min(4, cfg.max_video_len)
        vocab = cfg.bert.vocab_size
        caps = torch.randint(0, vocab, (batch_size, 7))
        caps[:, 0], caps[:, 1], caps[:, -1] = cfg.cls_token_id % vocab, cfg.sep_token_id % vocab, cfg.sep_token_id % vocab
        lengths = torch.arange(batch_size) % frames + 1
        return {"caps": caps, "cmasks": torch.ones_like(caps, dtype=torch.bool),
                "vfeats": torch.randn(batch_size, frames, cfg.feature_dim),
                "vmasks": torch.arange(frames)[None] < lengths[:, None]}

    def pad_video(self, vfeats: torch.Tensor, vmasks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features and mask zero-padded / masked to ``max_video_len`` slots (module docstring)."""
        return pad_video_rows(vfeats, vmasks.bool(), self.config.max_video_len)

    def embed(self, caps, cmasks, vfeats, vmasks, *, standardized: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Joint embeddings (after position/type embeddings and LayerNorm) and the key mask,
        the video padded to ``max_video_len`` slots."""
        vfeats, vmasks = self.pad_video(vfeats, vmasks)
        b, tv, _ = vfeats.shape
        words = self.bert.embeddings.word_embeddings
        tokens = self.videomlp(vfeats if standardized else self.standardize(vfeats))
        embeds = torch.cat([words(caps[:, :1]), tokens, words(caps[:, 1:])], 1)
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
        vfeats, vmasks = self.pad_video(vfeats, vmasks)
        video_label, _ = pad_video_rows(video_label.bool().unsqueeze(-1), vmasks[:, : video_label.shape[1]],
                                        self.config.max_video_len)
        video_label = video_label.squeeze(-1) & vmasks
        vfeats = self.standardize(vfeats)
        masked_in = vfeats.masked_fill(video_label.unsqueeze(-1), 0.0)
        x, keys = self.embed(caps, cmasks, masked_in, vmasks, standardized=True)
        hidden = self.bert.encode(x, keys)
        tv = vfeats.shape[1]
        head = self.cls.predictions
        tokens_in = self.videomlp(masked_in)
        negatives = tokens_in[vmasks.bool() & ~video_label]  # (N_nm, H) non-masked valid frames
        targets = self.videomlp(vfeats)[video_label]  # the masked frames' original tokens
        gv = head.transform(hidden[:, 1 : tv + 1][video_label])
        video_logits = torch.cat([(gv * targets).sum(-1, keepdim=True), gv @ negatives.t(), head.decode(gv)], 1)
        pad = torch.full((caps.shape[0], tv), -100, dtype=text_label.dtype, device=text_label.device)
        joint_label = torch.cat([text_label[:, :1], pad, text_label[:, 1:]], 1)
        chosen = joint_label != -100
        gt = head.transform(hidden[chosen])
        text_logits = torch.cat([head.decode(gt), gt @ negatives.t()], 1)
        return video_logits, text_logits, joint_label[chosen]

    # -- isolated halves: retrieval, multiple-choice QA, segmentation ---------------------------

    def video_hidden(self, vfeats: torch.Tensor, vmasks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The video half alone: hidden states of ``v1..vT [SEP]`` (B, T+1, H) and their mask,
        at the joint layout's positions 1..T+1, token type 0, with ``T = max_video_len`` (the
        video padded first)."""
        vfeats, vmasks = self.pad_video(vfeats, vmasks)
        b, tv, _ = vfeats.shape
        words = self.bert.embeddings.word_embeddings
        sep = words(torch.full((b, 1), self.config.sep_token_id, device=vfeats.device))
        embeds = torch.cat([self.videomlp(self.standardize(vfeats)), sep], 1)
        positions = torch.arange(1, tv + 2, device=vfeats.device).expand(b, -1)
        types = torch.zeros(b, tv + 1, dtype=torch.long, device=vfeats.device)
        x = self.bert.embeddings(inputs_embeds=embeds, token_type_ids=types, position_ids=positions)
        keys = torch.cat([vmasks.bool(), torch.ones(b, 1, dtype=torch.bool, device=vfeats.device)], 1)
        return self.bert.encode(x, keys), keys

    def text_hidden(self, caps: torch.Tensor, cmasks: torch.Tensor,
                    video_len: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The text half alone: hidden states of ``caps[:, 2:]`` (words, [SEP], padding) at
        positions ``video_len + 2 ...`` (default ``max_video_len``), token type 1."""
        tv = self.config.max_video_len if video_len is None else video_len
        ids, keys = caps[:, 2:], cmasks[:, 2:].bool()
        length = int(keys.sum(1).max().clamp(min=1))  # all-padding columns change nothing
        ids, keys = ids[:, :length], keys[:, :length]
        b = ids.shape[0]
        positions = torch.arange(tv + 2, tv + 2 + length, device=ids.device).expand(b, -1)
        types = torch.ones_like(ids)
        x = self.bert.embeddings(ids, token_type_ids=types, position_ids=positions)
        return self.bert.encode(x, keys), keys

    @staticmethod
    def _segment_means(hidden: torch.Tensor, keys: torch.Tensor, segments: int) -> torch.Tensor:
        """(B, segments, H): means of the valid tokens cut, in sequence order, into ``segments``
        runs of (nearly) equal length; a run with no token (fewer tokens than runs) is zero."""
        k = keys.to(hidden.dtype)
        count = k.sum(1, keepdim=True).clamp(min=1.0)
        rank = k.cumsum(1) - 1.0  # the rank of each valid token among the valid ones
        run = (rank * segments / count).floor().clamp(0, segments - 1).long()
        weights = nn.functional.one_hot(run, segments).to(hidden.dtype) * k.unsqueeze(-1)  # (B, L, S)
        sums = torch.einsum("bls,blh->bsh", weights, hidden)
        return sums / weights.sum(1).clamp(min=1.0).unsqueeze(-1)

    def _pool(self, hidden: torch.Tensor, keys: torch.Tensor, segments: int) -> torch.Tensor:
        if segments <= 0:
            return masked_mean(hidden, keys)
        parts = torch.cat([masked_mean(hidden, keys).unsqueeze(1), self._segment_means(hidden, keys, segments)], 1)
        parts = nn.functional.normalize(parts, dim=-1) / (1 + segments) ** 0.5
        return parts.flatten(1)

    def encode_video(self, vfeats: torch.Tensor, vmasks: torch.Tensor | None = None, *,
                     segments: int = 0) -> torch.Tensor:
        """Pooled video embedding (B, H): mean of the valid video tokens and the video's [SEP].

        ``segments = S > 0``: an order-aware embedding (B, (1 + S) * H), the L2-normalized mean
        followed by the L2-normalized means of S consecutive runs of the tokens (the first
        S-th of the video, the next, ...), all scaled by ``1 / sqrt(1 + S)``: a unit vector
        whose dot product with :meth:`encode_text`'s of the same S is the average of the
        whole-sequence cosine and the S run-to-run cosines. A mean over the whole video cannot
        tell "A then B" from "B then A"; the runs can, for captions that narrate in order (not
        in the original)."""
        if vmasks is None:
            vmasks = torch.ones(vfeats.shape[:2], dtype=torch.bool, device=vfeats.device)
        return self._pool(*self.video_hidden(vfeats, vmasks), segments)

    def encode_text(self, caps: torch.Tensor, cmasks: torch.Tensor | None = None, *,
                    segments: int = 0) -> torch.Tensor:
        """Pooled text embedding (B, H) of ``[CLS] [SEP] words [SEP] [PAD]..`` (MMPT layout):
        mean of the words and the final [SEP]; ``segments``: as :meth:`encode_video`, the runs
        cut over the words (and the final [SEP])."""
        if cmasks is None:
            cmasks = caps != self.config.pad_token_id
        return self._pool(*self.text_hidden(caps, cmasks), segments)

    def match_scores(self, caps: torch.Tensor, cmasks: torch.Tensor, vfeats: torch.Tensor,
                     vmasks: torch.Tensor, pooling: Literal["cls", "text"] = "cls") -> torch.Tensor:
        """(B,) video-text match logits: the one-output classifier on a full-attention pass,
        read at [CLS] (``pooling="cls"``) or on the mean of the text states (words and final
        [SEP], which in this pass have seen the video; ``"text"``)."""
        if self.config.num_classes != 1:
            raise ConfigError(f"match_scores needs a one-output classifier, this VLM has num_classes="
                              f"{self.config.num_classes}")
        hidden = self(caps, cmasks, vfeats, vmasks)
        if pooling == "cls":
            pooled = hidden[:, 0]
        else:
            tv = self.config.max_video_len
            pooled = masked_mean(hidden[:, tv + 2 :], cmasks[:, 2:].bool())
        return self.classifier(pooled).squeeze(-1)

    def segment_logits(self, vfeats: torch.Tensor, vmasks: torch.Tensor) -> torch.Tensor:
        """Per-video-token class logits (B, T, num_classes) from the video half (T: the given
        slots; the video is padded to ``max_video_len`` inside)."""
        if self.config.num_classes <= 0:
            raise ConfigError("this VLM has no classifier: build it with num_classes > 0")
        hidden, _ = self.video_hidden(vfeats, vmasks)
        return self.classifier(hidden[:, : vfeats.shape[1]])

    # -- captioning ---------------------------------------------------------------------------

    def caption_logits(self, caps: torch.Tensor, cmasks: torch.Tensor, vfeats: torch.Tensor,
                       vmasks: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits (B, Lt, V) at the text positions ``caps[:, 2:]`` under
        :func:`textgen_mask`: position j predicts ``caps[:, 3 + j]`` (teacher forcing, with
        ``caps = [CLS] [SEP] [BOS] w1 .. wn [SEP]`` where [BOS] is [CLS], as MMPT)."""
        vfeats, vmasks = self.pad_video(vfeats, vmasks)
        x, _ = self.embed(caps, cmasks, vfeats, vmasks)
        hidden = self.bert.encode(x, textgen_mask(cmasks, vmasks))
        tv = vfeats.shape[1]
        head = self.cls.predictions
        return head.decode(head.transform(hidden[:, tv + 2 :]))

    def _next_token_logp(self, seqs: torch.Tensor, feats: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        logits = self.caption_logits(seqs, torch.ones_like(seqs, dtype=torch.bool), feats, masks)[:, -1]
        logp = logits.float().log_softmax(-1)
        cfg = self.config
        logp[:, [cfg.pad_token_id, cfg.cls_token_id, cfg.mask_token_id]] = float("-inf")
        return logp

    def _greedy(self, vfeats: torch.Tensor, vmasks: torch.Tensor, max_length: int) -> list[list[int]]:
        cfg = self.config
        b = vfeats.shape[0]
        prefix = torch.tensor([cfg.cls_token_id, cfg.sep_token_id, cfg.cls_token_id], device=vfeats.device)
        seqs = prefix.expand(b, -1).clone()
        open_rows = torch.ones(b, dtype=torch.bool, device=vfeats.device)
        for _ in range(max_length):
            token = self._next_token_logp(seqs, vfeats, vmasks).argmax(-1)
            token = torch.where(open_rows, token, torch.full_like(token, cfg.sep_token_id))
            seqs = torch.cat([seqs, token[:, None]], 1)
            open_rows &= token != cfg.sep_token_id
            if not bool(open_rows.any()):
                break
        out = []
        for row in seqs[:, 3:].tolist():
            out.append(row[: row.index(cfg.sep_token_id)] if cfg.sep_token_id in row else row)
        return out

    @torch.no_grad()
    def generate(self, vfeats: torch.Tensor, vmasks: torch.Tensor, *, max_length: int = 24,
                 num_beams: int = 1, length_penalty: float = 1.0) -> list[list[int]]:
        """Token ids of one caption per video (without [BOS]/[SEP]): greedy when
        ``num_beams == 1`` (stops at the first [SEP]), else beam search (hypotheses ranked by
        summed log-probability over ``length ** length_penalty``). Each step re-runs the joint
        sequence (no cache). Each video's search stops on its own, so a caption does not
        depend on the other videos of the batch."""
        vfeats, vmasks = self.pad_video(vfeats, vmasks)
        if num_beams <= 1:
            return self._greedy(vfeats, vmasks, max_length)
        cfg = self.config
        b, device = vfeats.shape[0], vfeats.device
        k = int(num_beams)
        feats = vfeats.repeat_interleave(k, 0)
        masks = vmasks.repeat_interleave(k, 0)
        prefix = torch.tensor([cfg.cls_token_id, cfg.sep_token_id, cfg.cls_token_id], device=device)
        seqs = prefix.expand(b * k, -1).clone()
        scores = torch.zeros(b, k, device=device)
        scores[:, 1:] = float("-inf")  # all beams start identical: expand from the first only
        finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(b)]
        stopped = [False] * b
        for step in range(max_length):
            logp = self._next_token_logp(seqs, feats, masks)
            if step == max_length - 1:  # the last step must end the caption
                sep = logp[:, cfg.sep_token_id].clone()
                logp.fill_(float("-inf"))
                logp[:, cfg.sep_token_id] = sep
            logp[~torch.isfinite(scores.reshape(-1))] = float("-inf")  # dead or stopped beams
            seqs, scores = self._beam_step(seqs, scores, logp, finished, length_penalty)
            # A video stops when it has k finished hypotheses and its best one beats every open
            # one at the current length (the usual heuristic); its beams are then dead.
            best_open = scores.max(1).values / (seqs.shape[1] - 2) ** length_penalty
            for i in range(b):
                if not stopped[i] and len(finished[i]) >= k and max(s for s, _ in finished[i]) >= float(best_open[i]):
                    stopped[i] = True
                    scores[i] = float("-inf")
            if not bool(torch.isfinite(scores).any()):
                break
        return [max(f, key=lambda t: t[0])[1] if f else [] for f in finished]

    def _beam_step(self, seqs: torch.Tensor, scores: torch.Tensor, logp: torch.Tensor,
                   finished: list[list[tuple[float, list[int]]]], length_penalty: float
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """One beam-search step: the k best continuations of each video's beams; those ending
        in [SEP] go to ``finished`` (with their length-normalised score)."""
        sep_id = self.config.sep_token_id
        b, k = scores.shape
        vocab = logp.shape[-1]
        total = (scores.reshape(-1, 1) + logp).reshape(b, k * vocab)
        top, idx = total.topk(2 * k, dim=1)
        beam, token = idx // vocab, idx % vocab
        new_seqs, new_scores = [], torch.full((b, k), float("-inf"), device=scores.device)
        for i in range(b):
            rows: list[torch.Tensor] = []
            for j in range(2 * k):
                if not torch.isfinite(top[i, j]) or len(rows) == k:
                    break
                src = i * k + int(beam[i, j])
                if int(token[i, j]) == sep_id:
                    words = seqs[src, 3:].tolist()
                    finished[i].append((float(top[i, j]) / max(1, len(words) + 1) ** length_penalty, words))
                    continue
                new_scores[i, len(rows)] = top[i, j]
                rows.append(torch.cat([seqs[src], token[i, j : j + 1]]))
            while len(rows) < k:  # pad with a dead hypothesis
                rows.append(torch.cat([seqs[i * k], seqs.new_tensor([sep_id])]))
            new_seqs.extend(rows)
        return torch.stack(new_seqs), new_scores


TEST_OVERRIDES = {
    "bert.hidden_size": 32, "bert.num_attention_heads": 4, "bert.intermediate_size": 64,
    "bert.num_hidden_layers": 1, "bert.vocab_size": 128, "bert.max_position_embeddings": 64,
    "text_pretrained": None, "feature_dim": 24, "max_video_len": 8,
}
ARCHITECTURES = {"vlm": (VLMConfig.from_dict, VLM)}
