"""Action-anticipation inference: the next action from a video prefix, as the student evaluated.

>>> pipe = videolang.load("runs/anticipation_student/version_0/export")   # doctest: +SKIP
>>> pipe.anticipate("kitchen.mp4", observed_until=12.0)                     # doctest: +SKIP

The student reads the feature rows that end by ``observed_until`` and predicts the action that
starts ``anticipation_gap`` seconds later; a teacher folder anticipates from the text of past
actions (:class:`AnticipationTeacherPipeline`). Details: docs/inference.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from videolang.errors import ConfigError
from videolang.pipelines.base import Pipeline, Prediction, as_video_list, top_k_predictions
from videolang.pipelines.folder import (
    TOKENIZER_DIR,
    PipelineSpec,
    StrictModel,
    VideoFeaturesSpec,
    resolve_in_folder,
)
from videolang.pipelines.inputs import VideoInput, describe_video
from videolang.pipelines.video import FeatureVideoPipeline

__all__ = [
    "ActionLabels",
    "AnticipationPipeline",
    "AnticipationSpec",
    "AnticipationTeacherPipeline",
    "HistoryTextSpec",
    "action_labels",
]

Level = Literal["action", "verb", "noun"]


class ActionLabels(StrictModel):
    """Class names: action ``i`` is ``actions[i]``, with verb ``action_verbs[i]`` and noun
    ``action_nouns[i]`` (indices into ``verbs`` / ``nouns``)."""

    actions: list[str]
    verbs: list[str]
    nouns: list[str]
    action_verbs: list[int]
    action_nouns: list[int]
    # The dataset's words for each action (``"verb <v> noun"``): the teacher's input text.
    action_texts: list[str]

    @model_validator(mode="after")
    def _consistent(self) -> ActionLabels:
        n = len(self.actions)
        if not (len(self.action_verbs) == len(self.action_nouns) == len(self.action_texts) == n):
            raise ValueError("actions, action_verbs, action_nouns and action_texts need one entry per action")
        if any(not 0 <= v < len(self.verbs) for v in self.action_verbs):
            raise ValueError("action_verbs must index verbs")
        if any(not 0 <= v < len(self.nouns) for v in self.action_nouns):
            raise ValueError("action_nouns must index nouns")
        return self


class HistoryTextSpec(StrictModel):
    """The teacher's input: the last ``hist_len`` actions joined by ``" <a> "``, word pieces
    left-truncated to ``max_len`` tokens with [CLS] and [SEP] (the newest actions are kept)."""

    tokenizer: str = TOKENIZER_DIR
    max_len: int = Field(ge=3)
    hist_len: int = Field(ge=1)


class AnticipationSpec(PipelineSpec):
    """``task``: ``anticipation`` (the video student: ``video``), ``teacher`` (the text
    teacher: ``text``) or ``mlm`` (a masked-LM-pretrained teacher encoder, not a predictor)."""

    family: Literal["anticipation"] = "anticipation"
    task: Literal["anticipation", "teacher", "mlm"] = "anticipation"
    video: VideoFeaturesSpec | None = None
    text: HistoryTextSpec | None = None
    labels: ActionLabels | None = None
    anticipation_gap: float = Field(default=1.0, ge=0)  # seconds from the observation end to the action
    # How the run scored verbs and nouns from action scores (metrics.anticipation).
    verb_noun_mode: Literal["marginalize", "decompose"] = "marginalize"

    @model_validator(mode="after")
    def _sections(self) -> AnticipationSpec:
        need = {"anticipation": ("video", "labels"), "teacher": ("text", "labels"), "mlm": ()}[self.task]
        missing = [k for k in need if getattr(self, k) is None]
        if missing:
            raise ValueError(f"task {self.task!r} needs the section(s) {', '.join(missing)}")
        return self


def action_labels(vocab: Any) -> ActionLabels:
    """:class:`ActionLabels` of a :class:`~videolang.data.anticipation.ActionVocab`.

    Action names are the dataset's action text without the ``<v>`` marker; a verb (noun) is
    named by the words before (after) the marker in its first action (``"verb 3"`` when no
    action names it)."""
    marker = " <v> "
    verbs = [f"verb {i}" for i in range(vocab.num_verbs)]
    nouns = [f"noun {i}" for i in range(vocab.num_nouns)]
    for text, v, n in zip(reversed(vocab.texts), reversed(vocab.verbs), reversed(vocab.nouns), strict=True):
        if marker in text:
            verbs[v], _, nouns[n] = text.partition(marker)
    return ActionLabels(actions=[t.replace(marker, " ") for t in vocab.texts], verbs=verbs, nouns=nouns,
                        action_verbs=list(vocab.verbs), action_nouns=list(vocab.nouns),
                        action_texts=list(vocab.texts))


def part_probabilities(probs: torch.Tensor, labels: ActionLabels, level: Level, mode: str) -> tuple[torch.Tensor, list[str]]:
    """Action probabilities ``(N, A)`` as ``level`` scores and their names.

    ``marginalize`` sums the probabilities of each verb's (noun's) actions (RULSTM, what the
    run's ``verb_top1`` ranked); ``decompose`` scores a verb by its best action, so the top
    verb is the top action's verb (the anticipation repo's convention)."""
    if level == "action":
        return probs, labels.actions
    if level not in ("verb", "noun"):
        raise ValueError(f"level must be 'action', 'verb' or 'noun', got {level!r}")
    mapping = torch.tensor(labels.action_verbs if level == "verb" else labels.action_nouns)
    names = labels.verbs if level == "verb" else labels.nouns
    out = torch.zeros(probs.shape[0], len(names), dtype=probs.dtype)
    if mode == "marginalize":
        return out.index_add_(1, mapping, probs), names
    index = mapping.expand_as(probs)
    return out.scatter_reduce_(1, index, probs, reduce="amax", include_self=True), names


def _observation_ends(observed_until: float | Sequence[float | None] | None, n: int) -> list[float | None]:
    if observed_until is None or isinstance(observed_until, (int, float)):
        return [observed_until] * n
    ends = list(observed_until)
    if len(ends) != n:
        raise ValueError(f"observed_until has {len(ends)} entries for {n} videos")
    return ends


class AnticipationPipeline(FeatureVideoPipeline):
    """The video student with its feature backbone and class names (see the module docstring).

    ``encode_video`` (inherited) gives the student's pooled feature of each window's newest
    row (what feature KD regresses onto the teacher's)."""

    family = "anticipation"
    spec_class = AnticipationSpec

    @classmethod
    def from_folder(cls, folder: Path, spec: AnticipationSpec, *, device: str | torch.device = "cpu") -> Pipeline:
        if spec.task == "mlm":
            raise ConfigError(
                f"{folder} is an anticipation.mlm export: the teacher's text encoder after masked-LM pretraining "
                "(its heads are untrained), not a predictor. Use it as model.init of anticipation.teacher; "
                "load a student export (videos) or a teacher export (past actions) with videolang.load")
        if spec.task == "teacher":
            return AnticipationTeacherPipeline.from_folder(folder, spec, device=device)
        from videolang.models import load_pretrained

        return cls(load_pretrained(folder), spec, backbone=cls.load_backbone(folder, spec.video), folder=folder,
                   device=device)

    @property
    def labels(self) -> ActionLabels:
        return self.spec.labels

    def _embed_windows(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.model(feats, mask)["features"]

    def observed_features(self, video: VideoInput, observed_until: float | None = None, *,
                          fps: float | None = None) -> torch.Tensor:
        """The rows ``(T, D)`` the student reads for ``video`` observed until ``observed_until``
        seconds (default: its end): rows ending by then, the newest ``max_len`` of them."""
        from videolang.data.anticipation import ObservedClips, Query

        rows, duration = self._features(video, fps)
        end = duration if observed_until is None else float(observed_until)
        query = Query(uid="query", video_id="video", observe_end=end, history=(), action=0, verb=0, noun=0)
        clips = ObservedClips([query], {"video": rows.numpy()}, self.video_spec.feature_rate, self.video_spec.max_len)
        try:
            return clips[0]["feats"]
        except ConfigError:
            rate = self.video_spec.feature_rate
            raise ValueError(f"{describe_video(video)}: nothing observed until {end:g} s (the first feature row "
                             f"ends at {1 / rate:g} s)") from None

    @torch.inference_mode()
    def action_logits(self, videos: VideoInput | Sequence[VideoInput], observed_until: float | Sequence[float | None] | None = None,
                      *, fps: float | None = None, batch_size: int = 64) -> torch.Tensor:
        """The student's action logits ``(N, A)`` (what the run's metrics ranked)."""
        from videolang.data.anticipation import collate_clips

        items = as_video_list(videos)
        ends = _observation_ends(observed_until, len(items))
        clips = [{"feats": self.observed_features(v, e, fps=fps), "action": 0, "verb": 0, "noun": 0, "index": i}
                 for i, (v, e) in enumerate(zip(items, ends, strict=True))]
        out = []
        for s in range(0, len(clips), batch_size):
            batch = collate_clips(clips[s : s + batch_size])
            out.append(self.model(batch["feats"].to(self.device), batch["mask"].to(self.device))["action"].float().cpu())
        return torch.cat(out) if out else torch.zeros(0, len(self.labels.actions))

    def action_probabilities(self, videos: VideoInput | Sequence[VideoInput],
                             observed_until: float | Sequence[float | None] | None = None, *,
                             fps: float | None = None) -> torch.Tensor:
        """Next-action distribution ``(N, A)`` of each video observed until ``observed_until``
        seconds (one value, or one per video; ``None``: the whole input)."""
        return self.action_logits(videos, observed_until, fps=fps).softmax(dim=-1)

    def anticipate(self, videos: VideoInput | Sequence[VideoInput], top_k: int = 5,
                   observed_until: float | Sequence[float | None] | None = None, *, level: Level = "action",
                   fps: float | None = None) -> list[list[Prediction]]:
        """The ``top_k`` most likely next actions (``level="verb"`` / ``"noun"``: verbs or nouns,
        scored as the run's ``verb_top1`` / ``noun_top1``) of each video, best first."""
        probs = self.action_probabilities(videos, observed_until, fps=fps)
        scores, names = part_probabilities(probs, self.labels, level, self.spec.verb_noun_mode)
        return top_k_predictions(scores, names, top_k)


# -- the text teacher ---------------------------------------------------------------------------


class AnticipationTeacherPipeline(Pipeline):
    """The text teacher: the next action from the names (or ids) of the past actions."""

    family = "anticipation"
    spec_class = AnticipationSpec

    def __init__(self, model: torch.nn.Module, spec: AnticipationSpec, tokenizer: Any, *, folder: Path | None = None,
                 device: str | torch.device = "cpu"):
        super().__init__(model, spec, tokenizer, folder=folder, device=device)
        self._ids = {name: i for i, name in enumerate(spec.labels.actions)}

    @classmethod
    def from_folder(cls, folder: Path, spec: AnticipationSpec, *,
                    device: str | torch.device = "cpu") -> AnticipationTeacherPipeline:
        from videolang.data.text import load_tokenizer
        from videolang.models import load_pretrained

        tokenizer = load_tokenizer(resolve_in_folder(folder, spec.text.tokenizer, "tokenizer"))
        return cls(load_pretrained(folder), spec, tokenizer, folder=folder, device=device)

    @property
    def labels(self) -> ActionLabels:
        return self.spec.labels

    def history_text(self, history: Sequence[str | int]) -> str:
        """The teacher's input for past actions (names of ``labels.actions`` or ids), oldest first."""
        from videolang.data.anticipation import ActionVocab, history_text

        ids = []
        for a in history:
            if isinstance(a, str):
                if a not in self._ids:
                    raise ValueError(f"unknown action {a!r} (see pipe.labels.actions)")
                ids.append(self._ids[a])
            elif 0 <= int(a) < len(self.labels.actions):
                ids.append(int(a))
            else:
                raise ValueError(f"action id {a} out of range [0, {len(self.labels.actions)})")
        if not ids:
            raise ValueError("the teacher needs at least one past action")
        vocab = ActionVocab(tuple(self.labels.action_texts), tuple(self.labels.action_verbs),
                            tuple(self.labels.action_nouns))
        return history_text(ids, vocab, self.spec.text.hist_len)

    @torch.inference_mode()
    def action_probabilities(self, histories: Sequence[Sequence[str | int]], *, batch_size: int = 64) -> torch.Tensor:
        """Next-action distribution ``(N, A)`` of each history (a sequence of past actions)."""
        from videolang.data.anticipation import history_token_ids

        texts = [self.history_text(h) for h in histories]
        out = []
        for s in range(0, len(texts), batch_size):
            rows = history_token_ids(self.tokenizer, texts[s : s + batch_size], self.spec.text.max_len)
            width = max(len(r) for r in rows)
            ids = torch.full((len(rows), width), self.tokenizer.pad_token_id or 0, dtype=torch.long)
            mask = torch.zeros(len(rows), width, dtype=torch.long)
            for b, r in enumerate(rows):
                ids[b, : len(r)], mask[b, : len(r)] = torch.tensor(r), 1
            logits = self.model(ids.to(self.device), mask.to(self.device))["action"]
            out.append(logits.float().cpu().softmax(dim=-1))
        return torch.cat(out) if out else torch.zeros(0, len(self.labels.actions))

    def anticipate(self, histories: Sequence[Sequence[str | int]], top_k: int = 5, *,
                   level: Level = "action") -> list[list[Prediction]]:
        """The ``top_k`` most likely next actions (or verbs / nouns) after each history."""
        probs = self.action_probabilities(histories)
        scores, names = part_probabilities(probs, self.labels, level, self.spec.verb_noun_mode)
        return top_k_predictions(scores, names, top_k)
