"""ML-Logger's run bookkeeping on :class:`rayplex.Logger`: errors, job status, git, heartbeats."""

from __future__ import annotations


class RunsMixin:
    """Job status, captured errors, git state and heartbeats of one client."""
