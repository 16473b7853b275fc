"""All of rayplex's tunables in one place, each overridable by a ``RAYPLEX_*`` environment variable.

The configuration is read when a process first needs it (``config()``), so an environment
variable set in a Ray ``runtime_env`` reaches every worker.

Example:
    >>> import os
    >>> before = os.environ.get("RAYPLEX_FLUSH_INTERVAL_S")
    >>> os.environ["RAYPLEX_FLUSH_INTERVAL_S"] = "0.5"
    >>> reload_config().flush_interval_s
    0.5
    >>> if before is None: del os.environ["RAYPLEX_FLUSH_INTERVAL_S"]
    ... else: os.environ["RAYPLEX_FLUSH_INTERVAL_S"] = before
    >>> _ = reload_config()
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

NAMESPACE = "rayplex"
"""The Ray namespace that holds every rayplex actor."""

DEFAULT_HUB = "default"
OVERFLOW_POLICIES = ("spill", "drop_oldest", "block")

RETRY_START_BACKOFF_S = 0.05
"""The first wait of every retry back-off (:class:`rayplex.nested.Backoff`); each failure
doubles it, up to ``RAYPLEX_RETRY_MAX_BACKOFF_S`` (or the caller's own bound)."""
FORWARD_START_BACKOFF_S = 0.5
"""The first wait after a tracker (MLflow, W&B) failed; doubles up to the tracker's
``retry_max_s``."""
FORWARD_IDLE_POLL_S = 0.5
"""How often an idle forwarder asks the hub for its committed sizes (a directory walk under
the hub's writer lock: cheap, but not free)."""
FORWARD_MAX_BYTES = 4 * 2**20
"""Event-file bytes a forwarder reads per round: what bounds the forwarder's memory."""
FORWARD_MAX_CAUSES = 100
"""Distinct refusal causes a forwarder keeps in ``counters["refused_causes"]`` (more are
summed under ``"other"``)."""
CALLBACK_FLUSH_TIMEOUT_S = 5.0
"""Longest a Tune/Train/RLlib callback waits for the hub when it flushes; a slower hub keeps
the data buffered (it is resent), the callback goes on."""
TUNE_END_FLUSH_TIMEOUT_S = 30.0
"""Longest the Tune callback waits for the hub when the experiment ends."""
ROWS_QUEUE_SHARE = 4
"""The ML-Logger compat row writer queues at most ``RAYPLEX_MAX_BUFFER_MB`` / this, in bytes
(64 MiB of the default 256)."""
ROWS_REQUEST_BYTES = 8 * 2**20
"""One append request of the ML-Logger compat row writer carries at most about this much."""
TENSORPLEX_GROUPS_WAIT_S = 30.0
"""The longest a Tensorplex client that found its hub waits for the server's groups to be
registered (the hub's name is taken before its constructor ran), then goes on."""
TENSORPLEX_GROUPS_SETTLE_S = 2.0
"""A Tensorplex client whose own group is not registered goes on once the server's groups have
not changed for this long (its group is then one the server does not register)."""
TENSORPLEX_POLL_S = 0.2
"""How often a Tensorplex client waiting for its Ray cluster or hub looks again."""
CLAIM_LEASE_S = 120.0
"""How long a bucket logdir's claim object holds without being renewed (the uploader renews it
every quarter of this)."""
PROBE_TIMEOUT_S = 15.0
"""How long ``rayplex.init`` of a logdir on object storage waits for the bucket to be listed
and written (wrong credentials, an unreachable endpoint: a ``ValueError`` then)."""
HUB_ANSWER_TIMEOUT_S = 10.0
"""Longest a public :class:`rayplex.HubHandle` query (``registry()``, ``connect``) waits for
the hub to answer before it raises; a wedged hub never wedges the caller."""

# ---------------------------------------------------------------- rayplex view
MAX_BUCKETS = 4000
"""The most buckets one request may ask for per series."""
LINE_RUNS_MAX = 200
"""The most runs one ``series`` request may draw as lines (more: ask for a band)."""
READS_AT_ONCE = 2
"""Series answers the viewer's server reads at once, each on one of this many reader threads
(more wait): a read is CPU-bound and holds its rows in memory, so more at once are no faster
and take more memory."""
HIGHLIGHT_MAX = 8
"""The most members a band draws on top (pinned ones first, then its extremes)."""
CHART_BUCKETS = 550
"""Buckets per series of a chart the page draws (its width in CSS pixels); the answers the
server prepares at start (``rayplex.view.api.Source.warm``) are for this many."""
COARSE_BUCKETS = 64
"""Buckets per series of a chart's first, coarse answer: the page paints it, then asks for
:data:`CHART_BUCKETS` (each stage exact M4 at its own width). 64 buckets over a run read the
coarsest pyramid rows (1,000 runs x 5,000 steps: 40,000 rows, 0.14 s CPU, against 417,000 rows
and ~2-3 s for 550)."""
ZOOM_COARSE_BUCKETS = 128
"""Buckets per series of a zoom's first, coarse answer (then :data:`CHART_BUCKETS`): a 1,000-step
zoom over 1,000 runs reads 126,000 whole level-2 rows (width 8, finer than the 12 of the
unzoomed chart) instead of a million raw points."""
LIVE_WITHIN_S = 120.0
"""A run whose last point is younger than this is shown as ``running``."""
REFRESH_EVERY_S = 1.0
"""The store is brought up to date this often (``rayplex.index`` when event files grew)."""
LOG_TAIL_BYTES = 4 << 20
"""Only the last bytes of a text log are read for its tail."""
LOG_LINES_MAX = 2000
"""The most lines one log-tail answer holds."""
PARAM_TAGS_MAX = 40
"""The params table shows the last value of at most this many tags (the first, in natural order)."""
WALL_EVERY_S = 10.0
"""A live store's step -> wall-time map (the viewer's time axes) is recomputed at most this often."""


# ---------------------------------------------------------------- internal tunables
# Module constants (no environment variable): timeouts, intervals and bounds of rayplex's own
# threads and files, kept here so that every tunable has one home.

HUB_CALL_TIMEOUT_S = 30.0
"""Longest a hub-side helper actor (a forwarder, the store feed) waits for one call to its hub."""
FORWARD_WATCH_PERIOD_S = 1.0
"""How often a forwarder actor's watcher thread checks its forwarder (stalled calls, warnings)."""
STALL_S = 1.0
"""A hub call that waited or ran this much longer than usual counts as a stall."""
MAX_STATE_BYTES = 256 * 2**20
"""A hub state file larger than this is not read (a hostile file must not exhaust memory)."""
TAKEOVER_WAIT_S = 2.0
"""How long a hub waits for another hub's lock on a logdir (a holder whose process is just exiting)."""
RESTART_WAIT_S = 30.0
"""How long a restarted hub waits for the lock of its own predecessor (same actor id)."""
CLAIM_POLL_S = 0.02
"""How often a hub waiting for a logdir's lock tries again."""
JOURNAL_MAX_BYTES = 64 * 2**20
"""The hub's journal is compacted into one snapshot once it grows past this."""
CONTROL_MAX_ANSWERS = 1024
"""Ping tokens whose answers a replayed ping can still get."""
MAX_APPLIED_REQUESTS = 100_000
"""Ids of applied artifact/params requests the journal remembers (the most recent ones): a request
replayed after more than this many newer requests were applied would be applied again."""
MAX_INTENTS = 10_000
"""Intents of unrecorded moves/copies the journal remembers (the most recent ones)."""
COMPACTION_RETRY_S = 30.0
"""After a failed journal compaction, the next attempt waits this long."""
SPILL_RETRY_S = 10.0
"""After a failed spill, a worker's buffer blocks instead of spilling for this long, then tries again."""
BUFFER_WARN_EVERY_S = 60.0
"""A worker's buffer logs repeated warnings of one kind (records dropped) at most this often."""
GLOBAL_FLUSH_TIMEOUT_S = 30.0
"""The default timeout of ``rayplex.flush()`` and ``rayplex.shutdown()``."""
KEY_CACHE_MAX = 65536
"""Metric keys a process remembers as checked (a log call checks each key once)."""
SEGMENT_ROWS = 1_000_000
"""Points per store segment while indexing (bounds the indexer's memory)."""
COMPACT_BELOW = 250_000
"""Store segments with fewer points are merged by compaction ..."""
COMPACT_MIN = 8
"""... once there are at least this many of them."""
BATCH_POINTS = 500_000
"""The most points (about 40 MB) one batch of runs holds while the store is read."""
STORE_IDLE_POLL_S = 0.2
"""How long the store feed waits when the hub committed nothing new since its last round."""
STORE_MIN_ROUND_S = 0.25
"""The store feed's rounds start at most this often while the hub commits: fewer, larger
segments and fewer calls to the hub, for at most this much more lag."""
STORE_BACKOFF_MAX_S = 5.0
"""The store feed's longest wait after a failed round (it doubles from 0.1 s up to this)."""
FLUSH_REQUEST_POLL_S = 0.1
"""A worker's sender thread looks for a flush request from elsewhere at least this often."""
NODE_BUFFER_START_S = 5.0
"""How long the first session on a node waits for the node buffer it started to register it
(a new actor process); later sessions find it running."""
VERIFY_EVERY_S = 0.2
"""A process checks at most this often that its session's hub was not replaced."""
SENDER_WAIT_SLICE_S = 1.0
"""A pending submission is waited for in slices this long, to notice a closing session."""
GIT_TIMEOUT_S = 30.0
"""Longest a ``git`` command run for ML-Logger's git helpers may take."""
CLI_ROWS_SHOWN = 30
"""Rows per table in ``rayplex ls``, unless ``--all``."""
CLI_MAX_PLOTS = 12
"""Charts in one ``rayplex plot`` image."""

STORE_QUERY_RETRIES = 3
"""A store query retries this many times when a compaction replaced the files it was reading."""
PROJECTOR_ROUTE_TRIES = 5
"""``add_embedding`` asks for its run's route at most this many times (the registry may change)."""
INDEX_READ_CHUNK_BYTES = 4 << 20
"""The indexer reads event files in pieces this large."""
INDEX_SHIFTED_CRC_MAX_BYTES = 1024
"""The indexer checks the CRCs of same-length records by the bytes that differ between them
(a ``length × 256`` table per record length, cached) up to records this long; longer ones are
checked byte by byte."""
STORE_ROW_GROUP_ROWS = 65_536
"""Rows per Parquet row group in the store's raw segments."""
STORE_PYRAMID_ROW_GROUP_ROWS = 8_192
"""Rows per Parquet row group in the store's pyramid files: a query of a few runs decodes
little more than their rows (row groups are skipped by their run statistics); each (tag, level)
of at least an eighth of it starts a row group (skipped by their level statistics)."""
STORE_LOG_CHECKPOINT_BYTES = 256 << 10
"""The store's manifest log is folded into a new snapshot once it is this large (or larger
than the snapshot): a commit appends a record, a checkpoint rewrites the whole manifest."""
EVENT_READ_CHUNK_BYTES = 1 << 20
"""Event files are read in pieces this large."""
WATCH_TICK_S = 0.5
"""The hub evaluates the time- and group-based watch rules (silent, step_lag, outlier) this often."""
WATCH_POLL_S = 1.0
"""A node buffer checks that the processes logging through it are alive this often."""
WEBHOOK_TIMEOUT_S = 5.0
"""One webhook POST gives up after this long (then retries with back-off)."""
WEBHOOK_ATTEMPTS = 4
"""A webhook POST is tried this many times (back-off 0.5 s, 1 s, 2 s, ...) before it is dropped."""
WEBHOOK_QUEUE = 1000
"""Alerts waiting for their webhook beyond this many are dropped (counted) rather than held."""
ARTIFACT_COPY_BUFSIZE = 1 << 20
"""Artifact files are copied and read in pieces this large."""


@dataclass(frozen=True)
class Config:
    """Settings shared by workers, node buffers and the hub."""

    alert_repeat_s: float = 600.0
    """A rule's webhook POSTs at most once per client in this many seconds; the repeats in
    between are counted in the next POST (``RAYPLEX_ALERT_REPEAT_S``)."""
    flush_interval_s: float = 1.0
    """A worker ships what it buffered at least this often (``RAYPLEX_FLUSH_INTERVAL_S``)."""
    batch_records: int = 20_000
    """A worker ships early once this many records are buffered (``RAYPLEX_BATCH_RECORDS``)."""
    max_buffer_mb: float = 256.0
    """A worker's buffer bound in MiB: what is queued, spilled but not yet replayed, and in
    flight to the hub, counted in bytes (``RAYPLEX_MAX_BUFFER_MB``)."""
    node_buffer_mb: float = 256.0
    """A node buffer's bound in MiB on the batches it holds for the hub; senders wait beyond it
    (``RAYPLEX_NODE_BUFFER_MB``)."""
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
    summary_silent_s: float | None = None
    """A worker that sent no ``store_metrics`` summary for this long while others of its group
    did no longer holds back its group's summaries; default ten flush intervals, at least three
    times the longest retry back-off (``RAYPLEX_SUMMARY_SILENT_S``)."""
    summary_hold_s: float | None = None
    """After a fault (a hub or node-buffer restart, a failed write, a stalled hub) and after a
    worker joins, how long the hub writes no summary on quiet time alone, for resends to arrive
    first; default the longest retry back-off plus two flush intervals
    (``RAYPLEX_SUMMARY_HOLD_S``). Set it apart from ``RAYPLEX_RETRY_MAX_BACKOFF_S`` to keep the
    hold while senders retry sooner."""
    log_max_bytes: int = 0
    """Rotate text logs at this size; 0 never rotates (``RAYPLEX_LOG_MAX_BYTES``)."""
    max_open_files: int = 0
    """Event files the hub keeps open at once; 0 picks a quarter of the fd limit
    (``RAYPLEX_MAX_OPEN_FILES``)."""
    get_logger_timeout_s: float = 0.25
    """How long ``get_logger`` waits for the group registry before it goes on with the groups
    it knows; never longer, whatever the hub does (``RAYPLEX_GET_LOGGER_TIMEOUT_S``)."""
    hub_wait_s: float = 60.0
    """How long a Tensorplex client started before its server waits for the hub, then
    ``HubNotFoundError`` (``RAYPLEX_HUB_WAIT_S``)."""
    hub: str = DEFAULT_HUB
    """The experiment (hub name) that ``get_logger`` talks to by default (``RAYPLEX_HUB``)."""
    max_unpack_mb: float = 4096.0
    """The most a tar archive unpacked by ``download_dir`` may hold, in MiB, unless the call
    passes ``max_bytes`` (``RAYPLEX_MAX_UNPACK_MB``)."""
    query_max_entries: int = 1_000_000
    """The most entries one file query (``glob``, ``remove`` with a pattern) may visit at the
    hub before it is refused with an error (``RAYPLEX_QUERY_MAX_ENTRIES``)."""
    query_timeout_s: float = 10.0
    """The longest one file query may walk at the hub before it is refused with an error
    (``RAYPLEX_QUERY_TIMEOUT_S``)."""

    telemetry_s: float = 10.0
    """How often each node buffer samples the processes that log through it and its node
    (``RAYPLEX_TELEMETRY_S``); ``0`` switches telemetry off."""
    staging_dir: str = ""
    """Where the hub of a logdir on object storage (``s3://...``) writes before the uploader
    copies it to the bucket, and where readers keep their synced copies
    (``RAYPLEX_STAGING_DIR``); default ``<system temp>/rayplex-staging``."""
    upload_segment_s: float = 30.0
    """The uploader ships committed data at least this often: no segment waits longer
    (``RAYPLEX_UPLOAD_SEGMENT_S``); ``flush()`` and ``shutdown()`` ship at once."""
    upload_segment_mb: float = 16.0
    """The uploader ships early once this many MiB are waiting (``RAYPLEX_UPLOAD_SEGMENT_MB``)."""
    staging_max_mb: float = 1024.0
    """The staging directory holds at most this many MiB not yet in the bucket
    (``RAYPLEX_STAGING_MAX_MB``; ``0``: no bound); beyond it the hub refuses writes as on a
    full disk (the senders keep the data and retry) until the uploader catches up."""
    event_rotate_mb: float = 16.0
    """In a staging directory, the hub closes an event file once it holds this many MiB and
    opens the next (``RAYPLEX_EVENT_ROTATE_MB``): a closed file, once in the bucket and read
    by the local followers, is deleted from the staging directory."""
    event_rotate_s: float = 60.0
    """... or once it has been open this many seconds (``RAYPLEX_EVENT_ROTATE_S``)."""

    store: bool = True
    """Feed the columnar store ``logdir/store/`` live with every committed scalar, from a store
    feed actor next to the hub (``RAYPLEX_STORE``; ``0`` turns it off). Without the ``[store]``
    extra (pyarrow, duckdb) there is no feed whatever this says."""

    @property
    def max_buffer_bytes(self) -> int:
        return max(2**20, int(self.max_buffer_mb * 2**20))

    @property
    def max_unpack_bytes(self) -> int:
        return max(0, int(self.max_unpack_mb * 2**20))

    @property
    def node_buffer_bytes(self) -> int:
        return max(2**20, int(self.node_buffer_mb * 2**20))

    @property
    def effective_summary_silent_s(self) -> float:
        if self.summary_silent_s is None:  # longer than a sender's longest back-off, too
            return max(10 * self.flush_interval_s, 3 * self.retry_max_backoff_s)
        return self.summary_silent_s

    @property
    def effective_summary_hold_s(self) -> float:
        """After a fault, how long the hub writes no summary on its quiet time alone: a
        sender's longest back-off and two flush intervals, for resends to arrive first, unless
        ``summary_hold_s`` says otherwise."""
        if self.summary_hold_s is None:
            return self.retry_max_backoff_s + 2 * self.flush_interval_s
        return self.summary_hold_s

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
