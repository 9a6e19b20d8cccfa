"""The synthetic world: vocabulary, the action grammar and per-video scene specifications.

1 to 3 objects per video, 2 to 6 events drawn from a fixed reversible Markov chain over
verb-noun actions (predictable but never certain), built so that motion cannot be read from a
single frame. Everything is pure and deterministic given ``(seed, index)``; a spec is a plain
JSON dict (rounded floats), so ``render_video_frames`` on a record read back from
``videos.jsonl`` reproduces the frames exactly. Why and how: docs/data.md ("The world").
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from videolang.errors import ConfigError

GENERATOR_VERSION = "1.0"

# ---------------------------------------------------------------------------------------------
# vocabulary


@dataclass(frozen=True)
class Verb:
    """A motion. ``axis`` is the state coordinate it changes (x, y, log-scale s, angle r) and
    ``sign`` the direction in image coordinates (y grows downwards, angle grows clockwise)."""

    key: str
    axis: str | None
    sign: int
    opposite: str
    answer: str  # the one-word answer used by open-ended QA


VERBS: tuple[Verb, ...] = (
    Verb("move-left", "x", -1, "move-right", "left"),
    Verb("move-right", "x", +1, "move-left", "right"),
    Verb("move-up", "y", -1, "move-down", "up"),
    Verb("move-down", "y", +1, "move-up", "down"),
    Verb("grow", "s", +1, "shrink", "grow"),
    Verb("shrink", "s", -1, "grow", "shrink"),
    Verb("rotate-cw", "r", +1, "rotate-ccw", "clockwise"),
    Verb("rotate-ccw", "r", -1, "rotate-cw", "counterclockwise"),
    Verb("stay-still", None, 0, "stay-still", "still"),
)
VERB_KEYS: tuple[str, ...] = tuple(v.key for v in VERBS)
VERB_INDEX: dict[str, int] = {k: i for i, k in enumerate(VERB_KEYS)}
VERB_BY_KEY: dict[str, Verb] = {v.key: v for v in VERBS}

# Nouns are shapes; shapes are unique within a video, so the noun names the object.
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross", "star")
NOUN_INDEX: dict[str, int] = {s: i for i, s in enumerate(SHAPES)}
# Rotating a circle is invisible, so that action does not exist.
INVALID_ACTIONS: frozenset[tuple[str, str]] = frozenset(
    {("rotate-cw", "circle"), ("rotate-ccw", "circle")}
)

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (240, 140, 20),
    "yellow": (235, 220, 40),
    "green": (40, 190, 70),
    "blue": (40, 90, 230),
    "purple": (150, 60, 210),
}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)

# Nominal circumradius as a fraction of the frame side.
SIZES: dict[str, float] = {"small": 0.09, "medium": 0.125, "large": 0.165}
SIZE_NAMES: tuple[str, ...] = tuple(SIZES)

BACKGROUND: tuple[int, int, int] = (48, 48, 48)

# Actions, verb-major: (verb, noun) for every valid pair.
ACTIONS: tuple[tuple[str, str], ...] = tuple(
    (v, n) for v in VERB_KEYS for n in SHAPES if (v, n) not in INVALID_ACTIONS
)
ACTION_INDEX: dict[tuple[str, str], int] = {a: i for i, a in enumerate(ACTIONS)}


def action_key(verb: str, noun: str) -> str:
    """EPIC-Kitchens style action key ``verb_noun`` (verbs use hyphens, never underscores)."""
    return f"{verb}_{noun}"


# Action-recognition classes: the verb of the video's longest event.
CLASS_NAMES: tuple[str, ...] = VERB_KEYS

# ---------------------------------------------------------------------------------------------
# motion constants

LOG_SCALE_LIMIT = 0.25  # log-scale stays in [-0.25, 0.25] (x0.78 .. x1.28 the nominal size)
MOVE_SPEED = (0.18, 0.30)  # frame sides per second
SCALE_SPEED = (0.30, 0.45)  # log-scale units per second
ROTATE_SPEED_DEG = 90.0  # degrees per second, x U(0.8, 1.2), capped at 15 degrees per frame
MAX_DEG_PER_FRAME = 15.0
EDGE_MARGIN = 0.01
MIN_EVENT_SECONDS = 0.4
PLACEMENT_TRIES = 12
NON_OVERLAP = 0.9  # accepted if centres stay >= 0.9 * (r_i + r_j) apart in every frame

# ---------------------------------------------------------------------------------------------
# the grammar

GRAMMAR_SEED = 20240917
GRAMMAR_SIGMA = 1.3  # log-normal spread of transition weights: the world's "habits"
GRAMMAR_SAME_NOUN = 2.5  # objects tend to keep acting
GRAMMAR_ZERO_SAME = 0.2  # fraction of forbidden transitions within one object
GRAMMAR_ZERO_CROSS = 0.35  # ... and between two objects
GRAMMAR_MIN_SAME = 3  # every action has at least this many allowed same-object successors


def _mirror_perms() -> list[np.ndarray]:
    """The 16 permutations of actions that swap opposite verbs on any subset of the 4 axes."""
    pairs = [
        ("move-left", "move-right"),
        ("move-up", "move-down"),
        ("grow", "shrink"),
        ("rotate-cw", "rotate-ccw"),
    ]
    perms = []
    for mask in range(16):
        swap = {}
        for bit, (a, b) in enumerate(pairs):
            if mask >> bit & 1:
                swap[a], swap[b] = b, a
        perms.append(np.array([ACTION_INDEX[(swap.get(v, v), n)] for v, n in ACTIONS]))
    return perms


@functools.lru_cache(maxsize=1)
def grammar_weights() -> np.ndarray:
    """Symmetric, mirror-invariant, sparse weight matrix W[a, b] over actions (fixed seed).

    Symmetry makes the chain reversible; mirror invariance makes opposite verbs exchangeable.
    Both are needed for the "no motion from one frame" guarantee (module docstring).
    """
    n = len(ACTIONS)
    perms = _mirror_perms()
    orbit = -np.ones((n, n), dtype=np.int64)
    k = 0
    for i in range(n):
        for j in range(i, n):
            if orbit[i, j] >= 0:
                continue
            for p in perms:
                a, b = p[i], p[j]
                orbit[a, b] = orbit[b, a] = k
            k += 1
    rng = np.random.default_rng(GRAMMAR_SEED)
    latent = rng.normal(size=k)
    keep = rng.random(size=k)
    nouns = np.array([NOUN_INDEX[a[1]] for a in ACTIONS])
    same = nouns[:, None] == nouns[None, :]
    weights = np.exp(GRAMMAR_SIGMA * latent[orbit]) * np.where(same, GRAMMAR_SAME_NOUN, 1.0)
    zero_p = np.where(same, GRAMMAR_ZERO_SAME, GRAMMAR_ZERO_CROSS)
    zero_orbits = set(np.unique(orbit[keep[orbit] < zero_p]).tolist())
    # Keep enough allowed same-object successors for every action (so one-object scenes work
    # and no transition is certain): re-allow the strongest forbidden orbits first.
    for i in range(n):
        block = np.flatnonzero(same[i])
        allowed = [j for j in block if orbit[i, j] not in zero_orbits]
        if len(allowed) < GRAMMAR_MIN_SAME:
            cands = sorted(
                (j for j in block if orbit[i, j] in zero_orbits),
                key=lambda j: (-latent[orbit[i, j]], j),
            )
            for j in cands[: GRAMMAR_MIN_SAME - len(allowed)]:
                zero_orbits.discard(int(orbit[i, j]))
    mask = np.isin(orbit, np.array(sorted(zero_orbits), dtype=np.int64))
    weights[mask] = 0.0
    weights.setflags(write=False)
    return weights


@dataclass(frozen=True)
class SceneChain:
    """The grammar restricted to the actions of the nouns present in a scene."""

    actions: tuple[int, ...]  # global action ids, sorted
    start: np.ndarray  # stationary distribution of the restricted chain
    transition: np.ndarray  # row-stochastic


@functools.lru_cache(maxsize=128)
def scene_chain(nouns: tuple[str, ...]) -> SceneChain:
    """Restrict the chain to ``nouns``: P[a, b] = W[a, b] / sum_b' W[a, b'] within the scene.

    The restriction of a reversible chain is reversible w.r.t. pi[a] ~ sum_b W[a, b]; starting
    there makes a sequence and its reverse equally likely.
    """
    noun_set = set(nouns)
    if not noun_set or not noun_set <= set(SHAPES):
        raise ConfigError(f"scene nouns must be a non-empty subset of {SHAPES}, got {nouns!r}")
    idx = tuple(i for i, (_, n) in enumerate(ACTIONS) if n in noun_set)
    w = grammar_weights()[np.ix_(idx, idx)]
    rows = w.sum(axis=1)
    return SceneChain(actions=idx, start=rows / rows.sum(), transition=w / rows[:, None])


def sample_actions(rng: np.random.Generator, nouns: Sequence[str], length: int) -> list[int]:
    """A sequence of ``length`` action ids from the grammar restricted to ``nouns``."""
    chain = scene_chain(tuple(sorted(nouns)))
    local = [int(rng.choice(len(chain.actions), p=chain.start))]
    for _ in range(length - 1):
        local.append(int(rng.choice(len(chain.actions), p=chain.transition[local[-1]])))
    return [chain.actions[i] for i in local]


def transition_allowed(a: int, b: int) -> bool:
    """Whether action ``b`` may directly follow action ``a`` in the world's grammar."""
    return bool(grammar_weights()[a, b] > 0)


