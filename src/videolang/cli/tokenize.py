"""``videolang tokenize``: videos -> a token store of frame-tokenizer codes (VIMPAC's video2token).

    videolang tokenize --tokenizer TOK --out STORE (--world DIR [--split train] | --list FILE --root DIR)
                       [--fps 5] [--size 64] [--resize N] [--crop center|top|bottom|none] [--hflip]
                       [--train-vqvae STEPS] [--overwrite]

``TOK`` is a tokenizer folder (``save_frame_tokenizer``) or ``dalle:PATH``; with ``--train-vqvae``
a missing folder is first filled with a VQ-VAE trained on the input videos (its reconstruction
error is printed). The store (LMDB + ``tokens.json`` header) is described in docs/vimpac.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["register", "run", "train_tokenizer_on_videos"]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("tokenize", help="encode videos into a token store of discrete frame codes (VIMPAC)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokenizer", required=True, help="tokenizer folder, or dalle:PATH (DALL-E dVAE encoder weights)")
    p.add_argument("--out", required=True, help="token store directory to write")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--world", help="a synthetic world directory (labels = motion classes)")
    src.add_argument("--list", help="MMAction2 list file: 'relative/path.ext label' per line")
    p.add_argument("--root", help="video root of --list paths")
    p.add_argument("--split", default=None, help="with --world: only this split")
    p.add_argument("--fps", type=float, default=5.0, help="frames per second to sample (original: 2 / 16)")
    p.add_argument("--size", type=int, default=64, help="square frame size fed to the tokenizer")
    p.add_argument("--resize", type=int, default=None, help="shorter side before cropping (default: --size)")
    p.add_argument("--crop", default="center", choices=["top", "center", "bottom", "none"])
    p.add_argument("--hflip", action="store_true")
    p.add_argument("--train-vqvae", type=int, default=0, metavar="STEPS",
                   help="train a VQ-VAE for STEPS steps first when --tokenizer does not exist")
    p.add_argument("--vqvae-downsample", type=int, default=8, choices=[2, 4, 8, 16],
                   help="with --train-vqvae: pixels per code side (8: 64x64 frames -> 8x8 codes)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=run)


def train_tokenizer_on_videos(videos: list, out_dir: str | Path, *, steps: int, fps: float, size: int,
                              max_videos: int = 100, seed: int = 0, channels: int = 32, batch_size: int = 32,
                              downsample: int = 8) -> dict:
    """Train a VQ-VAE (256 codes, ``channels`` wide, one code per ``downsample`` x ``downsample``
    pixels) on center views of up to ``max_videos`` videos and save it; returns its report."""
    import torch

    from videolang.data.sampling import resample_frame_indices
    from videolang.data.tokens import crop_view
    from videolang.data.video import probe, read_frames
    from videolang.errors import ConfigError
    from videolang.models.frame_tokenizers import VQVAEConfig, save_frame_tokenizer, train_vqvae

    if downsample < 2 or downsample & (downsample - 1) or size % downsample:
        raise ConfigError(f"VQ-VAE downsample must be a power of two >= 2 dividing the frame size {size}, "
                          f"got {downsample}")
    frames = []
    for v in videos[:max_videos]:
        meta = probe(v.path)
        x = read_frames(v.path, resample_frame_indices(meta.num_frames, meta.fps, fps, rounding="down"))
        frames.append(crop_view(x.permute(0, 3, 1, 2).float() / 255.0, size, "center", size, False))
    cfg = VQVAEConfig(channels=channels, num_downsamples=downsample.bit_length() - 1)
    model, report = train_vqvae(torch.cat(frames), cfg, steps=steps,
                                batch_size=batch_size, seed=seed)
    save_frame_tokenizer(model, out_dir, report=report)
    return report


def run(args: argparse.Namespace) -> int:
    from videolang.data.tokens import read_video_list
    from videolang.errors import ConfigError
    from videolang.models.frame_tokenizers import load_frame_tokenizer
    from videolang.pipelines.vimpac import tokenize_videos
    from videolang.synth import world_videos

    if args.world:
        videos, classes = world_videos(args.world, args.split)
    else:
        if not args.root:
            raise ConfigError("--list needs --root (the directory its paths are relative to)")
        videos, classes = read_video_list(args.list, args.root), None
    if not videos:
        raise ConfigError("no videos to tokenize")
    resize = args.resize if args.resize is not None else args.size
    crop = None if args.crop == "none" else args.crop
    if args.train_vqvae and not Path(args.tokenizer).exists():
        report = train_tokenizer_on_videos(videos, args.tokenizer, steps=args.train_vqvae, fps=args.fps,
                                           size=args.size, downsample=args.vqvae_downsample)
        print(f"trained VQ-VAE -> {args.tokenizer}: {json.dumps(report)}")
    tokenizer = load_frame_tokenizer(args.tokenizer)
    report = tokenize_videos(videos, tokenizer, args.out, fps=args.fps, frame_size=args.size, resize=resize, crop=crop,
                             hflip=args.hflip, classes=classes, overwrite=args.overwrite,
                             progress=True)
    print(f"wrote {report.n_packed} videos ({report.n_bytes / 1e6:.1f} MB) to {args.out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    from videolang.cli.main import main

    sys.exit(main(["tokenize", *sys.argv[1:]]))
