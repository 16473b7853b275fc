"""The public surface changes only on purpose."""

from __future__ import annotations

import rayplex


def test_public_names_are_pinned():
    assert rayplex.__all__ == sorted(rayplex.__all__)
    assert set(rayplex.__all__) == {
        "Alert", "Color", "ExperimentClosedError", "FlushTimeoutError", "HubHandle", "HubNotFoundError",
        "HubWriteError", "LogHandler",
        "LogdirConflictError", "Logger", "RayplexError", "alerts", "current_logger", "flush", "forward",
        "forward_status",
        "get_logger", "index", "init", "list_artifacts", "logged", "percent", "read_params",
        "read_scalars", "read_series", "shutdown", "signal", "sql", "status", "watch",
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


def test_media_and_event_reading_import_tensorboardx_without_torch():
    # tensorboardX's package imports torch (seconds) only to name a type: a worker that logs an
    # image, text, a histogram or params, a forwarder and a reader went without torch until then
    import subprocess
    import sys

    code = ("import sys, numpy as np; from rayplex import media; from rayplex.forward import follow; "
            "from rayplex.logdir_codec import file_events; "
            "assert media._tbx().histogram('h', np.arange(4.0), 'auto').value[0].histo.num == 4; "
            "media._pb(); follow.decode('r', []); "
            "assert 'torch' not in sys.modules, 'torch imported'; "
            "from tensorboardX import SummaryWriter; from tensorboardX.x2num import make_np; "
            "import torch; assert make_np(torch.ones(2)).tolist() == [1.0, 1.0]")
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


# ------------------------------------------------------------------- the Logger's methods
LOGGER_METHODS = {
    "Prefix": "*, metrics=None, sep='/'",
    "add_audio": "tag, samples, step=None, sample_rate=44100, walltime=None",
    "add_embedding": ("mat, metadata=None, label_img=None, global_step=None, tag='default', "
                      "metadata_header=None"),
    "add_figure": "tag, figure, step=None, close=True, walltime=None",
    "add_histogram": "tag, values, step=None, bins='tensorflow', walltime=None, max_bins=None",
    "add_hparams": "hparams, metrics",
    "add_image": "tag, img, step=None, walltime=None, dataformats='HWC'",
    "add_images": "tag, imgs, step=None, walltime=None, dataformats='NCHW'",
    "add_pr_curve": ("tag, labels, predictions, step=None, num_thresholds=127, weights=None, "
                     "walltime=None"),
    "add_scalar": "tag, value, step=None, walltime=None",
    "add_scalars": "scalars, step=None, walltime=None",
    "artifacts": None,  # the ArtifactClient every artifact method is one statement over
    "add_text": "tag, text, step=None, walltime=None",
    "add_video": "tag, frames, step=None, fps=4.0, walltime=None, dataformats='THWC'",
    "capture_error": "file='error.log', reraise=False",
    "clear": "key='default'",
    "count": "key='default'",
    "critical": "msg, *args, **kw",
    "debug": "msg, *args, **kw",
    "debug1": "msg, *args, **kw",
    "debug2": "msg, *args, **kw",
    "debug3": "msg, *args, **kw",
    "debug4": "msg, *args, **kw",
    "debug5": "msg, *args, **kw",
    "debug6": "msg, *args, **kw",
    "debug7": "msg, *args, **kw",
    "debug8": "msg, *args, **kw",
    "debug9": "msg, *args, **kw",
    "diff": "diff_directory='.', diff_filename='index.diff', ref='HEAD', verbose=False",
    "download_dir": "source_path, to, unpack='tar', client=None, max_bytes=None",
    "duplicate": "source, to, exists_ok=True",
    "error": "msg, *args, **kw",
    "every": "n=1, key='default', start_on=0",
    "exception": "msg, *args, exc_info=True, **kw",
    "export_json": "path",
    "flush": "timeout=None",
    "get_exps": "*patterns, as_dataframe=True",
    "git_rev": "branch='HEAD', directory='.'",
    "git_tags": "directory='.'",
    "glob": "query, wd=None",
    "hostname": None,  # a property
    "info": "msg, *args, **kw",
    "info1": "msg, *args, **kw",
    "info2": "msg, *args, **kw",
    "info3": "msg, *args, **kw",
    "info4": "msg, *args, **kw",
    "info5": "msg, *args, **kw",
    "info6": "msg, *args, **kw",
    "info7": "msg, *args, **kw",
    "info8": "msg, *args, **kw",
    "info9": "msg, *args, **kw",
    "job_completed": "job=None, **params",
    "job_created": "job=None, **params",
    "job_errored": "job=None, **params",
    "job_paused": "job=None, **params",
    "job_requested": "job=None, **params",
    "job_running": "job=None, **params",
    "job_started": "job=None, **params",
    "load_bytes": "path, client=None",
    "load_json": "*keys, client=None",
    "load_jsonl": "*keys, start=None, stop=None, client=None",
    "load_module": "module, path, client=None",
    "load_pkl": "path, client=None",
    "load_torch": "*keys, path=None, map_location=None, client=None, **kwargs",
    "load_yaml": "*keys, Loader=None, client=None",
    "log": "metrics=None, *, step=None, print=False, **kwargs",
    "log_git": "directory='.', diff_filename='index.diff'",
    "log_handler": "level=0",
    "log_jsonl": "data, key",
    "log_metrics_summary": "step, stats=('mean', 'std', 'min', 'max', 'count'), per_worker=False",
    "log_params": "print=False, **namespaces",
    "log_text": "level, msg, *args, **kw",
    "make_video": "files, key, fps=20.0, order='ascending'",
    "move": "source, to",
    "peek_stored_metrics": "",
    "ping": "status='running', interval=None",
    "pop": "key, default=None",
    "remove": "*paths",
    "rev_info": "directory='.'",
    "save_bytes": "data, path, append=False",
    "save_image": "image, path, dataformats=None, normalize=None, cmap=None",
    "save_json": "data, file",
    "save_module": "module, path",
    "save_pkl": "obj, path, append=False",
    "save_text": "text, path",
    "save_torch": "obj, *keys, path=None",
    "save_video": "frames, path, fps=20.0, dataformats=None",
    "save_yaml": "data, file",
    "savefig": "path, fig=None, **savefig_kwargs",
    "since": "*keys",
    "split": "*keys",
    "start": "*keys",
    "stats": "",
    "store_metrics": "metrics=None, /, **kwargs",
    "time": "key='default', interval=1, fmt='{delta:0.3E}s'",
    "torch_jit_load": "*keys, path=None, map_location=None, client=None",
    "torch_jit_save": "obj, *keys, path=None",
    "torch_load": "*keys, path=None, map_location=None, client=None, **kwargs",
    "torch_save": "obj, *keys, path=None",
    "upload_dir": "dir_path, target, excludes=(), archive='tar'",
    "upload_file": "local_path, path=None",
    "warning": "msg, *args, **kw",

}
"""Every public method of :class:`rayplex.Logger` with its parameters (users call them by name
and position): adding, removing or changing one must change this table."""


def _parameters(fn) -> str:
    """``fn``'s parameters after ``self`` as written: names, defaults, ``*``, ``/``, ``**``."""
    import inspect

    out: list[str] = []
    star = False
    for p in list(inspect.signature(fn).parameters.values())[1:]:
        if p.kind is p.VAR_POSITIONAL:
            out.append("*" + p.name)
            star = True
            continue
        if p.kind is p.VAR_KEYWORD:
            out.append("**" + p.name)
            continue
        if p.kind is p.KEYWORD_ONLY and not star:
            out.append("*")
            star = True
        out.append(p.name if p.default is p.empty else f"{p.name}={p.default!r}")
        if p.kind is p.POSITIONAL_ONLY:
            out.append("/")
    return ", ".join(out)


def test_the_loggers_public_methods_and_their_parameters_are_pinned():
    import inspect

    found = {}
    for name in dir(rayplex.Logger):
        if name.startswith("_"):
            continue
        attr = inspect.getattr_static(rayplex.Logger, name)
        found[name] = None if isinstance(attr, property) else _parameters(getattr(rayplex.Logger, name))
    assert found == LOGGER_METHODS


def test_every_public_logger_method_has_a_docstring():
    assert [n for n in LOGGER_METHODS if not getattr(rayplex.Logger, n).__doc__] == []