def sequence_plausible(actions: Sequence[int]) -> bool:
    """True when every consecutive transition of ``actions`` is allowed by the grammar."""
    return all(transition_allowed(a, b) for a, b in itertools.pairwise(actions))


def transition_table() -> dict[str, dict[str, float]]:
    """Unrestricted transition probabilities {from_action_key: {to_action_key: p}} (p > 0)."""
    w = grammar_weights()
    p = w / w.sum(axis=1, keepdims=True)
    out: dict[str, dict[str, float]] = {}
    for i, a in enumerate(ACTIONS):
        out[action_key(*a)] = {
            action_key(*ACTIONS[j]): round(float(p[i, j]), 6) for j in np.flatnonzero(p[i])
        }
    return out


# ---------------------------------------------------------------------------------------------
# video specs


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, *stream])


def check_video_args(size: int, fps: int, duration: float, gop: int) -> int:
    """Validate generation arguments; return the number of frames per video."""
    if not isinstance(size, int) or size < 16 or size % 2:
        raise ConfigError(
            f"size={size!r}: must be an even integer >= 16 (yuv420p needs even sizes)"
        )
    if not isinstance(fps, int) or fps < 1:
        raise ConfigError(f"fps={fps!r}: must be a positive integer")
    if not isinstance(gop, int) or gop < 1:
        raise ConfigError(f"gop={gop!r}: must be a positive integer")
    if not (isinstance(duration, int | float) and math.isfinite(duration) and duration > 0):
        raise ConfigError(f"duration={duration!r}: must be a positive number of seconds")
    num_frames = round(fps * duration)
    if num_frames < 2 * _min_event_frames(fps):
        raise ConfigError(
            f"duration={duration} at fps={fps} gives {num_frames} frames; need at least "
            f"{2 * _min_event_frames(fps)} for two events"
        )
    return num_frames


