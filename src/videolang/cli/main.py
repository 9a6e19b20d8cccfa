"""The ``videolang`` command: one CLI with subcommands (``videolang --help`` lists them).

Handlers import their modules lazily so ``videolang --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from videolang import __version__
from videolang.errors import VideolangError

log = logging.getLogger("videolang")


# --------------------------------------------------------------------------------------------
# handlers


def _cmd_synth(args: argparse.Namespace) -> int:
    from videolang.synth import synthesize_world

    start = time.perf_counter()
    manifest = synthesize_world(
        args.out, args.num_videos, args.seed, size=args.size, fps=args.fps, duration=args.duration,
        gop=args.gop, codec=args.codec, workers=args.workers, overwrite=args.overwrite,
        progress=not args.quiet,
    )
    elapsed = time.perf_counter() - start
    counts = manifest.get("counts", {})
    print(f"synthesized {args.num_videos} videos into {args.out} in {elapsed:.1f} s")
    print(json.dumps(counts, indent=2, sort_keys=True))
    return 0


def _cmd_synth_mc(args: argparse.Namespace) -> int:
    from videolang.errors import ConfigError
    from videolang.synth import write_extra_multiple_choice

    if args.per_video < 1:  # checked here too so that the message names the option the user typed
        raise ConfigError(f"--per-video {args.per_video}: must be >= 1")
    n = write_extra_multiple_choice(args.world, args.out, args.per_video, split=args.split, overwrite=args.overwrite)
    print(f"wrote {n} multiple-choice items ({args.per_video} per {args.split} video) to {args.out}")
    return 0


def _cmd_pack(args: argparse.Namespace) -> int:
    from videolang.data.stores import pack_videos

    report = pack_videos(args.video_dir, args.out, overwrite=args.overwrite, progress=not args.quiet)
    print(f"packed {report.n_packed} videos ({report.n_bytes / 1e6:.1f} MB) into {args.out}; "
          f"{len(report.skipped)} unreadable files skipped")
    for path in report.skipped:
        print(f"  skipped: {path}")
    return 0


def _shard_samples(video_dir: Path, annotations: Path | None) -> list[tuple[dict, Path]]:
    """``(record, video file)`` for ``data shards``: the annotation lines (``id``, ``path``
    inside ``video_dir``, checked) or, without annotations, every video file in the folder."""
    from videolang.data.annotations import check_inside, read_jsonl_objects, validate_record
    from videolang.data.stores.webdataset_store import ShardAnnotation
    from videolang.data.video import VIDEO_EXTENSIONS

    if annotations is None:
        files = [p for p in sorted(video_dir.rglob("*")) if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file()
                 and not any(part.startswith(".") for part in p.relative_to(video_dir).parts)]
        return [({"id": p.stem, "path": p.relative_to(video_dir).as_posix()}, p) for p in files]
    samples = []
    for lineno, raw in read_jsonl_objects(annotations):
        where = f"{annotations}:{lineno}"
        record = validate_record(ShardAnnotation, raw, where)
        for relative in (record.path, Path(record.path).name):  # as given, or flattened into the folder
            candidate = check_inside(video_dir, relative, where)
            if candidate.is_file():
                samples.append((raw, candidate))
                break
        else:
            raise VideolangError(f"{where}: video {record.path!r} not found under {video_dir}")
    return samples


def _cmd_shards(args: argparse.Namespace) -> int:
    from videolang.data.stores import write_webdataset

    samples = _shard_samples(Path(args.video_dir), Path(args.annotations) if args.annotations else None)

    def items():
        for record, path in samples:
            yield {"__key__": record["id"], path.suffix.lstrip(".") or "mp4": path.read_bytes(), "json": record}

    shards = write_webdataset(items(), args.out, maxcount=args.maxcount, overwrite=args.overwrite)
    print(f"wrote {len(samples)} samples into {len(shards)} shards under {args.out}")
    return 0


def _cmd_extract(args: argparse.Namespace) -> int:
    from videolang.pipelines.features import run_extraction

    options: dict = {}
    if args.grid is not None:
        if args.backbone != "pooled-pixels":
            raise VideolangError("--grid applies to --backbone pooled-pixels only")
        options["grid"] = args.grid
    if args.rows_per_second is not None:
        options["rows_per_second"] = args.rows_per_second
    if args.temporal_diff:
        options["temporal_diff"] = True
    report = run_extraction(
        args.videos, args.backbone, args.out, weights=args.weights, dtype=args.dtype,
        batch_size=args.batch_size, device=args.device, overwrite=args.overwrite,
        l2_normalize=args.l2_normalize, progress=not args.quiet, seed=args.seed,
        backbone_options=options or None,
    )
    print(f"features: {report.written} written, {report.already_present} already in the store, "
          f"{len(report.bad)} bad videos skipped ({report.videos_per_s:.1f} videos/s)")
    for vid, reason in report.bad:
        print(f"  bad: {vid}: {reason}")
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from videolang.pipelines.convert import convert_checkpoint

    out = convert_checkpoint(args.method, args.checkpoint, args.out_dir, model_name=args.model,
                             overrides=args.set, overwrite=args.overwrite,
                             backbone_weights=args.backbone_weights, l2_normalize=args.l2_normalize,
                             frame_tokenizer=args.frame_tokenizer)
    print(f"converted {args.checkpoint} -> {out} (load it with videolang.load)")
    return 0


def _cmd_probe(args: argparse.Namespace) -> int:
    from videolang.data.video import probe

    for path in args.videos:
        meta = probe(path)
        print(json.dumps({
            "path": path, "num_frames": meta.num_frames, "fps": meta.fps,
            "duration": round(meta.duration, 4), "width": meta.width, "height": meta.height,
            "codec": meta.codec, "keyframes": list(meta.keyframes),
        }))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from videolang.cli.demo import run_demo

    return run_demo(args.out, num_videos=args.num_videos, seed=args.seed, overwrite=True)


# --------------------------------------------------------------------------------------------
# parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="videolang",
        description="videolang: video-and-language learning (ClipBERT, VideoCLIP, VLM, VIMPAC, "
        "cross-modal distillation) on one data layer and one engine.",
    )
    parser.add_argument("--version", action="version", version=f"videolang {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--debug", action="store_true",
                        help="show the Python traceback of an error (errors print one line without it)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    data = sub.add_parser("data", help="make, pack and inspect datasets")
    dsub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND")

    p = dsub.add_parser("synth", help="render the synthetic video world (videos + annotations)")
    p.add_argument("--out", required=True, help="output folder (must not exist unless --overwrite)")
    p.add_argument("--num-videos", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=64, help="frame width and height in pixels")
    p.add_argument("--fps", type=int, default=None, help="frames per second (default: the world's)")
    p.add_argument("--duration", type=float, default=4.0, help="seconds per video")
    p.add_argument("--gop", type=int, default=None, help="keyframe interval in frames")
    p.add_argument("--codec", default="auto", choices=["auto", "h264", "mpeg4"])
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_synth)

    p = dsub.add_parser("synth-mc", help="more multiple-choice items for a synthetic world's videos "
                        "(fresh distractors; training data for vlm.mcqa's data.train_mc)")
    p.add_argument("world", help="a folder from `videolang data synth`")
    p.add_argument("--out", required=True, help="JSONL file (the layout of annotations/mc.jsonl)")
    p.add_argument("--per-video", type=int, default=10)
    p.add_argument("--split", default="train", choices=["train", "val", "test"])
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_synth_mc)

    p = dsub.add_parser("pack", help="pack a folder of videos into an LMDB store (key = relative path)")
    p.add_argument("video_dir")
    p.add_argument("out")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_pack)

    p = dsub.add_parser("shards", help="write WebDataset tar shards (video bytes + JSON per sample)")
    p.add_argument("video_dir")
    p.add_argument("out")
    p.add_argument("--annotations", help="JSONL with 'id' and 'path' per video (e.g. videos.jsonl)")
    p.add_argument("--maxcount", type=int, default=100, help="samples per shard")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_shards)

    p = dsub.add_parser("probe", help="print video metadata (frames, fps, size, keyframes) as JSON")
    p.add_argument("videos", nargs="+")
    p.set_defaults(func=_cmd_probe)

    p = sub.add_parser("extract-features", help="fill a feature store with per-second video features")
    p.add_argument("--videos", required=True, help="a folder of videos, an LMDB store or WebDataset shards")
    p.add_argument("--backbone", default="cnn2d-tiny",
                   help="s3dg, cnn2d-tiny, cnn2d-small or pooled-pixels (default: cnn2d-tiny)")
    p.add_argument("--weights", help="local weights file of the backbone (e.g. s3d_howto100m.pth)")
    p.add_argument("--out", required=True, help="feature store folder (resumed if it exists)")
    p.add_argument("--dtype", default=None, choices=["float16", "float32"],
                   help="default: float16, or the existing store's when resuming")
    p.add_argument("--batch-size", type=int, default=None, help="clips per forward pass")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0, help="init seed when no --weights are given")
    p.add_argument("--l2-normalize", action="store_true", help="unit-norm rows (MMPT's extractor default)")
    p.add_argument("--grid", type=int, default=None, help="pooled-pixels: grid x grid pooling")
    p.add_argument("--rows-per-second", type=float, default=None,
                   help="frame-pooling backbones: feature rows per second of video (default 1)")
    p.add_argument("--temporal-diff", action="store_true",
                   help="frame-pooling backbones: append each row's feature change (motion "
                        "direction); doubles the feature dimension")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_extract)

    p = sub.add_parser("convert", help="convert an original checkpoint to a videolang model folder")
    p.add_argument("method", choices=list(CONVERTER_METHODS))
    p.add_argument("checkpoint", help="the original checkpoint file (e.g. MMPT checkpoint_best.pt)")
    p.add_argument("out_dir")
    p.add_argument("--model", default=None, help="registered architecture (default: the method's base)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="architecture overrides, e.g. feature_dim=512")
    p.add_argument("--backbone-weights", metavar="FILE",
                   help="videoclip / vlm: the original feature extractor's local weights (MIL-NCE "
                        "s3d_howto100m.pth), put into the model folder so it encodes raw videos")
    p.add_argument("--frame-tokenizer", metavar="FILE",
                   help="vimpac: the original frame tokenizer's local weights (DALL-E encoder.pkl; or "
                        "dalle:PATH, a tokenizer folder), put into the model folder so it reads raw videos")
    p.add_argument("--l2-normalize", action=argparse.BooleanOptionalAction, default=None,
                   help="unit-norm feature rows as the original extraction scripts did (default: "
                        "the family's, on for MMPT's S3D features)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_convert)

    for module in _installed(COMMAND_MODULES):
        importlib.import_module(module).register(sub)

    p = sub.add_parser("demo", help="the end-to-end demo on the synthetic world (what `make demo` runs); "
                                    "`videolang demo METHOD` trains and evaluates one method there")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--num-videos", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_demo)
    demos = p.add_subparsers(dest="demo_method", metavar="METHOD")
    for name, module in _installed(DEMO_MODULES).items():
        demo = importlib.import_module(module)
        q = demos.add_parser(name, help=demo.HELP, description=demo.__doc__,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
        demo.add_arguments(q)
        q.set_defaults(func=demo.run)
    return parser


# Modules that add top-level commands: each has ``register(subparsers)`` and imports nothing
# heavy at module level.
COMMAND_MODULES = ("videolang.cli.train", "videolang.cli.tokenize", "videolang.cli.glue", "videolang.cli.search")
# ``videolang demo METHOD``: each module has HELP, add_arguments(parser) and run(args) -> int.
DEMO_MODULES = {name: f"videolang.cli.demos.{name}"
                for name in ("vlm", "clipbert", "vimpac", "anticipation", "vidlankd")}
CONVERTER_METHODS = ("videoclip", "vlm", "clipbert", "vimpac", "vidlankd")


def _installed(modules):
    """The entries of ``modules`` (a tuple of names or a dict name -> module) that exist."""
    items = modules.items() if isinstance(modules, dict) else ((m, m) for m in modules)
    found = {k: m for k, m in items if importlib.util.find_spec(m) is not None}
    return found if isinstance(modules, dict) else tuple(found)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not args.verbose:  # faiss logs each CPU-instruction variant it tries to load
        logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    func = getattr(args, "func", None)
    if func is None:
        # `videolang` or `videolang data` alone: show the relevant help.
        if args.command == "data":
            parser.parse_args(["data", "--help"])
        parser.print_help()
        return 0
    try:
        return func(args)
    except VideolangError as exc:
        if args.debug:
            raise
        print(f"videolang: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("videolang: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `videolang search ... | head`: the reader left, which is not an error
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keeps the interpreter's final flush quiet
        return 0
    except Exception as exc:  # a failure we did not foresee: one line, the traceback on request
        if args.debug:
            raise
        print(f"videolang: error: {type(exc).__name__}: {exc} (run with --debug for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
