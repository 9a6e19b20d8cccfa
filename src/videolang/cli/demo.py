"""``videolang demo``: the data layer and VideoCLIP end to end on the synthetic world.

1. synthesize a world of real MP4 files with annotations (or reuse ``OUT/world``);
2. pack it into an LMDB store and WebDataset shards; extract per-second cnn2d-tiny features
   from the LMDB store into a feature store;
3. read samples back through each (ClipBERT-style sparse clips from LMDB with two DataLoader
   workers, uniform frames from the shards, random access into the features), plus a folder
   with deliberately broken files to show that bad videos are skipped and counted;
4. pretrain VideoCLIP (``configs/videoclip/synthetic_pretrain.yaml``) and test zero-shot
   text-to-video retrieval on the held-out split (MSR-VTT JSFusion format);
5. score the same split from the raw videos with ``videolang.load`` on the run's model folder;
6. index the held-out videos with that model and search each test caption (top-5 rate vs chance);
7. print a summary: counts, bad files seen, decode throughput, retrieval against chance.
"""

from __future__ import annotations

import contextlib
import csv
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from videolang.cli.demos.steps import (
    World,
    demo_config,
    extract_features,
    fit_then_test,
    synthesize_or_reuse,
)


class _StepTimer:
    """Times the demo's steps and prints each as it ends."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - start
        print(f"[demo] {name}: {self.seconds[name]:.1f} s", flush=True)


def run_demo(out: str | Path, *, num_videos: int = 1000, seed: int = 0, overwrite: bool = True) -> int:
    """The whole tour in ``out``; returns 0 when every consistency check holds, else 1."""
    from videolang.data.stores import pack_videos, write_webdataset
    from videolang.synth import load_videos

    out, t0, step = Path(out), time.perf_counter(), _StepTimer()
    with step("synthesize world"):
        world = synthesize_or_reuse(out / "world", num_videos, seed, overwrite=overwrite, progress=True)
    videos = load_videos(world.path)
    with step("pack LMDB"):
        pack = pack_videos(world.path / "videos", out / "videos.lmdb", overwrite=overwrite, progress=False)
    with step("write WebDataset shards"):
        shards = write_webdataset(({"__key__": v["id"], "mp4": (world.path / v["path"]).read_bytes(), "json": v}
                                   for v in videos), out / "shards", maxcount=50, overwrite=overwrite)
    with step("extract cnn2d-tiny features from LMDB"):
        features = extract_features(world, out / "features", "cnn2d-tiny", videos=out / "videos.lmdb", seed=seed)
    reads = _read_back(world, videos, out, shards, seed, step)
    with step("VideoCLIP pretraining + zero-shot test"):
        retrieval = run_videoclip(world.path, out / "features", out / "runs", seed)
    with step("videolang.load: the same test from the raw videos"):
        raw = retrieval_from_raw_videos(retrieval["export"], world.path)
    with step("videolang index + search of the held-out videos"):
        search = search_held_out_videos(retrieval["export"], world.path, out)
    reads.update(packed=pack, shards=len(shards), features=features, total=time.perf_counter() - t0)
    return _print_summary(world, num_videos, seed, reads, retrieval, raw, search)


# --------------------------------------------------------------------------------------------
# reading the stores back


def _clip_sampler(meta, generator):
    from videolang.data.sampling import clipbert_clip_indices

    return clipbert_clip_indices(meta.num_frames, meta.fps, num_clips=2, frames_per_clip=4,
                                 target_fps=4.0, generator=generator)


def _make_bad_folder(world: Path, out: Path, good: list[str]) -> list[dict]:
    """A few good videos next to broken ones: truncated, empty, not a video, missing."""
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for rel in good:
        src = world / rel
        (out / src.name).write_bytes(src.read_bytes())
        records.append({"video": src.name})
    data = (world / good[0]).read_bytes()
    (out / "truncated.mp4").write_bytes(data[: len(data) // 3])
    (out / "empty.mp4").write_bytes(b"")
    (out / "notes.mp4").write_text("not a video\n")
    return records + [{"video": n} for n in ("truncated.mp4", "empty.mp4", "notes.mp4", "missing.mp4")]


def _drain(loader, counter) -> tuple[int, int, float]:
    """Iterate a loader; return (samples, frames, seconds)."""
    samples = frames = 0
    start = time.perf_counter()
    for batch in loader:
        if counter.update(batch):
            samples += batch["frames"].shape[0]
            frames += batch["frames"][..., 0, 0, 0].numel()
    return samples, frames, time.perf_counter() - start


def _read_back(world: World, videos: list[dict], out: Path, shards: list, seed: int,
               step: _StepTimer) -> dict[str, Any]:
    """Read samples back from the LMDB store, the shards, the features and a folder of broken
    files; returns the counts and timings the summary prints."""
    from videolang.data.datasets import SkipCounter, VideoFramesDataset, collate_skipping
    from videolang.data.sampling import uniform_frame_indices
    from videolang.data.stores import FeatureStore, LmdbVideoStore, WebVideoDataset
    from videolang.data.video import VideoReader

    r: dict[str, Any] = {"counter": SkipCounter(), "bad_counter": SkipCounter()}
    records = [{"video": Path(v["path"]).with_suffix("").name, "index": i} for i, v in enumerate(videos)]
    ds = VideoFramesDataset(records, _clip_sampler, store=LmdbVideoStore(out / "videos.lmdb"), seed=seed)
    loader = DataLoader(ds, batch_size=16, num_workers=2, collate_fn=collate_skipping)
    with step("read LMDB (2 clips x 4 frames, 2 workers)"):
        r["lmdb_samples"], r["lmdb_frames"], r["lmdb_s"] = _drain(loader, r["counter"])
    r["shard_samples"] = r["shard_frames"] = 0
    with step("read WebDataset shards (8 uniform frames)"):
        for sample in WebVideoDataset(shards):
            with VideoReader(sample["video"]) as reader:
                r["shard_frames"] += reader.read(uniform_frame_indices(reader.metadata.num_frames, 8)).shape[0]
            r["shard_samples"] += 1
    r["store"] = FeatureStore(out / "features")
    with step("1000 random feature reads"):
        ids = list(r["store"].ids)
        rng = np.random.default_rng(seed)
        r["rows"] = sum(r["store"][ids[i]].shape[0] for i in rng.integers(0, len(ids), 1000))
    r["shard_s"], r["feat_s"] = step.seconds["read WebDataset shards (8 uniform frames)"], \
        step.seconds["1000 random feature reads"]
    r["bad_records"] = _make_bad_folder(world.path, out / "bad_videos", [v["path"] for v in videos[:4]])
    bad_ds = VideoFramesDataset(r["bad_records"], _clip_sampler, video_root=out / "bad_videos", seed=seed)
    bad_loader = DataLoader(bad_ds, batch_size=4, num_workers=0, collate_fn=collate_skipping)
    r["bad_samples"], _, _ = _drain(bad_loader, r["bad_counter"])
    return r


# --------------------------------------------------------------------------------------------
# VideoCLIP: fit, test, the model folder, search


def run_videoclip(world: Path, features: Path, runs: Path, seed: int) -> dict:
    """Pretrain VideoCLIP on the world, then test it zero-shot; returns the test metrics."""
    overrides = [
        f"data.features={features}", f"data.captions={world}/formats/howto100m/raw_caption.json",
        f"data.train_list={world}/formats/howto100m/train.lst",
        f"data.val_pairs={world}/annotations/captions.jsonl",
        f"data.test_pairs={world}/formats/msrvtt/MSRVTT_JSFUSION_test.csv",
        f"run.root={runs}", f"seed={seed}",
    ]
    run = fit_then_test(demo_config("videoclip", "synthetic_pretrain.yaml"), overrides)
    return {"run_dir": str(run.run_dir), "export": str(run.export), **run.test}


def _test_pairs(world: Path) -> list[tuple[str, str]]:
    """(video id, sentence) of the held-out test split, MSR-VTT JSFusion format."""
    with open(world / "formats" / "msrvtt" / "MSRVTT_JSFUSION_test.csv", newline="", encoding="utf-8") as f:
        return [(row["video_id"], row["sentence"]) for row in csv.DictReader(f)]


def _video_paths(world: Path) -> dict[str, Path]:
    from videolang.synth import load_videos

    return {v["id"]: world / v["path"] for v in load_videos(world)}


def retrieval_from_raw_videos(export: str | Path, world: Path) -> dict[str, float]:
    """The zero-shot test again, through ``videolang.load`` on the raw test videos (the export's
    own backbone decodes them): the model folder answers as the run's test did."""
    import videolang
    from videolang.metrics import retrieval_metrics

    paths, pairs = _video_paths(world), _test_pairs(world)
    scores = videolang.load(export).score([str(paths[vid]) for vid, _ in pairs], [text for _, text in pairs])
    return retrieval_metrics(scores.t())


