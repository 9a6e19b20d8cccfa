"""VIMPAC inference: action recognition (and clip features) exactly as the fine-tuning evaluated.

>>> pipe = videolang.load("runs/vimpac_synth_finetune/version_0/export")   # doctest: +SKIP
>>> pipe.classify(["a.mp4", "b.mp4"], top_k=3)                            # doctest: +SKIP

Every view of ``pipeline.json`` samples the video, ``num_clips`` clips are tokenised by the
folder's frame tokenizer (or given as :class:`Tokens`), and the softmax over all clips and views
is averaged. The protocol step by step: docs/inference.md ("What each pipeline does").
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from pydantic import Field

from videolang.errors import ConfigError, VideoDecodeError
from videolang.pipelines.base import Pipeline, Prediction, as_video_list, top_k_predictions
from videolang.pipelines.folder import PipelineSpec, StrictModel, resolve_in_folder
from videolang.pipelines.inputs import Features, Frames, VideoInput, as_video, describe_video

if TYPE_CHECKING:
    from videolang.data.vimpac import VimpacDataConfig

log = logging.getLogger(__name__)

__all__ = [
    "CONVERTED_TOKENIZER",
    "ClipSpec",
    "FrameTokenizerSpec",
    "TokenViewSpec",
    "Tokens",
    "VIMPACPipeline",
    "VIMPACSpec",
    "clip_plan",
    "converted_frame_tokenizer",
    "frame_tokenizer_files",
    "spec_for_converted",
    "stores_frame_tokenizer",
    "tokenize_videos",
    "view_from_header",
    "view_tokens",
    "write_vimpac_folder",
]

FRAME_TOKENIZER_DIR = "frame_tokenizer"
# Decoded frames held at once while tokenizing a video (bounds memory for long videos).
CHUNK_FRAMES = 64


# -- pipeline.json ---------------------------------------------------------------------------


class TokenViewSpec(StrictModel):
    """One spatial view, as a token store's header describes it (``videolang tokenize``)."""

    fps: float = Field(gt=0)  # frames per second sampled from the video
    frame_size: int = Field(ge=1)  # pixels of the square frame the tokenizer sees
    resize: int | None = Field(default=None, ge=1)  # shorter side before cropping (None: none)
    crop: Literal["top", "center", "bottom"] | None = "center"
    hflip: bool = False


class ClipSpec(StrictModel):
    """The temporal clips of the evaluation (``data.clip_len``, ``stride``, ``num_test_clips``)."""

    clip_len: int = Field(ge=1)  # frames per clip
    stride: int = Field(default=1, ge=1)  # view frames between clip frames
    num_clips: int = Field(default=1, ge=1)  # uniformly spaced clips per view
    legacy_first_clip: bool = False  # one clip: the first (the original's), not the centre one


class FrameTokenizerSpec(StrictModel):
    """The frame tokenizer that made the codes (``save_frame_tokenizer`` layout in the folder)."""

    folder: str = FRAME_TOKENIZER_DIR
    kind: str  # tokenizer_id: "vqvae" or "dalle-dvae"
    vocab_size: int = Field(ge=1)
    downsample: int = Field(ge=1)
    fingerprint: str  # of its weights, checked on load (the token stores record the same hash)


class VIMPACSpec(PipelineSpec):
    """``pipeline.json`` of a VIMPAC model folder: frame tokenizer, test views and clips, labels."""

    family: Literal["vimpac"] = "vimpac"
    # classification: a classifier with labels; features: a pretraining model (CLS)
    task: Literal["classification", "features"] = "classification"
    tokenizer: FrameTokenizerSpec | None = None  # None: videos must be given as Tokens
    views: list[TokenViewSpec] = Field(min_length=1)
    clips: ClipSpec
    labels: list[str] | None = None  # class names, one per classifier output


def view_from_header(header: Any) -> TokenViewSpec:
    """The view of a token store (:class:`~videolang.data.tokens.TokenStoreHeader`)."""
    return TokenViewSpec(fps=header.fps, frame_size=header.frame_size, resize=header.resize, crop=header.crop,
                         hflip=header.hflip)


