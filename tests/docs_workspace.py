"""The folder the Python examples of README.md and docs/ run in (tests/test_docs.py).

Examples use these paths, relative to it::

    world/                  a synthetic world (videolang data synth): world/videos/vid00000.mp4 ...
    models/videoclip        VideoCLIP retrieval          models/vlm-mcqa         VLM multiple choice
    models/clipbert-retrieval, models/clipbert-qa, models/clipbert-mcqa
    models/vimpac           VIMPAC classifier            models/anticipation     anticipation student
    models/vidlankd-student VidLanKD student             models/vidlankd-teacher VidLanKD teacher
    models/vidlankd-sst2, models/vidlankd-rte            GLUE classifiers (vidlankd.glue)

Every model folder comes from a real run of its recipe, one optimizer step long: the examples
exercise what a user's export would be, not a hand-made imitation. Answers are meaningless.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from videolang.data.text import build_wordpiece_tokenizer
from videolang.engine import fit
from videolang.pipelines.features import run_extraction
from videolang.synth import synthesize_world

ONE_STEP = {"max_epochs": 1, "max_steps": 1, "limit_val_batches": 0, "enable_progress_bar": False,
            "num_sanity_val_steps": 0, "log_every_n_steps": 1, "monitor": None}


def _fit(cfg: dict, root: Path, name: str) -> Path:
    cfg = {"seed": 0, "name": name, "optim": {"lr": 1e-3}, **cfg,
           "trainer": {**ONE_STEP, **cfg.get("trainer", {})}, "run": {"root": str(root / "runs"), "plots": False}}
    export = fit(cfg).run_dir / "export"
    return Path(shutil.copytree(export, root / "models" / name))


def build_workspace(root: Path) -> Path:
    """World, features, tokenizers and one model folder per family (about a minute on 2 cores)."""
    world = root / "world"
    synthesize_world(world, 40, seed=0, size=32, duration=2.0, progress=False)
    run_extraction(str(world / "videos"), "pooled-pixels", str(root / "features"), progress=False,
                   backbone_options={"grid": 2, "rows_per_second": 2})
    corpus = (world / "text" / "corpus.txt").read_text().splitlines()
    build_wordpiece_tokenizer([*corpus, " . "], root / "tok", vocab_size=400)
    _videoclip(root, world)
    _vlm(root, world)
    _clipbert(root, world)
    _vimpac(root, world)
    _anticipation(root, world)
    _vidlankd(root, world)
    return root


def _videoclip(root: Path, world: Path) -> None:
    h = world / "formats" / "howto100m"
    _fit({"recipe": "videoclip.pretrain", "model": {"name": "videoclip-tiny", "normalize": True, "temperature": 0.1},
          "data": {"features": str(root / "features"), "captions": str(h / "raw_caption.json"),
                   "pairs_per_video": 1, "videos_per_batch": 8, "min_video_len": 1, "max_video_len": 4,
                   "min_text_tokens": 2, "max_text_len": 16, "retrieval": False}}, root, "videoclip")


def _vlm(root: Path, world: Path) -> None:
    _fit({"recipe": "vlm.mcqa", "model": {"name": "vlm-tiny", "normalize": True, "temperature": 0.1},
          "data": {"features": str(root / "features"), "tokenizer": str(root / "tok"), "max_video_len": 4,
                   "max_text_len": 24, "train_mc": str(world / "annotations" / "mc.jsonl"), "batch_size": 8}},
         root, "vlm-mcqa")


def _clipbert(root: Path, world: Path) -> None:
    c = world / "formats" / "clipbert"
    shrink = {"bert.hidden_size": 32, "bert.num_hidden_layers": 1, "bert.num_attention_heads": 4,
              "bert.intermediate_size": 64, "backbone.stem_channels": 8, "backbone.width": 4}
    common = {"video_root": str(world / "videos"), "frame_size": 32, "max_text_len": 24, "target_fps": 2.0,
              "frames_per_clip": 2, "train_clips": 1, "test_clips": 2, "batch_size": 4}
    for recipe, name, train, sampling, extra in (
        ("clipbert.retrieval", "clipbert-retrieval", "msrvtt_retrieval/train.jsonl", "msrvtt_ret", {}),
        ("clipbert.qa", "clipbert-qa", "tgif_qa/frameqa_train.jsonl", "tgif_frameqa",
         {"ans2label": str(c / "tgif_qa/frameqa_trainval_ans2label.json")}),
        ("clipbert.mcqa", "clipbert-mcqa", "tgif_qa/action_train.jsonl", "tgif_action", {}),
    ):
        _fit({"recipe": recipe, "model": {"name": "clipbert-tiny", "overrides": shrink},
              "data": {"train_file": str(c / train), "sampling": sampling, **common, **extra}}, root, name)


def _vimpac(root: Path, world: Path) -> None:
    from videolang.models.frame_tokenizers import (
        VQVAE,
        VQVAEConfig,
        load_frame_tokenizer,
        save_frame_tokenizer,
    )
    from videolang.pipelines.vimpac import tokenize_videos
    from videolang.synth import world_videos

    torch.manual_seed(0)
    save_frame_tokenizer(VQVAE(VQVAEConfig(codebook_size=32, code_dim=8, channels=16, num_downsamples=3)).eval(),
                         root / "vqvae")
    tokenizer = load_frame_tokenizer(root / "vqvae")
    entries, classes = world_videos(world, "train")
    tokenize_videos(entries, tokenizer, root / "tokens_train", fps=5.0, frame_size=32, classes=classes)
    tiny = {"hidden_size": 32, "num_heads": 2, "mlp_size": 64, "num_layers": 1, "pooling": "mean",
            "proj_hidden_size": 32, "proj_size": 16}
    _fit({"recipe": "vimpac.finetune", "model": {"name": "vimpac-tiny", "overrides": tiny},
          "data": {"train_stores": [str(root / "tokens_train")], "clip_len": 3, "stride": 2, "batch_size": 8,
                   "frame_tokenizer": str(root / "vqvae")}}, root, "vimpac")


def _anticipation(root: Path, world: Path) -> None:
    # 5 rows per second: every query has observed rows before its anticipation gap
    run_extraction(str(world / "videos"), "pooled-pixels", str(root / "features_5hz"), progress=False,
                   backbone_options={"grid": 2, "rows_per_second": 5})
    _fit({"recipe": "anticipation.student", "model": {"name": "anticipation-student-tiny"},
          "data": {"format": "synthetic", "root": str(world), "anticipation_gap": 0.2, "hist_len": 3,
                   "tokenizer": str(root / "tok"), "features": str(root / "features_5hz"), "max_rows": 8,
                   "batch_size": 8}}, root, "anticipation")


def _vidlankd(root: Path, world: Path) -> None:
    from videolang.cli.glue import run_glue

    small = {"bert.hidden_size": 32, "bert.num_hidden_layers": 1, "bert.num_attention_heads": 2,
             "bert.intermediate_size": 64, "bert.vocab_size": 400}
    h = world / "formats" / "howto100m"
    _fit({"recipe": "vidlankd.teacher", "model": {"name": "vidlankd-teacher-tiny", "overrides": small},
          "data": {"features": str(root / "features"), "captions": str(h / "raw_caption.json"),
                   "train_list": str(h / "train.lst"), "tokenizer": str(root / "tok"), "block_size": 24,
                   "max_video_len": 4, "batch_size": 8}}, root, "vidlankd-teacher")
    student = _fit({"recipe": "vidlankd.student", "model": {"name": "vidlankd-student-tiny", "overrides": small},
                    "data": {"train_files": [str(world / "text" / "corpus.txt")], "format": "plain",
                             "tokenizer": str(root / "tok"), "block_size": 30, "batch_size": 8}},
                   root, "vidlankd-student")
    glue = run_glue(str(student), world / "formats" / "glue", ["SST-2", "RTE"], [0], epochs=1, batch_size=8,
                    max_seq_length=32, runs=root / "runs", export=True)
    for task, entry in glue.items():
        shutil.copytree(f"{entry['runs'][0]}/export", root / "models" / f"vidlankd-{task.lower().replace('-', '')}")