def search_held_out_videos(export: str | Path, world: Path, out: Path) -> dict:
    """Index the held-out test videos with the trained model; search each test caption.

    Returns the top-5 rate (the caption's video among the first 5 hits), its chance, the rank of
    the right video for every caption, and three example searches with their hits.
    """
    from videolang.search.builder import build_index
    from videolang.search.query import open_index

    paths, pairs = _video_paths(world), _test_pairs(world)
    folder = out / "search_videos"
    folder.mkdir(parents=True, exist_ok=True)
    for vid, _ in pairs:
        if not (folder / paths[vid].name).is_file():
            shutil.copy(paths[vid], folder / paths[vid].name)
    # The demo's own output, built afresh: a rerun's model may differ (another thread count gives
    # other weights), and an index refuses a model other than its own.
    shutil.rmtree(out / "index", ignore_errors=True)
    report = build_index(export, folder, out / "index", progress=False)
    n = report.videos
    found = open_index(out / "index").search_many([text for _, text in pairs], k=n)
    ranks = []
    for (vid, _), hits in zip(pairs, found, strict=True):
        videos = [Path(h.video).stem for h in hits]
        ranks.append(videos.index(vid) + 1 if vid in videos else n + 1)
    examples = [{"query": pairs[i][1], "video": paths[pairs[i][0]].name, "rank": ranks[i],
                 "hits": [h.to_dict() for h in found[i][:3]]} for i in range(min(3, len(pairs)))]
    return {"index": str(out / "index"), "videos": n, "windows": report.windows, "seconds": report.seconds,
            "top5": 100.0 * sum(r <= 5 for r in ranks) / len(ranks), "chance_top5": 100.0 * min(5, n) / n,
            "ranks": ranks, "examples": examples}