def frame_tokenizer_files(tokenizer: Any) -> tuple[FrameTokenizerSpec, Callable[[Path], None]]:
    """The spec section of a frame tokenizer and the ``extra=`` writer that puts its weights
    (safetensors) into a model folder (:func:`~videolang.pipelines.folder.write_model_folder`)."""
    from videolang.models.frame_tokenizers import save_frame_tokenizer

    spec = FrameTokenizerSpec(kind=tokenizer.tokenizer_id, vocab_size=int(tokenizer.vocab_size),
                              downsample=int(tokenizer.downsample), fingerprint=tokenizer.fingerprint())

    def write(tmp: Path) -> None:
        save_frame_tokenizer(tokenizer, tmp / spec.folder)

    return spec, write


def load_folder_frame_tokenizer(folder: Path, spec: FrameTokenizerSpec):
    """The folder's frame tokenizer, checked against the fingerprint ``pipeline.json`` records."""
    from videolang.models.frame_tokenizers import load_frame_tokenizer

    tokenizer = load_frame_tokenizer(resolve_in_folder(folder, spec.folder, "frame tokenizer"))
    if tokenizer.fingerprint() != spec.fingerprint:
        raise ConfigError(f"{folder / spec.folder}: weights differ from the ones {folder / 'pipeline.json'} "
                          "records: not the frame tokenizer this model was trained on")
    return tokenizer


# -- inputs ----------------------------------------------------------------------------------


class Tokens:
    """A video as frame-tokenizer codes: one ``(T, h, w)`` integer array per view (or one array
    for a single view), sampled at the view's rate, as a token store of that view holds them.

    The evaluation's clips are cut from each view given; give every view of the folder's spec
    (same order) to reproduce its evaluation, fewer to average over those only."""

    def __init__(self, codes: Any):
        arrays = [codes] if _is_code_array(codes) else list(codes)
        views = []
        for i, a in enumerate(arrays):
            t = torch.from_numpy(np.asarray(a)) if not isinstance(a, torch.Tensor) else a
            if t.ndim != 3 or t.is_floating_point() or t.is_complex() or t.dtype == torch.bool or t.shape[0] == 0:
                raise ValueError(f"Tokens: view {i} must be integer codes (T, h, w) with T >= 1, "
                                 f"got {tuple(t.shape)} {t.dtype}")
            views.append(t.long())
        if not views:
            raise ValueError("Tokens: no views")
        self.views: tuple[torch.Tensor, ...] = tuple(views)

    def __repr__(self) -> str:
        return f"Tokens({', '.join(str(tuple(v.shape)) for v in self.views)})"


def _video_list(videos: Any) -> list[Any]:
    """One video (Tokens included) or a sequence of videos, as a list."""
    return [videos] if isinstance(videos, Tokens) else as_video_list(videos)


def _is_code_array(x: Any) -> bool:
    return isinstance(x, (torch.Tensor, np.ndarray)) and x.ndim == 3


def _as_input(video: Any, fps: float | None) -> Tokens | str | os.PathLike | bytes | Frames:
    """A video in canonical form; 3-d integer arrays are one view's codes."""
    if isinstance(video, Tokens):
        return video
    if _is_code_array(video) and not (video.is_floating_point() if isinstance(video, torch.Tensor)
                                      else np.issubdtype(video.dtype, np.floating)):
        return Tokens(video)
    v = as_video(video, fps)
    if isinstance(v, Features):
        raise ValueError(f"{describe_video(video)}: VIMPAC reads frames or token codes (Tokens), not feature rows")
    return v


def clip_plan(num_frames: int, clips: ClipSpec) -> tuple[np.ndarray, np.ndarray]:
    """View-frame indices ``(K, clip_len)`` of the evaluation's clips and their validity (False:
    past the end, filled with ``[PAD]``), from the data layer's sampling functions."""
    from videolang.data.sampling import vimpac_clip_indices, vimpac_clip_starts

    starts = vimpac_clip_starts(num_frames, clips.clip_len, clips.stride, mode="uniform",
                                num_clips=clips.num_clips, legacy=clips.legacy_first_clip)
    parts = [vimpac_clip_indices(num_frames, int(s), clips.clip_len, clips.stride) for s in starts]
    return np.stack([p[0] for p in parts]), np.stack([p[1] for p in parts])


