"""Small shared utilities (atomic file writes, hashing)."""

from videolang.utils.io import atomic_output, atomic_write_bytes, atomic_write_text, sha256_file

__all__ = ["atomic_output", "atomic_write_bytes", "atomic_write_text", "sha256_file"]