# --------------------------------------------------------------------------------------------
# the summary


def _print_summary(world: World, num_videos: int, seed: int, reads: dict, retrieval: dict, raw: dict,
                   search: dict) -> int:
    """Print the data layer, retrieval and search summaries; 0 when the consistency checks hold."""
    _print_data_layer(world, num_videos, seed, reads)
    same = _print_retrieval(retrieval, raw)
    _print_search(search)
    print(f"total           : {reads['total']:.1f} s")
    ok = (reads["lmdb_samples"] == num_videos and reads["shard_samples"] == num_videos
          and reads["bad_counter"].count == 4 and reads["bad_samples"] == 4 and same)
    if not ok:
        print("demo: FAILED consistency checks (see counts above)")
        return 1
    return 0


def _print_data_layer(world: World, num_videos: int, seed: int, r: dict) -> None:
    counts, pack, features = world.manifest.get("counts", {}), r["packed"], r["features"]
    print("\n=== videolang demo: data layer summary ===")
    print(f"world           : {num_videos} videos (seed {seed}) in {world.path}")
    for key in sorted(counts):
        print(f"  {key:<22}: {counts[key]}")
    print(f"LMDB            : {pack.n_packed} videos, {pack.n_bytes / 1e6:.1f} MB, {len(pack.skipped)} unreadable")
    print(f"WebDataset      : {r['shards']} shards, {r['shard_samples']} samples read back")
    print(f"feature store   : {features.written + features.already_present} videos x {r['store'].dim} dims "
          f"(cnn2d-tiny), {r['rows']} rows in 1000 random reads ({1000 / r['feat_s']:.0f} reads/s)")
    print(f"decode (LMDB)   : {r['lmdb_samples']} samples, {r['lmdb_frames']} frames in {r['lmdb_s']:.2f} s = "
          f"{r['lmdb_frames'] / r['lmdb_s']:.0f} frames/s")
    print(f"decode (shards) : {r['shard_frames']} frames in {r['shard_s']:.2f} s = "
          f"{r['shard_frames'] / r['shard_s']:.0f} frames/s")
    print(f"bad files seen  : {r['counter'].count + len(features.bad)} in the world; "
          f"{r['bad_counter'].count} of {len(r['bad_records'])} in the deliberately broken folder skipped "
          f"({r['bad_samples']} good read): {r['bad_counter'].summary()}")


