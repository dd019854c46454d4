"""The `"auto"` defaults: thread counts chosen from the machine edged runs on.

Pure functions over a validated config; they run wherever a config is loaded (the supervisor at
start and on every reload, `edged check-config`, `edged bench`), so the numbers a worker is
spawned with are already plain integers. Nothing here can fail: a machine that hides its CPUs
counts as one core.

Why these rules (measured, docs/performance.md): one inference runs fastest on one thread (ONNX
Runtime's intra-op threads cost 13-46 % more CPU a frame), so a CPU worker runs one inference loop
per core it may use, and CPU workers sharing the machine share its cores. A stream decodes on its
own thread; a second FFmpeg thread per stream only pays off while the streams are fewer than the
cores (with more, it cost 6-12 % more decode CPU a frame and no throughput).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import msgspec

from edged.config.model import Config, StreamConfig, WorkerConfig

# cgroup v2 (systemd CPUQuota=, a container's --cpus): "<quota> <period>" or "max <period>".
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def cores() -> int:
    """CPU cores this process may use: its affinity mask (taskset, a cpuset, systemd's
    CPUAffinity=), lowered by a cgroup CPU quota when one is set. Not the host's core count."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        n = os.cpu_count() or 1
    quota = _cgroup_quota(CGROUP_CPU_MAX)
    if quota is not None:
        n = min(n, quota)
    return max(1, n)


def _cgroup_quota(path: Path) -> int | None:
    """Whole cores a cgroup v2 CPU quota allows (rounded up), or None when there is none."""
    try:
        quota, period = path.read_text().split()[:2]
        return max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):  # no cgroup v2 file, or "max": no quota
        return None


def inference_threads(
    worker: WorkerConfig, cpu_workers: int = 1, n_cores: int | None = None
) -> int:
    """The worker's inference loops: its `threads`, or for "auto" its share of the cores (the
    cores / the CPU workers sharing them, at least 1)."""
    if isinstance(worker.threads, int):
        return worker.threads
    if worker.backend != "cpu":
        # An accelerator runs the model; one loop keeps it fed while the host waits on it.
        return 1
    return max(1, (cores() if n_cores is None else n_cores) // max(1, cpu_workers))


def decoder_threads(
    stream: StreamConfig, worker_streams: int = 1, n_cores: int | None = None
) -> int:
    """FFmpeg threads for the stream's decoder: its `decoder_threads` (0 = FFmpeg's own choice),
    or for "auto" the cores / the streams decoding on its worker, at least 1."""
    if isinstance(stream.decoder_threads, int):
        return stream.decoder_threads
    return max(1, (cores() if n_cores is None else n_cores) // max(1, worker_streams))


def resolve(config: Config, n_cores: int | None = None) -> Config:
    """`config` with every "auto" replaced by the number this machine gets."""
    n = cores() if n_cores is None else n_cores
    cpu_workers = sum(1 for w in config.workers if w.backend == "cpu")
    per_worker: dict[str, int] = {}
    for stream in config.streams:
        per_worker[stream.worker] = per_worker.get(stream.worker, 0) + 1
    workers = tuple(
        msgspec.structs.replace(w, threads=inference_threads(w, cpu_workers, n))
        for w in config.workers
    )
    streams = tuple(
        msgspec.structs.replace(
            s, decoder_threads=decoder_threads(s, per_worker.get(s.worker, 1), n)
        )
        for s in config.streams
    )
    return msgspec.structs.replace(config, workers=workers, streams=streams)