def _scaled_size(width: int, height: int, resize: int | None) -> tuple[int, int] | None:
    """``(width, height)`` with the shorter side ``resize`` (longer side truncated, as
    ``resize_shorter_side`` and ffmpeg's scale); ``None``: keep the native size."""
    if resize is None or min(width, height) == resize:
        return None
    if height <= width:
        return int(width * resize / height), resize
    return resize, int(height * resize / width)


class _OpenVideo:
    """One video whose frames are read by index: decoded (scaled while decoding) or given."""

    def __init__(self, video: str | os.PathLike | bytes | Frames):
        from videolang.data.video import VideoReader

        self.reader = None
        if isinstance(video, Frames):
            self.frames: torch.Tensor | None = video.data
            self.num_frames, self.fps = video.data.shape[0], video.fps
            return
        self.frames = None
        self.reader = VideoReader(video)
        meta = self.reader.metadata
        self.num_frames, self.fps = meta.num_frames, meta.fps
        if not self.fps > 0 or self.num_frames < 1:
            self.close()
            raise VideoDecodeError(self.reader.source_name, "no frames or unknown frame rate")

    def __enter__(self) -> _OpenVideo:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def view_frames(self, view: TokenViewSpec) -> np.ndarray:
        """Indices of the video frames a view samples (the frame on screen at k / fps)."""
        from videolang.data.sampling import resample_frame_indices

        return resample_frame_indices(self.num_frames, self.fps, view.fps, rounding="down")

    def read(self, indices: np.ndarray, resize: int | None) -> torch.Tensor:
        """uint8 ``(n, H, W, 3)`` frames; decoded ones already have the shorter side ``resize``."""
        if self.frames is not None:
            return self.frames[torch.from_numpy(indices)]
        meta = self.reader.metadata
        self.reader.set_output_size(_scaled_size(meta.width, meta.height, resize))
        return self.reader.read(indices)

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()


def _encode_view_frames(opened: _OpenVideo, tokenizer: torch.nn.Module, views: Sequence[TokenViewSpec],
                        wanted: Sequence[np.ndarray], *, device: str | torch.device = "cpu"
                        ) -> list[dict[int, torch.Tensor]]:
    """Codes ``{view frame: (h, w)}`` of the ``wanted`` view frames of every view. Views that
    share a decoding size share one decoding pass, ``CHUNK_FRAMES`` frames at a time."""
    out: list[dict[int, torch.Tensor]] = [{} for _ in views]
    groups: dict[int | None, list[int]] = {}
    for vi, view in enumerate(views):
        groups.setdefault(view.resize, []).append(vi)
    for resize, members in groups.items():
        sources = {vi: opened.view_frames(views[vi])[wanted[vi]] for vi in members}
        union = np.unique(np.concatenate([sources[vi] for vi in members]))
        for lo in range(0, len(union), CHUNK_FRAMES):
            chunk = union[lo : lo + CHUNK_FRAMES]
            # float (N, 3, H, W) in [0, 1], as videolang tokenize feeds the tokenizer
            x = opened.read(chunk, resize).permute(0, 3, 1, 2).float() / 255.0
            for vi in members:
                sel = np.isin(sources[vi], chunk)
                rows = torch.from_numpy(np.searchsorted(chunk, sources[vi][sel]))
                codes = _tokenize(tokenizer, x[rows], views[vi], device)
                out[vi].update(zip(wanted[vi][sel].tolist(), codes, strict=True))
    return out


def view_tokens(video: str | os.PathLike | bytes | Frames, tokenizer: torch.nn.Module,
                views: Sequence[TokenViewSpec], *, device: str | torch.device = "cpu") -> list[torch.Tensor]:
    """Codes ``(T, h, w)`` of every frame of each view of one video (what ``videolang tokenize``
    stores for that view), decoded and tokenized ``CHUNK_FRAMES`` frames at a time."""
    with _OpenVideo(video) as opened:
        counts = [len(opened.view_frames(view)) for view in views]
        codes = _encode_view_frames(opened, tokenizer, views, [np.arange(n) for n in counts], device=device)
    return [torch.stack([c[i] for i in range(n)]) for c, n in zip(codes, counts, strict=True)]


