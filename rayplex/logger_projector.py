"""TensorBoard projector embeddings and JSON export on :class:`rayplex.Logger`."""

from __future__ import annotations


class ProjectorMixin:
    """``add_embedding`` and ``export_json``."""
