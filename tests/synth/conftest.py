"""Shared small synthetic worlds (rendered once per session: rendering is the slow part)."""

from __future__ import annotations

import pytest

from videolang.synth import synthesize_world

# Small but complete: every split is non-empty, videos have several events, GOP divides T.
WORLD_ARGS = {"num_videos": 10, "seed": 7, "size": 64, "fps": 10, "duration": 3.0, "gop": 5}


@pytest.fixture(scope="session")
def world_args() -> dict:
    return dict(WORLD_ARGS)


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory):
    """(path, manifest) of a 10-video world rendered with 2 workers."""
    root = tmp_path_factory.mktemp("synth") / "world"
    manifest = synthesize_world(root, **WORLD_ARGS, workers=2, progress=False)
    return root, manifest