TOKENIZE_COMMIT_EVERY = 8  # videos per LMDB commit: what a killed `videolang tokenize` can lose


def tokenize_videos(videos: list, tokenizer: Any, out_path: str | os.PathLike, *, fps: float, frame_size: int,
                    resize: int | None = None, crop: str | None = "center", hflip: bool = False,
                    classes: list[str] | None = None, overwrite: bool = False, progress: bool = False):
    """Tokenize one view of every video into a token store (``videolang tokenize``).

    Frames are decoded at ``fps``, scaled while decoding, cropped and tokenized chunk by chunk
    by :func:`view_tokens`, the path a loaded VIMPAC model takes: inference gives back the
    stored codes. ``videos`` are :class:`~videolang.data.tokens.VideoEntry` records.

    The store is built next to ``out_path`` and swapped in when complete (header and
    completeness marker last), under a lock that fails a second writer at once. A killed run
    keeps every committed batch of ``TOKENIZE_COMMIT_EVERY`` videos; the same call (same header)
    resumes after them, even with ``overwrite`` (the old store stays readable until the swap).
    """
    from videolang.data.stores.lmdb_store import PackReport, stored_keys, write_token_lmdb
    from videolang.data.tokens import HEADER_NAME, TokenStoreHeader
    from videolang.utils.io import atomic_write_text, resumable_output

    header = TokenStoreHeader(tokenizer=tokenizer.tokenizer_id, tokenizer_hash=tokenizer.fingerprint(),
                              vocab_size=int(tokenizer.vocab_size), downsample=int(tokenizer.downsample), fps=fps,
                              frame_size=frame_size, resize=resize, crop=crop, hflip=hflip, classes=classes)
    view = TokenViewSpec(fps=fps, frame_size=frame_size, resize=resize, crop=crop, hflip=hflip)
    with resumable_output(out_path, json.loads(header.to_json()), overwrite=overwrite) as part:
        done = stored_keys(part.path) if part.resumed else set()
        if done and progress:
            print(f"  resuming: {len(done)} of {len(videos)} videos already tokenized")

        def items():
            for i, v in enumerate(videos):
                if v.video_id not in done:
                    yield v.video_id, view_tokens(v.path, tokenizer, [view])[0].numpy(), v.label
                if progress and (i + 1) % 50 == 0:
                    print(f"  tokenized {i + 1}/{len(videos)} videos")

        report = write_token_lmdb(items(), part.path, append=True, commit_every=TOKENIZE_COMMIT_EVERY)
        atomic_write_text(part.path / HEADER_NAME, header.to_json(), overwrite=True)
    return PackReport(report.n_packed + len(done), report.n_bytes, [], Path(out_path))


@torch.inference_mode()
def _tokenize(tokenizer: torch.nn.Module, frames: torch.Tensor, view: TokenViewSpec,
              device: str | torch.device) -> torch.Tensor:
    from videolang.data.tokens import crop_view

    x = crop_view(frames, view.frame_size, view.crop, view.resize, view.hflip)
    return torch.cat([tokenizer.encode(c.to(device)).cpu() for c in x.split(CHUNK_FRAMES)])


def _assemble(idx: np.ndarray, valid: np.ndarray, codes: dict[int, torch.Tensor], pad_id: int) -> torch.Tensor:
    """Clips ``(K, L, h, w)`` from view-frame codes, ``pad_id`` where a clip runs past the end."""
    first = next(iter(codes.values()))
    out = torch.full((*idx.shape, *first.shape), pad_id, dtype=torch.long)
    for k, j in zip(*np.nonzero(valid), strict=True):
        out[k, j] = codes[int(idx[k, j])]
    return out


# -- the pipeline ----------------------------------------------------------------------------


