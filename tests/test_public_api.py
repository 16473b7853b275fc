"""The public surface changes only on purpose."""

from __future__ import annotations

import rayplex


def test_public_names_are_pinned():
    assert rayplex.__all__ == sorted(rayplex.__all__)
    assert set(rayplex.__all__) == {
        "Color", "FlushTimeoutError", "HubHandle", "HubNotFoundError", "HubWriteError", "LogHandler",
        "LogdirConflictError", "Logger", "RayplexError", "current_logger", "flush", "forward",
        "forward_status",
        "get_logger", "index", "init", "list_artifacts", "logged", "percent", "read_params",
        "read_scalars", "read_series", "shutdown", "signal", "sql", "status",
    }


def test_every_public_name_has_a_docstring():
    for name in rayplex.__all__:
        assert getattr(rayplex, name).__doc__, name


def test_importing_rayplex_starts_nothing():
    import subprocess
    import sys

    code = "import ray, rayplex; assert not ray.is_initialized()"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_importing_rayplex_imports_neither_torch_nor_tensorboardx():
    # tensorboardX imports torch when it is installed (a second or more): every process that
    # imports rayplex — node buffers, the hub, forwarders, each worker — would pay for it
    import subprocess
    import sys

    code = ("import sys, rayplex, rayplex.actors.hub, rayplex.actors.node_buffer; "
            "heavy = {'torch', 'tensorboardX', 'mlflow', 'wandb'} & set(sys.modules); "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_the_version_is_the_installed_distributions_one_home_in_pyproject():
    from importlib.metadata import version

    assert rayplex.__version__ == version("rayplex")


def test_every_error_a_hub_request_answers_by_name_is_raised_as_itself_at_the_call_site():
    from rayplex.errors import CALLER_ERRORS, HubWriteError, RayplexError, request_error

    for cls in CALLER_ERRORS:  # the hub answers type(exc).__name__ for these
        error = request_error(cls.__name__, "why")
        assert type(error) is cls and str(error) == "why"
    assert type(request_error("OSError", "disk full")) is HubWriteError
    assert type(request_error("SomethingElse", "?")) is RayplexError
