"""``videolang demo``: the data layer and VideoCLIP end to end on the synthetic world.

1. synthesize a world of real MP4 files with annotations;
2. pack it into an LMDB store and WebDataset shards; extract per-second cnn2d-tiny features
   from the LMDB store into a feature store;
3. read samples back through each (ClipBERT-style sparse clips from LMDB with two DataLoader
   workers, uniform frames from the shards, random access into the features), plus a folder
   with deliberately broken files to show that bad videos are skipped and counted;
4. pretrain VideoCLIP (``configs/videoclip/synthetic_pretrain.yaml``) and evaluate zero-shot
   text-to-video retrieval on the held-out test split in the MSR-VTT (JSFusion) format;
5. load the run's model folder with ``videolang.load`` and score the same test split from the
   raw video files: the same metrics;
6. index the held-out test videos with that model (``videolang index``) and search each test
   caption: the share whose video is in the top 5 hits, next to chance, and three examples;
7. print a summary: counts, bad files seen, decode throughput, retrieval against chance.
"""

from __future__ import annotations

import json
import logging
import time
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

log = logging.getLogger(__name__)


def _clip_sampler(meta, generator):
    from videolang.data.sampling import clipbert_clip_indices

    return clipbert_clip_indices(meta.num_frames, meta.fps, num_clips=2, frames_per_clip=4,
                                 target_fps=4.0, generator=generator)


def _read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


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


CONFIG = resources.files("videolang") / "configs" / "videoclip" / "synthetic_pretrain.yaml"  # shipped in the package


def run_videoclip(world: Path, features: Path, runs: Path, seed: int) -> dict:
    """Pretrain VideoCLIP on the world, then test the export zero-shot; returns the test metrics."""
    from videolang.engine import fit, test
    from videolang.errors import ConfigError

    if not CONFIG.is_file():
        raise ConfigError(f"demo config not found: {CONFIG} (videolang/configs is missing from this install)")
    overrides = [
        f"data.features={features}", f"data.captions={world}/formats/howto100m/raw_caption.json",
        f"data.train_list={world}/formats/howto100m/train.lst",
        f"data.val_pairs={world}/annotations/captions.jsonl",
        f"data.test_pairs={world}/formats/msrvtt/MSRVTT_JSFUSION_test.csv",
        f"run.root={runs}", f"seed={seed}",
    ]
    fitted = fit(CONFIG, overrides)
    tested = test(CONFIG, [*overrides, f"model.init={fitted.run_dir / 'export'}"])
    return {"run_dir": str(fitted.run_dir), "export": str(fitted.run_dir / "export"), **tested.metrics["test"]}


def retrieval_from_raw_videos(export: str | Path, world: Path) -> dict[str, float]:
    """The zero-shot test again, through ``videolang.load`` on the raw test videos (the export's
    own backbone decodes them): the model folder answers as the run's test did."""
    import csv

    import videolang
    from videolang.metrics import retrieval_metrics

    paths = {v["id"]: world / v["path"] for v in _read_jsonl(world / "annotations" / "videos.jsonl")}
    with open(world / "formats" / "msrvtt" / "MSRVTT_JSFUSION_test.csv", newline="", encoding="utf-8") as f:
        pairs = [(row["video_id"], row["sentence"]) for row in csv.DictReader(f)]
    pipe = videolang.load(export)
    scores = pipe.score([str(paths[vid]) for vid, _ in pairs], [text for _, text in pairs])
    return retrieval_metrics(scores.t())


def _test_pairs(world: Path) -> list[tuple[str, str]]:
    """(video id, sentence) of the held-out test split, MSR-VTT JSFusion format."""
    import csv

    with open(world / "formats" / "msrvtt" / "MSRVTT_JSFUSION_test.csv", newline="", encoding="utf-8") as f:
        return [(row["video_id"], row["sentence"]) for row in csv.DictReader(f)]


def search_held_out_videos(export: str | Path, world: Path, out: Path) -> dict:
    """Index the held-out test videos with the trained model; search each test caption.

    Returns the top-5 rate (the caption's video among the first 5 hits), its chance, the rank of
    the right video for every caption, and three example searches with their hits.
    """
    import shutil

    from videolang.search.builder import build_index
    from videolang.search.query import open_index

    paths = {v["id"]: world / v["path"] for v in _read_jsonl(world / "annotations" / "videos.jsonl")}
    pairs = _test_pairs(world)
    folder = out / "search_videos"
    folder.mkdir(parents=True, exist_ok=True)
    for vid, _ in pairs:
        if not (folder / paths[vid].name).is_file():
            shutil.copy(paths[vid], folder / paths[vid].name)
    # The demo's own output, built afresh: a rerun's model may differ (another thread count gives
    # other weights), and an index refuses a model other than its own.
    shutil.rmtree(out / "index", ignore_errors=True)
    report = build_index(export, folder, out / "index", progress=False)
    index = open_index(out / "index")
    n = report.videos
    found = index.search_many([text for _, text in pairs], k=n)
    ranks = []
    for (vid, _), hits in zip(pairs, found, strict=True):
        videos = [Path(h.video).stem for h in hits]
        ranks.append(videos.index(vid) + 1 if vid in videos else n + 1)
    examples = [{"query": pairs[i][1], "video": paths[pairs[i][0]].name, "rank": ranks[i],
                 "hits": [h.to_dict() for h in found[i][:3]]} for i in range(min(3, len(pairs)))]
    return {"index": str(out / "index"), "videos": n, "windows": report.windows, "seconds": report.seconds,
            "top5": 100.0 * sum(r <= 5 for r in ranks) / len(ranks), "chance_top5": 100.0 * min(5, n) / n,
            "ranks": ranks, "examples": examples}


