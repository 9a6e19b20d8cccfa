"""The steps every ``videolang demo`` takes, each with one policy.

- **world**: reused when its manifest comes from this generator version with the same
  arguments (count, seed, video settings); otherwise synthesized into a temporary sibling and
  swapped in.
- **derived files** (features, tokenizers, token stores): rebuilt when older than the world's
  manifest (made from an earlier world), else kept; feature extraction resumes.
- **fit, then test**: test the checkpoint the export was made from (best validation epoch,
  else the last) with the fit's own config and overrides.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from videolang.errors import ConfigError, VideolangError

CONFIGS = resources.files("videolang") / "configs"  # shipped in the package


def demo_config(method: str, name: str) -> Path:
    """The shipped config ``configs/METHOD/NAME``; a named error when the install lacks it."""
    path = Path(str(CONFIGS / method / name))
    if not path.is_file():
        raise ConfigError(f"demo config not found: {path} (videolang/configs is missing from this install)")
    return path


@dataclass(frozen=True)
class World:
    """A synthetic world on disk and its manifest."""

    path: Path
    manifest: dict[str, Any]

    def outdates(self, derived: Path) -> bool:
        """Whether ``derived`` must be rebuilt: it is missing or older than this world."""
        from videolang.synth.generate import MANIFEST

        return not derived.exists() or derived.stat().st_mtime < (self.path / MANIFEST).stat().st_mtime


def _world_args(num_videos: int, seed: int) -> dict[str, Any]:
    """The ``args`` that :func:`synthesize_world` records for a demo's world (default video settings)."""
    from videolang.synth import DEFAULT_DURATION, DEFAULT_FPS, DEFAULT_GOP, DEFAULT_SIZE

    return {"num_videos": num_videos, "seed": seed, "size": DEFAULT_SIZE, "fps": DEFAULT_FPS,
            "duration": float(DEFAULT_DURATION), "gop": DEFAULT_GOP, "codec": "auto"}


def synthesize_or_reuse(folder: Path, num_videos: int, seed: int, *, overwrite: bool = True,
                        progress: bool = False) -> World:
    """The world of ``num_videos`` videos and ``seed`` in ``folder``: the one there if its manifest
    matches (generator version and arguments), else a new one swapped in atomically."""
    from videolang.synth import GENERATOR_VERSION, load_manifest, synthesize_world
    from videolang.synth.generate import MANIFEST

    if (folder / MANIFEST).is_file():
        manifest = load_manifest(folder)
        if manifest.get("version") == GENERATOR_VERSION and manifest.get("args") == _world_args(num_videos, seed):
            print(f"[demo] reusing the world in {folder} ({num_videos} videos, seed {seed})", flush=True)
            return World(folder, manifest)
    manifest = synthesize_world(folder, num_videos, seed, overwrite=overwrite, progress=progress)
    return World(folder, manifest)


def extract_features(world: World, out: Path, backbone: str, options: dict[str, Any] | None = None, *,
                     videos: Path | None = None, seed: int = 0) -> Any:
    """Float32 ``backbone`` features of the world's videos (or of ``videos``, e.g. an LMDB store of
    them) into ``out``: replaced when older than the world, else resumed. Returns the report;
    raises when a video could not be read (the world's videos are all good)."""
    from videolang.pipelines.features import EXTRACTION_INFO_NAME, run_extraction

    report = run_extraction(str(videos or world.path / "videos"), backbone, str(out), dtype="float32",
                            backbone_options=options, overwrite=world.outdates(out / EXTRACTION_INFO_NAME),
                            progress=False, seed=seed)
    if report.bad:
        raise VideolangError(f"feature extraction failed for {len(report.bad)} videos: {report.bad[:3]}")
    return report


def build_tokenizer(world: World, out: Path, texts: Sequence[str] | Path, vocab_size: int) -> Path:
    """A WordPiece tokenizer trained on ``texts`` into ``out``, unless one newer than the world is there."""
    from videolang.data.text import build_wordpiece_tokenizer

    if world.outdates(out / "tokenizer.json"):
        build_wordpiece_tokenizer(texts, out, vocab_size=vocab_size, overwrite=True)
    return out


def world_texts(world: World) -> tuple[list[str], list[str]]:
    """The world's captions (``annotations/captions.jsonl``) and text corpus lines (``text/corpus.txt``)."""
    captions = [json.loads(line)["caption"] for line in
                (world.path / "annotations" / "captions.jsonl").read_text().splitlines() if line.strip()]
    return captions, (world.path / "text" / "corpus.txt").read_text().splitlines()


@dataclass(frozen=True)
class Trained:
    """A fitted and tested run: its folder, the fit's ``metrics.json`` and the test metrics."""

    run_dir: Path
    fit: dict[str, Any]
    test: dict[str, float]

    @property
    def export(self) -> Path:
        return self.run_dir / "export"


def fit_then_test(config: Path, overrides: Sequence[str]) -> Trained:
    """Fit ``config`` with ``overrides``, then test the checkpoint its export was made from."""
    from videolang.engine import fit, test

    fitted = fit(config, overrides)
    checkpoints = fitted.metrics.get("checkpoints") or {}
    checkpoint = checkpoints.get("best") or checkpoints.get("last")
    if not checkpoint:
        raise VideolangError(f"{fitted.run_dir}: the fit saved no checkpoint to test")
    tested = test(config, overrides, resume=checkpoint)
    return Trained(fitted.run_dir, fitted.metrics, tested.metrics.get("test", {}))


def scaled_epochs(epochs: int, scale: float) -> int:
    """``epochs`` times ``scale``, at least one (``--epochs-scale`` of the demos)."""
    return max(1, round(epochs * scale))


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value) over seeds."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def write_summary(out: Path, summary: dict[str, Any]) -> Path:
    """``OUT/summary.json``, written atomically."""
    from videolang.utils.io import atomic_write_text

    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2), overwrite=True)
    return out / "summary.json"
