"""Drawing frames with numpy and encoding them with PyAV.

Drawing is vectorised over (frames, height, width) with anti-aliased signed-distance shapes, so
sub-pixel motion is smooth and the codec has no aliasing to fight. Only IEEE-exact array
operations (add, multiply, abs, min/max, sqrt) touch the pixel grid; trigonometry and
exponentials are computed per frame with Python's ``math``, so the pixels do not depend on
which SIMD path numpy picks. Encoding is single-threaded with fixed keyframes and bit-exact
container flags, so the same frames always give the same bytes.
"""

from __future__ import annotations

import io
import math
import os
from fractions import Fraction
from typing import Any

import numpy as np

from videolang.errors import ConfigError, VideolangError

from .world import frame_states

# ---------------------------------------------------------------------------------------------
# shapes: signed distance in units of the circumradius, negative inside

_SQRT3_2 = math.sqrt(3.0) / 2.0


def _half_planes(
    u: np.ndarray, v: np.ndarray, normals: list[tuple[float, float]], offset: float
) -> np.ndarray:
    d = None
    for nx, ny in normals:
        e = u * nx + v * ny - offset
        d = e if d is None else np.maximum(d, e)
    assert d is not None
    return d


def _box(u: np.ndarray, v: np.ndarray, hu: float, hv: float) -> np.ndarray:
    return np.maximum(np.abs(u) - hu, np.abs(v) - hv)


# Equilateral triangle with circumradius 1 pointing up (y grows downwards): inradius 0.5.
_TRI_NORMALS = [(0.0, 1.0), (_SQRT3_2, -0.5), (-_SQRT3_2, -0.5)]
_DIAMOND_W = 0.6
_DIAMOND_NORM = math.hypot(1.0, _DIAMOND_W)


def _sdf(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    if shape == "circle":
        return np.sqrt(u * u + v * v) - 0.9
    if shape == "square":
        return _box(u, v, 0.7, 0.7)
    if shape == "triangle":
        return _half_planes(u, v, _TRI_NORMALS, 0.5)
    if shape == "diamond":
        return (np.abs(u) + np.abs(v) * _DIAMOND_W - _DIAMOND_W) / _DIAMOND_NORM
    if shape == "cross":
        return np.minimum(_box(u, v, 0.95, 0.3), _box(u, v, 0.3, 0.95))
    if shape == "star":  # hexagram: a triangle and its point reflection
        return np.minimum(
            _half_planes(u, v, _TRI_NORMALS, 0.5), _half_planes(-u, -v, _TRI_NORMALS, 0.5)
        )
    raise ConfigError(f"unknown shape {shape!r}")


def render_video_frames(video_spec: dict[str, Any]) -> np.ndarray:
    """Draw the frames of ``video_spec`` (a ``videos.jsonl`` record): uint8 (T, H, W, 3).

    Pure and deterministic: the synthesizer encodes exactly this array, so tests can compare
    decoded frames with it.
    """
    h, w = int(video_spec["height"]), int(video_spec["width"])
    side = float(min(h, w))
    states = frame_states(video_spec)  # (T, n, 4)
    t = states.shape[0]
    img = np.empty((t, h, w, 3), dtype=np.float32)
    img[...] = np.asarray(video_spec["background"], dtype=np.float32)
    ys = (np.arange(h, dtype=np.float32) + 0.5)[None, :, None]
    xs = (np.arange(w, dtype=np.float32) + 0.5)[None, None, :]
    for i, obj in enumerate(video_spec["objects"]):
        st = states[:, i, :]
        cx = np.array([x * w for x in st[:, 0]], dtype=np.float32)[:, None, None]
        cy = np.array([y * h for y in st[:, 1]], dtype=np.float32)[:, None, None]
        radius = [obj["radius"] * side * math.exp(s) for s in st[:, 2]]
        rad = np.array(radius, dtype=np.float32)[:, None, None]
        inv = np.array([1.0 / r for r in radius], dtype=np.float32)[:, None, None]
        cos = np.array([math.cos(math.radians(a)) for a in st[:, 3]], dtype=np.float32)[
            :, None, None
        ]
        sin = np.array([math.sin(math.radians(a)) for a in st[:, 3]], dtype=np.float32)[
            :, None, None
        ]
        # Only the box the object ever touches is computed (shapes lie within their
        # circumradius; anti-aliasing and mitred corners add at most 1 pixel). Pixels outside
        # it would get alpha 0, so the result is the same as drawing the whole frame.
        reach = max(radius) + 2.0
        x0 = max(0, math.floor(float(cx.min()) - reach))
        x1 = min(w, math.ceil(float(cx.max()) + reach) + 1)
        y0 = max(0, math.floor(float(cy.min()) - reach))
        y1 = min(h, math.ceil(float(cy.max()) + reach) + 1)
        if x0 >= x1 or y0 >= y1:
            continue
        dx, dy = xs[:, :, x0:x1] - cx, ys[:, y0:y1, :] - cy
        # Rotate the pixel offsets by -angle into the shape's frame (angle grows clockwise).
        u = (dx * cos + dy * sin) * inv
        v = (dy * cos - dx * sin) * inv
        dist = _sdf(obj["shape"], u, v) * rad  # pixels
        alpha = np.clip(0.5 - dist, 0.0, 1.0)[..., None]
        colour = np.asarray(obj["rgb"], dtype=np.float32)
        crop = img[:, y0:y1, x0:x1]
        crop += alpha * (colour - crop)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# encoding

CODECS = {"h264": "libx264", "mpeg4": "mpeg4"}


def _encoder_available(name: str) -> bool:
    import av

    if name not in av.codecs_available:
        return False
    try:
        av.codec.Codec(name, "w")
    except Exception:
        return False
    return True


def resolve_codec(codec: str) -> str:
    """Map ``auto|h264|mpeg4`` to a PyAV encoder name: libx264 when present, else mpeg4."""
    if codec == "auto":
        return "libx264" if _encoder_available("libx264") else "mpeg4"
    if codec not in CODECS:
        raise ConfigError(f"codec={codec!r}: choose one of auto, h264, mpeg4")
    name = CODECS[codec]
    if not _encoder_available(name):
        raise VideolangError(f"codec={codec!r}: this PyAV build has no {name} encoder")
    return name


def encode_video(
    frames: np.ndarray,
    path: str | os.PathLike | None,
    *,
    fps: int,
    gop: int,
    encoder: str = "libx264",
    crf: int = 18,
) -> bytes:
    """Encode uint8 (T, H, W, 3) frames as an mp4 (yuv420p); return the bytes (and write ``path``).

    Keyframes fall exactly on multiples of ``gop`` (no scene-cut keyframes, no B-frames), one
    encoder thread and bit-exact flags make the output byte-reproducible.
    """
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream(encoder, rate=fps)
        stream.width, stream.height = int(frames.shape[2]), int(frames.shape[1])
        stream.pix_fmt = "yuv420p"
        ctx = stream.codec_context
        ctx.gop_size = gop
        ctx.thread_count = 1
        if encoder == "libx264":
            ctx.options = {
                "crf": str(crf),
                "preset": "veryfast",
                "keyint_min": str(gop),
                "sc_threshold": "0",
                "bf": "0",
                "threads": "1",
                "flags": "+bitexact",
            }
        else:
            ctx.options = {"qmin": "1", "qmax": "3", "bf": "0", "flags": "+bitexact"}
        tb = Fraction(1, fps)
        for i, arr in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")
            frame.pts, frame.time_base = i, tb
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    data = buf.getvalue()
    if path is not None:
        with open(path, "wb") as f:
            f.write(data)
    return data