def run_demo(out: str | Path, *, num_videos: int = 1000, seed: int = 0, overwrite: bool = True) -> int:
    from videolang.data.datasets import SkipCounter, VideoFramesDataset, collate_skipping
    from videolang.data.sampling import uniform_frame_indices
    from videolang.data.stores import (
        FeatureStore,
        LmdbVideoStore,
        WebVideoDataset,
        pack_videos,
        write_webdataset,
    )
    from videolang.data.synth import synthesize_world
    from videolang.data.video import VideoReader
    from videolang.pipelines.features import run_extraction

    out = Path(out)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}

    def step(name: str, start: float) -> None:
        timings[name] = time.perf_counter() - start
        print(f"[demo] {name}: {timings[name]:.1f} s", flush=True)

    start = time.perf_counter()
    world = out / "world"
    manifest = synthesize_world(world, num_videos, seed, overwrite=overwrite)
    step("synthesize world", start)
    videos = _read_jsonl(world / "annotations" / "videos.jsonl")

    start = time.perf_counter()
    lmdb_path = out / "videos.lmdb"
    pack = pack_videos(world / "videos", lmdb_path, overwrite=overwrite, progress=False)
    step("pack LMDB", start)

    start = time.perf_counter()
    shards = write_webdataset(
        ({"__key__": v["id"], "mp4": (world / v["path"]).read_bytes(), "json": v} for v in videos),
        out / "shards", maxcount=50, overwrite=overwrite,
    )
    step("write WebDataset shards", start)

    start = time.perf_counter()
    feat_path = out / "features"
    feat_report = run_extraction(str(lmdb_path), "cnn2d-tiny", str(feat_path), dtype="float32",
                                 overwrite=overwrite, progress=False, seed=seed)
    step("extract cnn2d-tiny features from LMDB", start)

    # --- read back -------------------------------------------------------------------------
    counter = SkipCounter()
    records = [{"video": Path(v["path"]).with_suffix("").name, "index": i} for i, v in enumerate(videos)]
    ds = VideoFramesDataset(records, _clip_sampler, store=LmdbVideoStore(lmdb_path), seed=seed)
    loader = DataLoader(ds, batch_size=16, num_workers=2, collate_fn=collate_skipping)
    start = time.perf_counter()
    lmdb_samples, lmdb_frames, lmdb_s = _drain(loader, counter)
    step("read LMDB (2 clips x 4 frames, 2 workers)", start)

    start = time.perf_counter()
    shard_samples = shard_frames = 0
    for sample in WebVideoDataset(shards):
        with VideoReader(sample["video"]) as reader:
            idx = uniform_frame_indices(reader.metadata.num_frames, 8)
            shard_frames += reader.read(idx).shape[0]
        shard_samples += 1
    shard_s = time.perf_counter() - start
    step("read WebDataset shards (8 uniform frames)", start)

    start = time.perf_counter()
    features = FeatureStore(feat_path)
    rng = np.random.default_rng(seed)
    ids = list(features.ids)
    rows = sum(features[ids[i]].shape[0] for i in rng.integers(0, len(ids), 1000))
    feat_s = time.perf_counter() - start
    step("1000 random feature reads", start)

    bad_counter = SkipCounter()
    bad_records = _make_bad_folder(world, out / "bad_videos", [v["path"] for v in videos[:4]])
    bad_ds = VideoFramesDataset(bad_records, _clip_sampler, video_root=out / "bad_videos", seed=seed)
    bad_loader = DataLoader(bad_ds, batch_size=4, num_workers=0, collate_fn=collate_skipping)
    bad_samples, _, _ = _drain(bad_loader, bad_counter)

    start = time.perf_counter()
    retrieval = run_videoclip(world, feat_path, out / "runs", seed)
    step("VideoCLIP pretraining + zero-shot test", start)

    start = time.perf_counter()
    raw = retrieval_from_raw_videos(retrieval["export"], world)
    step("videolang.load: the same test from the raw videos", start)

    start = time.perf_counter()
    search = search_held_out_videos(retrieval["export"], world, out)
    step("videolang index + search of the held-out videos", start)

    total = time.perf_counter() - t0
    counts = manifest.get("counts", {})
    print("\n=== videolang demo: data layer summary ===")
    print(f"world           : {num_videos} videos (seed {seed}) in {world}")
    for key in sorted(counts):
        print(f"  {key:<22}: {counts[key]}")
    print(f"LMDB            : {pack.n_packed} videos, {pack.n_bytes / 1e6:.1f} MB, "
          f"{len(pack.skipped)} unreadable")
    print(f"WebDataset      : {len(shards)} shards, {shard_samples} samples read back")
    print(f"feature store   : {feat_report.written} videos x {features.dim} dims (cnn2d-tiny), "
          f"{rows} rows in 1000 random reads ({1000 / feat_s:.0f} reads/s)")
    print(f"decode (LMDB)   : {lmdb_samples} samples, {lmdb_frames} frames in {lmdb_s:.2f} s = "
          f"{lmdb_frames / lmdb_s:.0f} frames/s")
    print(f"decode (shards) : {shard_frames} frames in {shard_s:.2f} s = {shard_frames / shard_s:.0f} frames/s")
    print(f"bad files seen  : {counter.count + len(feat_report.bad)} in the world; "
          f"{bad_counter.count} of {len(bad_records)} in the deliberately broken folder skipped "
          f"({bad_samples} good read): {bad_counter.summary()}")
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
    print(f"total           : {total:.1f} s")
    ok = (
        lmdb_samples == num_videos and shard_samples == num_videos
        and bad_counter.count == 4 and bad_samples == 4 and not feat_report.bad and same
    )
    if not ok:
        print("demo: FAILED consistency checks (see counts above)")
        return 1
    return 0
