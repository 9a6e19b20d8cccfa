"""Typed errors. Every error names the thing the user has to fix: a file, a key, a line."""

from __future__ import annotations

import os


class VideolangError(Exception):
    """Base class of every error videolang raises on purpose."""


class VideoDecodeError(VideolangError):
    """A video could not be opened or decoded.

    One type for every kind of bad file (missing, empty, truncated, not a video, no video
    stream, no decodable frame) so that datasets can catch it, count it and skip the item.
    ``source`` is the path (or a short description of in-memory bytes) and ``reason`` says why.
    """

    def __init__(self, source: str | os.PathLike | None, reason: str):
        self.source = str(source) if source is not None else "<bytes>"
        self.reason = reason
        super().__init__(f"cannot decode video {self.source!r}: {reason}")


class FrameIndexError(VideolangError, IndexError):
    """A requested frame index or timestamp lies outside the video."""


class StoreError(VideolangError):
    """A store (LMDB, feature shards, WebDataset shards) is missing, malformed or would be
    overwritten without permission."""


class DataError(VideolangError):
    """A run cannot go on with its data: more samples were unreadable than the configured share
    allows, or a batch gave a non-finite loss. The message names the files or samples."""


class ConfigError(VideolangError):
    """A configuration key or value is wrong; the message names the key (and file)."""


class QueryError(VideolangError, ValueError):
    """A search query that cannot be run: empty, too long, not text."""