def _min_event_frames(fps: int) -> int:
    return max(2, round(MIN_EVENT_SECONDS * fps))


def _split_frames(rng: np.random.Generator, total: int, n: int, minimum: int) -> list[int]:
    """Exchangeable split of ``total`` frames into ``n`` parts of at least ``minimum``."""
    weights = rng.gamma(4.0, size=n)
    rest = total - n * minimum
    share = weights / weights.sum() * rest
    counts = np.floor(share).astype(np.int64)
    left = rest - int(counts.sum())
    order = np.argsort(-(share - counts), kind="stable")
    counts[order[:left]] += 1
    return [int(c) + minimum for c in counts]


def _fit_path(steps: list[float], lo: float, hi: float) -> tuple[list[float], float, float]:
    """Shrink ``steps`` if the path they trace does not fit in [lo, hi]; return the steps and
    the interval of start values that keep the whole path inside (drawn uniformly, this places
    the path as a whole, which is what makes a path and its reverse equally likely)."""
    partial = np.concatenate([[0.0], np.cumsum(steps)]) if steps else np.zeros(1)
    span = float(partial.max() - partial.min())
    room = (hi - lo) * 0.98
    if span > room:
        steps = [s * room / span for s in steps]
        partial = partial * (room / span)
    return steps, lo - float(partial.min()), hi - float(partial.max())


def _r(x: float, nd: int = 6) -> float:
    return round(float(x), nd)