class VIMPACPipeline(Pipeline):
    """A VIMPAC model with its frame tokenizer and the evaluation's views and clips."""

    family = "vimpac"
    spec_class = VIMPACSpec

    def __init__(self, model: torch.nn.Module, spec: VIMPACSpec, tokenizer: torch.nn.Module | None = None, *,
                 folder: str | os.PathLike | None = None, device: str | torch.device = "cpu"):
        super().__init__(model, spec, tokenizer.eval() if tokenizer is not None else None, folder=folder,
                         device=device)
        _check_consistent(model, spec, tokenizer)

    @classmethod
    def from_folder(cls, folder: Path, spec: VIMPACSpec, *, device: str | torch.device = "cpu") -> VIMPACPipeline:
        from videolang.models import load_pretrained

        model = load_pretrained(folder)
        tokenizer = load_folder_frame_tokenizer(folder, spec.tokenizer) if spec.tokenizer is not None else None
        return cls(model, spec, tokenizer, folder=folder, device=device)

    def modules(self) -> dict[str, torch.nn.Module]:
        mods = super().modules()
        if self.tokenizer is not None:
            mods["frame_tokenizer"] = self.tokenizer
        return mods

    @property
    def labels(self) -> list[str]:
        """Class names, in the classifier's output order."""
        if self.spec.labels is None:
            raise ConfigError(f"this model folder is a {self.spec.task} model (no classifier): "
                              "use encode_video, or fine-tune it (vimpac.finetune)")
        return list(self.spec.labels)

    # -- codes ------------------------------------------------------------------------------

    def video_tokens(self, video: VideoInput, *, fps: float | None = None) -> list[torch.Tensor]:
        """Codes ``(T, h, w)`` of every frame of every view: what a token store of each view
        holds for this video (decoded chunk by chunk)."""
        v = _as_input(video, fps)
        if isinstance(v, Tokens):
            return list(v.views)
        return view_tokens(v, self._frame_tokenizer(), self.spec.views, device=self.device)

    def clips(self, video: VideoInput, *, fps: float | None = None) -> torch.Tensor:
        """The model's inputs for one video: ``(V * K, clip_len, h, w)`` codes, view-major (the
        evaluation's order), ``[PAD]`` after the end of short videos. Only the frames the clips
        use are decoded and tokenized."""
        v = _as_input(video, fps)
        pad = self.model.config.pad_token_id
        if isinstance(v, Tokens):
            out = []
            for codes in v.views:
                if codes.min() < 0 or codes.max() >= self.model.config.num_embeddings:
                    raise ValueError(f"Tokens: codes outside 0..{self.model.config.num_embeddings - 1} "
                                     f"(the model's {self.model.config.codebook_size} codes and special ids)")
                idx, valid = clip_plan(codes.shape[0], self.spec.clips)
                out.append(_assemble(idx, valid, {int(i): codes[int(i)] for i in np.unique(idx[valid])}, pad))
            return torch.cat(out)
        tokenizer = self._frame_tokenizer()
        with _OpenVideo(v) as opened:
            plans = [clip_plan(len(opened.view_frames(view)), self.spec.clips) for view in self.spec.views]
            wanted = [np.unique(idx[ok]) for idx, ok in plans]
            codes = _encode_view_frames(opened, tokenizer, self.spec.views, wanted, device=self.device)
        return torch.cat([_assemble(idx, ok, c, pad) for (idx, ok), c in zip(plans, codes, strict=True)])

    def _frame_tokenizer(self) -> torch.nn.Module:
        if self.tokenizer is None:
            raise ConfigError("this model folder has no frame tokenizer: give videos as token codes "
                              "(videolang.pipelines.vimpac.Tokens), one (T, h, w) array per view")
        return self.tokenizer

    # -- scores -----------------------------------------------------------------------------

    def _per_video(self, videos: Sequence[VideoInput], fps: float | None, batch_size: int,
                   head: Callable[[torch.Tensor], torch.Tensor]) -> list[torch.Tensor]:
        """``head`` outputs of every clip, per video; clips of several videos are batched."""
        outputs: list[torch.Tensor] = []
        counts: list[int] = []
        pending: list[torch.Tensor] = []

        def flush() -> None:
            if pending:
                batch = torch.cat(pending)
                with torch.inference_mode():
                    outputs.extend(head(c.to(self.device)).float().cpu() for c in batch.split(batch_size))
                pending.clear()

        for video in videos:
            clips = self.clips(video, fps=fps)
            pending.append(clips)
            counts.append(len(clips))
            if sum(len(p) for p in pending) >= batch_size:
                flush()
        flush()
        return list(torch.cat(outputs).split(counts)) if outputs else []

    def view_logits(self, videos: VideoInput | Sequence[VideoInput], *, fps: float | None = None,
                    batch_size: int = 32) -> list[torch.Tensor]:
        """Classifier logits ``(V * K, C)`` of every clip of every view, per video."""
        _ = self.labels  # a folder without a classifier says so
        return self._per_video(_video_list(videos), fps, batch_size, self.model)

    def class_probabilities(self, videos: VideoInput | Sequence[VideoInput], *, fps: float | None = None,
                            batch_size: int = 32) -> torch.Tensor:
        """``(N, C)`` probabilities: the softmax of every view's logits, averaged (the evaluation)."""
        logits = self.view_logits(videos, fps=fps, batch_size=batch_size)
        if not logits:
            return torch.zeros(0, len(self.labels))
        return torch.stack([x.softmax(-1).mean(0) for x in logits])

    def classify(self, videos: VideoInput | Sequence[VideoInput], top_k: int = 5, *, fps: float | None = None,
                 batch_size: int = 32) -> list[list[Prediction]]:
        """The ``top_k`` most probable classes of every video, best first."""
        return top_k_predictions(self.class_probabilities(videos, fps=fps, batch_size=batch_size), self.labels, top_k)

    def encode_video(self, videos: VideoInput | Sequence[VideoInput], *, fps: float | None = None,
                     batch_size: int = 32) -> torch.Tensor:
        """``(N, D)`` video features: what the classifier reads (the backbone's CLS, or the
        non-PAD mean with ``pooling: mean``; before its norm), averaged over views and clips."""
        from videolang.models.vimpac import VimpacForClassification, masked_mean

        mean_pool = isinstance(self.model, VimpacForClassification) and self.model.config.pooling == "mean"
        pad_id = self.model.config.pad_token_id

        def pooled(codes: torch.Tensor) -> torch.Tensor:
            cls, hidden = self.model.backbone(codes)
            return masked_mean(hidden, codes == pad_id) if mean_pool else cls

        feats = self._per_video(_video_list(videos), fps, batch_size, pooled)
        if not feats:
            return torch.zeros(0, self.model.config.hidden_size)
        return torch.stack([f.mean(0) for f in feats])


