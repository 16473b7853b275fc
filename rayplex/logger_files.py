"""ML-Logger's artifact-store conveniences on :class:`rayplex.Logger` (files, JSON, YAML, dirs)."""

from __future__ import annotations


class FilesMixin:
    """File operations in the artifact store, confined to it, atomic and applied once."""
