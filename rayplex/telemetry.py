"""System telemetry sampled by the node buffers: what each logging process and each node uses.

Workers pay nothing for it: a node buffer already knows the pids of the processes that log
through it, and samples them (and its node) every ``RAYPLEX_TELEMETRY_S`` seconds with psutil.
On a node with NVIDIA GPUs it adds per-GPU utilisation, memory and temperature, and each
process's GPU memory, through NVML (the ``gpu`` extra, ``nvidia-ml-py``); without NVML, or when
it fails, there are no GPU metrics and one INFO line, never an error.

Pure, no Ray: :class:`TelemetrySampler` turns pids into ``{pid: {name: value}}`` and the node
into ``{name: value}``; :func:`telemetry_batch` makes one sample a batch the hub writes like a
worker's (tags ``sys/<name>`` in each worker's own run, routed by the group registry, and
``<name>`` in run ``system/<node>``).

Example:
    >>> import os
    >>> sampler = TelemetrySampler()
    >>> sorted(sampler.processes([os.getpid()])[os.getpid()])[:3]
    ['cpu_percent', 'num_fds', 'num_threads']
    >>> "memory_percent" in sampler.node()
    True
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from typing import Any

import psutil

from rayplex.event_bytes import scalar_record, tag_header
from rayplex.groups import GroupRegistry
from rayplex.records import Batch, Chunk
from rayplex.rules import SYSTEM_GROUP

log = logging.getLogger("rayplex.telemetry")

PROCESS_TAG_PREFIX = "sys/"
"""A worker's process metrics are the tags ``sys/<name>`` of its own run."""
NODE_GROUP = SYSTEM_GROUP
"""A node's metrics go to run ``system/<node>``."""


class TelemetrySampler:
    """Samples processes by pid, and the node, with psutil (and NVML when there is a GPU).

    CPU percentages are measured between two samples (the first sample of a process says 0).

    Args:
        disk_path: A directory whose file system's free space is reported (the logdir, on the
            hub's node), or ``None``.
    """

    def __init__(self, disk_path: str | None = None) -> None:
        self.disk_path = disk_path
        self._processes: dict[int, psutil.Process] = {}
        self._gpu = _Nvml.start()
        psutil.cpu_percent(None)  # the node's first CPU figure counts from here

    def processes(self, pids: list[int]) -> dict[int, dict[str, float]]:
        """``{pid: {name: value}}`` for the live ones of ``pids``; gone ones are forgotten."""
        out: dict[int, dict[str, float]] = {}
        for pid in set(self._processes) - set(pids):
            del self._processes[pid]
        gpu_memory = self._gpu.process_memory() if self._gpu is not None else {}
        for pid in pids:
            process = self._processes.get(pid)
            try:
                if process is None:
                    process = self._processes[pid] = psutil.Process(pid)
                with process.oneshot():
                    values = {
                        "cpu_percent": process.cpu_percent(None),
                        "rss_bytes": float(process.memory_info().rss),
                        "num_threads": float(process.num_threads()),
                        "num_fds": float(_num_fds(process)),
                    }
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                self._processes.pop(pid, None)
                continue
            if pid in gpu_memory:
                values["gpu_memory_bytes"] = gpu_memory[pid]
            out[pid] = values
        return out

    def node(self) -> dict[str, float]:
        """The node's CPU, memory, network bytes, free disk under ``disk_path`` and GPUs."""
        memory = psutil.virtual_memory()
        values = {
            "cpu_percent": psutil.cpu_percent(None),
            "memory_percent": float(memory.percent),
            "memory_used_bytes": float(memory.total - memory.available),
        }
        net = psutil.net_io_counters()
        if net is not None:
            values["net_sent_bytes"] = float(net.bytes_sent)
            values["net_recv_bytes"] = float(net.bytes_recv)
        if self.disk_path is not None:
            with contextlib.suppress(OSError):  # the logdir is gone: the hub says so, loudly
                values["disk_free_bytes"] = float(shutil.disk_usage(self.disk_path).free)
        if self._gpu is not None:
            values.update(self._gpu.devices())
        return values


def telemetry_batch(registry: GroupRegistry, processes: dict[str, dict[str, float]],
                    node_run: str, node: dict[str, float], step: int, wall_time: float,
                    sender: str, seq: int, experiment: str) -> Batch:
    """One sample as a batch: ``processes`` (``{client_id: {name: value}}``) as tags
    ``sys/<name>`` of each client's run, routed by ``registry`` as the client's own records
    are; ``node`` as tags ``<name>`` of run ``node_run``.

    Example:
        >>> batch = telemetry_batch(GroupRegistry(), {"agent/0": {"cpu_percent": 5.0}},
        ...                         "system/n1", {"cpu_percent": 50.0}, 3, 0.0, "t", 1, "x")
        >>> [(c.client_id, c.run, c.count) for c in batch.chunks]
        [('agent/0', 'agent', 1), ('system/n1', 'system/n1', 1)]
    """
    chunks = []
    for client_id, values in processes.items():
        route = registry.route(client_id)
        blob = b"".join(scalar_record(tag_header(route.tag(PROCESS_TAG_PREFIX + name)),
                                      wall_time, step, value) for name, value in values.items())
        chunks.append(Chunk(client_id, route.run, blob, len(values)))
    if node:
        blob = b"".join(scalar_record(tag_header(name), wall_time, step, value)
                        for name, value in node.items())
        chunks.append(Chunk(node_run, node_run, blob, len(node)))
    return Batch(sender, seq, registry.stamp, chunks, experiment=experiment)


def _num_fds(process: psutil.Process) -> int:
    if os.name == "nt":  # pragma: no cover - Windows counts handles
        return int(process.num_handles())
    return int(process.num_fds())


class _Nvml:
    """NVML through ``pynvml`` (nvidia-ml-py); :meth:`start` is ``None`` without a GPU."""

    def __init__(self, nvml: Any, handles: list[Any]) -> None:
        self.nvml = nvml
        self.handles = handles

    @classmethod
    def start(cls) -> _Nvml | None:
        try:
            import pynvml

            pynvml.nvmlInit()
            count = pynvml.nvmlDeviceGetCount()
            return cls(pynvml, [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)])
        except Exception as exc:  # no package, no driver, no GPU: no GPU metrics
            log.info("rayplex telemetry: no GPU metrics (%s)", f"{type(exc).__name__}: {exc}"[:200])
            return None

    def devices(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for i, handle in enumerate(self.handles):
            try:
                util = self.nvml.nvmlDeviceGetUtilizationRates(handle)
                memory = self.nvml.nvmlDeviceGetMemoryInfo(handle)
                temperature = self.nvml.nvmlDeviceGetTemperature(handle, 0)  # NVML_TEMPERATURE_GPU
            except Exception:  # a GPU that stopped answering: skip it this time
                continue
            out[f"gpu{i}/utilization_percent"] = float(util.gpu)
            out[f"gpu{i}/memory_used_bytes"] = float(memory.used)
            out[f"gpu{i}/temperature_c"] = float(temperature)
        return out

    def process_memory(self) -> dict[int, float]:
        out: dict[int, float] = {}
        for handle in self.handles:
            try:
                running = self.nvml.nvmlDeviceGetComputeRunningProcesses(handle)
            except Exception:
                continue
            for proc in running:
                used = getattr(proc, "usedGpuMemory", None)
                if used is not None:
                    out[proc.pid] = out.get(proc.pid, 0.0) + float(used)
        return out