def _check_consistent(model: torch.nn.Module, spec: VIMPACSpec, tokenizer: Any) -> None:
    """The folder's parts fit together: task and labels, tokenizer codes and the embedding."""
    from videolang.models.vimpac import VimpacForClassification

    cfg = model.config
    if spec.task == "classification":
        if not isinstance(model, VimpacForClassification):
            raise ConfigError("pipeline.json: task classification needs a vimpac-classifier model")
        if spec.labels is None or len(spec.labels) != cfg.num_classes:
            raise ConfigError(f"pipeline.json: labels must name the model's {cfg.num_classes} classes, got "
                              f"{None if spec.labels is None else len(spec.labels)}")
    if tokenizer is not None and int(tokenizer.vocab_size) != cfg.codebook_size:
        raise ConfigError(f"frame tokenizer has {tokenizer.vocab_size} codes, the model {cfg.codebook_size}")


# -- converted original checkpoints (videolang convert vimpac) -------------------------------

# The original tokenized frames with the DALL-E dVAE and has no text tokenizer. The dVAE's weights
# (OpenAI's encoder.pkl) go into a converted folder through converted_frame_tokenizer.
CONVERTED_TOKENIZER = None
DALLE_DOWNSAMPLE = 8


def spec_for_converted(model: torch.nn.Module, backbone: Any = None) -> VIMPACSpec:
    """How the original evaluated (its fine-tuning test loop): the 3 crops (top / center / bottom) at the
    frame size, 10 uniform clips of the checkpoint's length at 2 fps (every 8th frame of the
    16-fps tokens), softmax averaged. Class names are unknown: ``"0"``, ``"1"``, ..."""
    from videolang.models.vimpac import VimpacForClassification

    cfg = model.config
    if cfg.height != cfg.width:
        raise ConfigError(f"converted VIMPAC: a square token grid is expected, got {cfg.height} x {cfg.width}")
    size = cfg.height * DALLE_DOWNSAMPLE
    views = [TokenViewSpec(fps=16.0, frame_size=size, resize=size, crop=c) for c in ("top", "center", "bottom")]
    clips = ClipSpec(clip_len=cfg.length, stride=8, num_clips=10, legacy_first_clip=True)
    if isinstance(model, VimpacForClassification):
        return VIMPACSpec(task="classification", views=views, clips=clips,
                          labels=[str(i) for i in range(cfg.num_classes)])
    return VIMPACSpec(task="features", views=views, clips=clips)