def _print_retrieval(retrieval: dict, raw: dict) -> bool:
    """The zero-shot table next to chance and ``videolang.load``; whether the two agree."""
    chance = retrieval["test/chance_R1"]
    print("\n=== VideoCLIP zero-shot text-to-video retrieval ===")
    print("protocol: MSR-VTT JSFusion-format CSV of the held-out test split (videos never seen in "
          "pretraining), one sentence per video, ties counted against the query")
    n = round(100 / chance)
    chance_values = {"R1": chance, "R5": min(100.0, 5 * chance), "R10": min(100.0, 10 * chance),
                     "MedR": (n + 1) / 2, "MeanR": (n + 1) / 2}
    print(f"{'metric':<8}{'model':>10}{'chance':>10}{'videolang.load':>16}")
    for name in ("R1", "R5", "R10", "MedR", "MeanR"):
        print(f"{name:<8}{retrieval[f'test/msrvtt-test/{name}']:>10.2f}{chance_values[name]:>10.2f}"
              f"{raw[name]:>16.2f}")
    print(f"R@1 is {retrieval['test/msrvtt-test/R1'] / chance:.1f}x chance over {n} test videos; "
          f"run folder: {retrieval['run_dir']}")
    same = all(abs(raw[k] - retrieval[f"test/msrvtt-test/{k}"]) < 1e-3 for k in raw)
    print(f"videolang.load({retrieval['export']}) on the raw test videos: "
          f"{'the same metrics as the run' if same else 'DIFFERENT metrics from the run'}")
    print(f"torch threads   : {torch.get_num_threads()} (results depend on it; the same count gives the "
          "same numbers)")
    return same


def _print_search(search: dict) -> None:
    print("\n=== Search the held-out videos: videolang index / search ===")
    print(f"index: {search['videos']} videos, {search['windows']} windows in {search['seconds']:.1f} s -> "
          f"{search['index']}")
    for ex in search["examples"]:
        print(f'search "{ex["query"]}" (the caption of {ex["video"]}: its rank {ex["rank"]})')
        for rank, hit in enumerate(ex["hits"], 1):
            print(f"  {rank}. {hit['video']}  {hit['start']:.1f}-{hit['end']:.1f} s  score {hit['score']:.3f}")
    print(f"held-out captions whose video is in the top 5 hits: {search['top5']:.1f} % "
          f"(chance {search['chance_top5']:.1f} %, {search['top5'] / search['chance_top5']:.1f}x)")
    print(f"browse them: videolang serve {search['index']}   (then open http://127.0.0.1:8000)")
