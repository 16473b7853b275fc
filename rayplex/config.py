"""All of rayplex's tunables in one place, each overridable by a ``RAYPLEX_*`` environment variable.

The configuration is read when a process first needs it (``config()``), so an environment
variable set in a Ray ``runtime_env`` reaches every worker.

Example:
    >>> import os
    >>> os.environ["RAYPLEX_FLUSH_INTERVAL_S"] = "0.5"
    >>> reload_config().flush_interval_s
    0.5
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

NAMESPACE = "rayplex"
"""The Ray namespace that holds every rayplex actor."""

DEFAULT_HUB = "default"
RECORD_BYTES_ESTIMATE = 128
OVERFLOW_POLICIES = ("spill", "drop_oldest", "block")


@dataclass(frozen=True)
class Config:
    """Settings shared by workers, node buffers and the hub."""

    flush_interval_s: float = 1.0
    """A worker ships what it buffered at least this often (``RAYPLEX_FLUSH_INTERVAL_S``)."""
    batch_records: int = 20_000
    """A worker ships early once this many records are buffered (``RAYPLEX_BATCH_RECORDS``)."""
    max_buffer_mb: float = 256.0
    """A worker's buffer bound in MB, counted as 128 bytes per queued record
    (``RAYPLEX_MAX_BUFFER_MB``)."""
    overflow: str = "spill"
    """What a full buffer does (``RAYPLEX_OVERFLOW``): ``spill`` the oldest half to a local file
    and replay it when the hub is back, ``drop_oldest``, or ``block`` the log call."""
    spill_dir: str = ""
    """Where spill files go (``RAYPLEX_SPILL_DIR``); default: the system temp directory."""
    flush_timeout_s: float = 120.0
    """How long ``flush()`` waits for the hub's acknowledgement (``RAYPLEX_FLUSH_TIMEOUT_S``)."""
    retry_max_backoff_s: float = 5.0
    """Upper bound of the exponential back-off between resends (``RAYPLEX_RETRY_MAX_BACKOFF_S``)."""
    summary_delay_s: float | None = None
    """Quiet time after which a step's summary is written; default two flush intervals
    (``RAYPLEX_SUMMARY_DELAY_S``)."""
    fsync: bool = False
    """``os.fsync`` event files after each batch, for durability across machine crashes
    (``RAYPLEX_FSYNC``); by default data is durable across process crashes."""
    hub: str = DEFAULT_HUB
    """The experiment (hub name) that ``get_logger`` talks to by default (``RAYPLEX_HUB``)."""

    @property
    def max_buffer_records(self) -> int:
        return max(1000, int(self.max_buffer_mb * 2**20 / RECORD_BYTES_ESTIMATE))

    @property
    def effective_summary_delay_s(self) -> float:
        if self.summary_delay_s is None:
            return 2 * self.flush_interval_s
        return self.summary_delay_s


def _from_env() -> Config:
    values: dict[str, object] = {}
    for field in dataclasses.fields(Config):
        raw = os.environ.get("RAYPLEX_" + field.name.upper())
        if raw is None or raw == "":
            continue
        kind = str(field.type)
        try:
            if "bool" in kind:
                values[field.name] = raw.strip().lower() in ("1", "true", "yes", "on")
            elif "float" in kind:
                values[field.name] = float(raw)
            elif "int" in kind:
                values[field.name] = int(raw)
            else:
                values[field.name] = raw
        except ValueError as exc:
            raise ValueError(
                f"environment variable RAYPLEX_{field.name.upper()}={raw!r} is not a valid {kind}"
            ) from exc
    cfg = Config(**values)  # type: ignore[arg-type]
    if cfg.overflow not in OVERFLOW_POLICIES:
        raise ValueError(f"RAYPLEX_OVERFLOW={cfg.overflow!r}: use one of {OVERFLOW_POLICIES}")
    return cfg


_config: Config | None = None


def config() -> Config:
    """Return this process's configuration (read from the environment once)."""
    global _config
    if _config is None:
        _config = _from_env()
    return _config


def reload_config() -> Config:
    """Re-read the environment; for tests and long-lived drivers."""
    global _config
    _config = _from_env()
    return _config
