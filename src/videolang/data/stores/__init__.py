"""Storage backends for videos and precomputed features.

:mod:`~videolang.data.stores.lmdb_store` (raw video bytes, VIMPAC frame tokens),
:mod:`~videolang.data.stores.feature_store` (sharded memory-mapped features, MMPT layout) and
:mod:`~videolang.data.stores.webdataset_store` (tar shards of raw videos). Writers are atomic and
refuse to overwrite unless ``overwrite=True``; errors are :class:`videolang.errors.StoreError`.
Exports load lazily (``FeatureStore`` does not import torch). Layouts: docs/data.md ("Stores").
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from videolang.data.stores.feature_store import (
        EXTRACTION_INFO_NAME,
        FeatureStore,
        FeatureStoreWriter,
        ShardedTensor,
        feature_rows_per_second,
        read_extraction_info,
    )
    from videolang.data.stores.lmdb_store import (
        DEFAULT_VIDEO_EXTENSIONS,
        LmdbTokenStore,
        LmdbVideoStore,
        PackReport,
        pack_videos,
        write_token_lmdb,
    )
    from videolang.data.stores.webdataset_store import (
        VIDEO_EXTENSIONS,
        WebVideoDataset,
        write_webdataset,
    )

_EXPORTS = {
    "FeatureStore": "feature_store",
    "FeatureStoreWriter": "feature_store",
    "ShardedTensor": "feature_store",
    "EXTRACTION_INFO_NAME": "feature_store",
    "feature_rows_per_second": "feature_store",
    "read_extraction_info": "feature_store",
    "DEFAULT_VIDEO_EXTENSIONS": "lmdb_store",
    "LmdbTokenStore": "lmdb_store",
    "LmdbVideoStore": "lmdb_store",
    "PackReport": "lmdb_store",
    "pack_videos": "lmdb_store",
    "write_token_lmdb": "lmdb_store",
    "VIDEO_EXTENSIONS": "webdataset_store",
    "WebVideoDataset": "webdataset_store",
    "write_webdataset": "webdataset_store",
}

__all__ = [
    "DEFAULT_VIDEO_EXTENSIONS",
    "EXTRACTION_INFO_NAME",
    "VIDEO_EXTENSIONS",
    "FeatureStore",
    "FeatureStoreWriter",
    "LmdbTokenStore",
    "LmdbVideoStore",
    "PackReport",
    "ShardedTensor",
    "WebVideoDataset",
    "feature_rows_per_second",
    "pack_videos",
    "read_extraction_info",
    "write_token_lmdb",
    "write_webdataset",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'videolang.data.stores' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"videolang.data.stores.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
