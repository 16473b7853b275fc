"""The old name of :mod:`rayplex.logger_jobs` (ML-Logger's jobs were called "runs" here, where
everywhere else a run is a TensorBoard directory).

Transitional: the hub, ``handle``, the CLI and the ML-Logger compat layer still import the
control-state names from here; they move to ``rayplex.actors.control`` and
``rayplex.rules`` (issue 22 item 2). Delete this package once nothing imports it. A package,
not a module, so that git follows ``logger_runs.py`` to ``logger_jobs.py``.
"""

from rayplex.logger_jobs import (
    CONTROL_FILE,
    JOB_STATUSES,
    ControlBook,
    check_client,
    check_signal,
    match_clients,
    read_control,
)

__all__ = ["CONTROL_FILE", "JOB_STATUSES", "ControlBook", "check_client", "check_signal",
           "match_clients", "read_control"]