def sample_scene(rng: np.random.Generator) -> list[dict[str, Any]]:
    """1 to 3 objects with distinct shapes and colours and independent sizes."""
    n_obj = int(rng.integers(1, 4))
    shapes = rng.choice(len(SHAPES), size=n_obj, replace=False)
    colours = rng.choice(len(COLOUR_NAMES), size=n_obj, replace=False)
    sizes = rng.integers(0, len(SIZE_NAMES), size=n_obj)
    return [
        {"shape": SHAPES[int(s)], "colour": COLOUR_NAMES[int(c)], "size": SIZE_NAMES[int(z)]}
        for s, c, z in zip(shapes, colours, sizes, strict=True)
    ]


def sample_events(
    rng: np.random.Generator, objects: Sequence[dict[str, Any]], num_frames: int, fps: int
) -> list[dict[str, Any]]:
    """2 to 6 events tiling ``num_frames`` frames, actions drawn from the scene's grammar.

    Returned events carry frame bounds (end exclusive), the object index, verb and noun; the
    motion magnitude (``delta``) is filled in by :func:`sample_video_spec`.
    """
    minimum = _min_event_frames(fps)
    n_events = min(int(rng.integers(2, 7)), num_frames // minimum)
    nouns = [o["shape"] for o in objects]
    actions = sample_actions(rng, nouns, n_events)
    lengths = _split_frames(rng, num_frames, n_events, minimum)
    events, f0 = [], 0
    for k, (a, length) in enumerate(zip(actions, lengths, strict=True)):
        verb, noun = ACTIONS[a]
        events.append(
            {
                "index": k,
                "start_frame": f0,
                "end_frame": f0 + length,
                "start": _r(f0 / fps),
                "end": _r((f0 + length) / fps),
                "object": nouns.index(noun),
                "verb": verb,
                "noun": noun,
                "action": action_key(verb, noun),
                "verb_id": VERB_INDEX[verb],
                "noun_id": NOUN_INDEX[noun],
                "action_id": a,
            }
        )
        f0 += length
    return events


def video_id(index: int) -> str:
    """Stable id of the ``index``-th video: vid00000, vid00001, ..."""
    return f"vid{index:05d}"


def sample_video_spec(
    seed: int, index: int, *, size: int = 64, fps: int = 10, duration: float = 4.0
) -> dict[str, Any]:
    """The full, JSON-serialisable description of video ``index`` of world ``seed``.

    Depends only on ``(seed, index)`` and the frame geometry, so parallel workers produce the
    same videos as a serial run.
    """
    num_frames = check_video_args(size, fps, duration, 1)
    rng = _rng(seed, index, 1)
    objects = sample_scene(rng)
    events = sample_events(rng, objects, num_frames, fps)
    # Motion magnitudes, independent of direction (so opposite verbs are exchangeable).
    for ev in events:
        verb = VERB_BY_KEY[ev["verb"]]
        secs = (ev["end_frame"] - ev["start_frame"]) / fps
        if verb.axis in ("x", "y"):
            mag = rng.uniform(*MOVE_SPEED) * secs
        elif verb.axis == "s":
            mag = rng.uniform(*SCALE_SPEED) * secs
        elif verb.axis == "r":
            speed = ROTATE_SPEED_DEG * rng.uniform(0.8, 1.2)
            mag = min(speed, MAX_DEG_PER_FRAME * fps) * secs
        else:
            mag = 0.0
        ev["delta"] = verb.sign * mag
    # Per object and axis: place the whole trajectory uniformly inside the allowed range.
    placed = []
    for oi, obj in enumerate(objects):
        mine = [ev for ev in events if ev["object"] == oi]
        by_axis = {ax: [ev for ev in mine if VERB_BY_KEY[ev["verb"]].axis == ax] for ax in "xysr"}
        ranges = {}
        # Scale first: the largest size reached decides how much room x and y have.
        steps, a, b = _fit_path(
            [ev["delta"] for ev in by_axis["s"]], -LOG_SCALE_LIMIT, LOG_SCALE_LIMIT
        )
        ls0 = float(rng.uniform(a, b))
        for ev, d in zip(by_axis["s"], steps, strict=True):
            ev["delta"] = d
        peak = ls0 + max([0.0, *np.cumsum(steps).tolist()])
        r_max = SIZES[obj["size"]] * math.exp(peak)
        for ax in "xy":
            steps, a, b = _fit_path(
                [ev["delta"] for ev in by_axis[ax]], r_max + EDGE_MARGIN, 1.0 - r_max - EDGE_MARGIN
            )
            for ev, d in zip(by_axis[ax], steps, strict=True):
                ev["delta"] = d
            ranges[ax] = (a, b)
        angle = float(rng.uniform(0.0, 360.0))
        placed.append({"ls0": ls0, "xr": ranges["x"], "yr": ranges["y"], "angle": angle})
    for ev in events:
        ev["delta"] = _r(ev["delta"])
    # Positions: up to PLACEMENT_TRIES uniform placements, keep the first without overlap
    # (else the least overlapping). The criterion is time-symmetric, so it keeps the
    # reversal symmetry.
    best, best_score = None, -1.0
    for _ in range(PLACEMENT_TRIES):
        xy = [(_r(rng.uniform(*p["xr"])), _r(rng.uniform(*p["yr"]))) for p in placed]
        cand = [
            {
                **obj,
                "rgb": list(COLOURS[obj["colour"]]),
                "radius": SIZES[obj["size"]],
                "x": x,
                "y": y,
                "log_scale": _r(p["ls0"]),
                "angle": _r(p["angle"], 4),
            }
            for obj, p, (x, y) in zip(objects, placed, xy, strict=True)
        ]
        score = _separation(cand, events, num_frames)
        if score > best_score:
            best, best_score = cand, score
        if score >= NON_OVERLAP:
            break
    assert best is not None
    for i, obj in enumerate(best):
        obj["index"] = i
    return {
        "id": video_id(index),
        "index": index,
        "fps": fps,
        "num_frames": num_frames,
        "duration": _r(num_frames / fps),
        "width": size,
        "height": size,
        "background": list(BACKGROUND),
        "objects": best,
        "events": events,
        "label": video_label(events),
    }


def video_label(events: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Action-recognition label: the verb of the longest event (earliest on ties).

    The verb is a motion, so no single frame tells the class; the scene's appearance is
    shared across classes.
    """
    longest = max(events, key=lambda e: (e["end_frame"] - e["start_frame"], -e["index"]))
    return {"id": VERB_INDEX[longest["verb"]], "name": longest["verb"]}


def frame_states(spec: dict[str, Any]) -> np.ndarray:
    """Per-frame object states, float64 (T, n_objects, 4): x, y, log-scale, angle (degrees).

    Motion is linear within an event and sampled at frame centres (t = (i + 0.5) / fps): the
    centre sampling makes the frame set of a motion equal to that of its time-reverse.
    """
    t = np.arange(spec["num_frames"], dtype=np.float64) + 0.5
    objs = spec["objects"]
    states = np.empty((len(t), len(objs), 4), dtype=np.float64)
    for i, o in enumerate(objs):
        states[:, i, 0], states[:, i, 1] = o["x"], o["y"]
        states[:, i, 2], states[:, i, 3] = o["log_scale"], o["angle"]
    col = {"x": 0, "y": 1, "s": 2, "r": 3}
    for ev in spec["events"]:
        axis = VERB_BY_KEY[ev["verb"]].axis
        if axis is None:
            continue
        f0, f1 = ev["start_frame"], ev["end_frame"]
        progress = np.clip((t - f0) / (f1 - f0), 0.0, 1.0)
        states[:, ev["object"], col[axis]] += progress * ev["delta"]
    return states


def _separation(
    objects: Sequence[dict[str, Any]], events: Sequence[dict[str, Any]], num_frames: int
) -> float:
    """min over frames and object pairs of centre distance / (r_i + r_j); inf for 1 object."""
    if len(objects) < 2:
        return math.inf
    st = frame_states({"num_frames": num_frames, "objects": objects, "events": events})
    radii = np.array([o["radius"] for o in objects])[None, :] * np.exp(st[:, :, 2])
    best = math.inf
    for i in range(len(objects)):
        for j in range(i + 1, len(objects)):
            d = np.hypot(st[:, i, 0] - st[:, j, 0], st[:, i, 1] - st[:, j, 1])
            best = min(best, float(np.min(d / (radii[:, i] + radii[:, j]))))
    return best


def hflip_verb(verb: str) -> str:
    """The verb seen in a left-right mirrored video: left<->right and cw<->ccw swap."""
    return {
        "move-left": "move-right",
        "move-right": "move-left",
        "rotate-cw": "rotate-ccw",
        "rotate-ccw": "rotate-cw",
    }.get(verb, verb)
