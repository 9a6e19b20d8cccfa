"""The synthetic video world: seeded videos of moving shapes with annotations for every task.

``synthesize_world(out_dir, num_videos, seed)`` renders real mp4 files (H.264 or MPEG-4 via
PyAV) plus captions, QA, multiple choice, action labels, anticipation segments, still-image
captions, a text corpus and GLUE-style text tasks, and converters to the real datasets' file
layouts. Everything is deterministic by seed; ``docs/data.md`` documents the world and every
file. Importing this package does not import torch, lightning or transformers.
"""

from __future__ import annotations

from .generate import (
    DEFAULT_DURATION,
    DEFAULT_FPS,
    DEFAULT_GOP,
    DEFAULT_SIZE,
    load_manifest,
    load_videos,
    synthesize_world,
    world_videos,
    write_extra_multiple_choice,
)
from .render import encode_video, render_video_frames, resolve_codec
from .world import (
    ACTIONS,
    CLASS_NAMES,
    COLOURS,
    GENERATOR_VERSION,
    SHAPES,
    SIZES,
    VERB_KEYS,
    VERBS,
    frame_states,
    grammar_weights,
    hflip_verb,
    sample_video_spec,
    scene_chain,
    sequence_plausible,
)

__all__ = [
    "ACTIONS",
    "CLASS_NAMES",
    "COLOURS",
    "DEFAULT_DURATION",
    "DEFAULT_FPS",
    "DEFAULT_GOP",
    "DEFAULT_SIZE",
    "GENERATOR_VERSION",
    "SHAPES",
    "SIZES",
    "VERBS",
    "VERB_KEYS",
    "encode_video",
    "frame_states",
    "grammar_weights",
    "hflip_verb",
    "load_manifest",
    "load_videos",
    "render_video_frames",
    "resolve_codec",
    "sample_video_spec",
    "scene_chain",
    "sequence_plausible",
    "synthesize_world",
    "world_videos",
    "write_extra_multiple_choice",
]