def converted_frame_tokenizer(model: torch.nn.Module, spec: VIMPACSpec, source: str | os.PathLike
                              ) -> tuple[VIMPACSpec, Callable[[Path], None]]:
    """Add the original's frame tokenizer to a converted folder's spec: ``source`` is the DALL-E
    encoder's weights (``encoder.pkl``, a state dict, ``dalle:PATH``) or a tokenizer folder.
    Returns the spec (views sized for the tokenizer's downsampling) and the ``extra=`` writer."""
    from videolang.models.frame_tokenizers import load_frame_tokenizer

    text = os.fspath(source)
    tokenizer = load_frame_tokenizer(text if text.startswith("dalle:") or Path(text).is_dir() else f"dalle:{text}")
    cfg = model.config
    if int(tokenizer.vocab_size) != cfg.codebook_size:
        raise ConfigError(f"frame tokenizer {text}: {tokenizer.vocab_size} codes, the checkpoint {cfg.codebook_size}")
    section, write = frame_tokenizer_files(tokenizer)
    size = cfg.height * section.downsample
    views = [v.model_copy(update={"frame_size": size, "resize": size if v.resize is not None else None})
             for v in spec.views]
    return spec.model_copy(update={"tokenizer": section, "views": views}), write



# -- model folders of training runs ----------------------------------------------------------


def stores_frame_tokenizer(data: VimpacDataConfig) -> Any | None:
    """``data.frame_tokenizer`` loaded and checked against the fingerprint every store of the
    run records (``None`` when it is not set)."""
    from videolang.data.vimpac import check_tokenizer_fingerprint
    from videolang.models.frame_tokenizers import load_frame_tokenizer

    if data.frame_tokenizer is None:
        return None
    tokenizer = load_frame_tokenizer(data.frame_tokenizer)
    check_tokenizer_fingerprint([*data.train_stores, *data.val_stores, *data.test_stores], tokenizer.fingerprint(),
                                data.frame_tokenizer)
    return tokenizer


def write_vimpac_folder(out_dir: str | os.PathLike, model: torch.nn.Module, data: VimpacDataConfig, *,
                        task: Literal["classification", "features"], stores: Sequence[str], num_clips: int,
                        provenance: dict[str, Any]) -> Path:
    """Write ``model`` as a VIMPAC model folder: the views of ``stores``, the run's clips
    (``num_clips`` per view), the class names and frame tokenizer of ``data`` (:class:`VIMPACSpec`)."""
    from videolang.data.tokens import TokenStore
    from videolang.pipelines.folder import write_model_folder

    tokenizer = stores_frame_tokenizer(data)
    section, extra = frame_tokenizer_files(tokenizer) if tokenizer is not None else (None, None)
    if tokenizer is None:
        log.warning("no data.frame_tokenizer: the model folder takes token codes only (set it to the tokenizer "
                    "that made the stores to classify raw videos)")
    labels = None
    if task == "classification":
        classes, n = TokenStore(data.train_stores[0]).header.classes, model.config.num_classes
        labels = list(classes) if classes and len(classes) == n else [str(i) for i in range(n)]
    spec = VIMPACSpec(task=task, tokenizer=section, views=[view_from_header(TokenStore(p).header) for p in stores],
                      clips=ClipSpec(clip_len=data.clip_len, stride=data.stride, num_clips=num_clips,
                                     legacy_first_clip=data.legacy_first_clip),
                      labels=labels, provenance=provenance)
    return write_model_folder(out_dir, model, spec, extra=extra)
