"""NVIDIA GPUs through NVML (pynvml, the nvidia-ml-py package): each GPU
is a domain ``gpu:<index>``.

Per device: name and UUID (read once), memory from
``nvmlDeviceGetMemoryInfo_v2`` where the driver has it, else v1, whose
``used`` includes what the driver reserves (~0.9 GB on an A100): the limit
is what allocations can reach (total - reserved), the working set what
they hold (used); utilization; and the compute processes with the memory
each holds (None where NVML cannot say, as under Windows' WDDM).  NVML
reports host pids: in a container, memguardd needs the host's pid namespace
to match them to jobs.

NVML calls can block on a wedged driver: the source runs off the loop,
every tick, each run bounded by the runner's timeout.  No pynvml, no
driver: :class:`Unavailable`, said once.  An NVML error on one device (a
GPU lost at run time) skips that device, counted, and the others go on.
"""

from __future__ import annotations

from ..clock import Instant
from ..model import Sample
from .base import Reading, Unavailable


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class GpuSource:
    name = "gpu"
    every_tick = True        # off the loop, but at the domain interval, not the process scan's

    def __init__(self) -> None:
        self.nvml = None
        self.names: dict[int, tuple[str, str]] = {}     # index -> (name, uuid)
        self.errors: dict[str, str] = {}                # domain -> the last NVML error

    def _init(self):
        try:
            import pynvml
        except ImportError:
            raise Unavailable("pynvml (nvidia-ml-py) is not installed") from None
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError_LibraryNotFound:
            raise Unavailable("no NVIDIA driver (libnvidia-ml.so.1 not found)") from None
        except pynvml.NVMLError as e:
            raise Unavailable(f"NVML: {e}") from None
        self.nvml = pynvml
        return pynvml

    def collect(self, now: Instant) -> Reading:
        nvml = self.nvml or self._init()
        reading = Reading(tracked=set())
        count = nvml.nvmlDeviceGetCount()
        devices = {}
        for index in range(count):
            domain = f"gpu:{index}"
            reading.tracked.add(domain)
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                if index not in self.names:
                    self.names[index] = (_text(nvml.nvmlDeviceGetName(handle)),
                                         _text(nvml.nvmlDeviceGetUUID(handle)))
                try:
                    mem = nvml.nvmlDeviceGetMemoryInfo(handle, version=nvml.nvmlMemory_v2)
                    reserved, used = mem.reserved, mem.used
                except nvml.NVMLError as e:
                    if e.value not in (nvml.NVML_ERROR_NOT_SUPPORTED, nvml.NVML_ERROR_FUNCTION_NOT_FOUND):
                        raise
                    mem = nvml.nvmlDeviceGetMemoryInfo(handle)
                    reserved, used = None, mem.used      # v1: used includes the reserved memory
                util = nvml.nvmlDeviceGetUtilizationRates(handle)
                processes = [{"pid": p.pid, "used_bytes": p.usedGpuMemory}
                             for p in nvml.nvmlDeviceGetComputeRunningProcesses(handle)]
            except nvml.NVMLError as e:
                self.errors[domain] = str(e)
                reading.skipped["nvml_error"] += 1
                devices[domain] = {"index": index, "error": str(e),
                                   **dict(zip(("name", "uuid"), self.names.get(index, (None, None))))}
                continue
            self.errors.pop(domain, None)
            name, uuid = self.names[index]
            limit = mem.total - (reserved or 0)
            reading.samples.append(Sample(domain, "gpu", used, used, limit))
            devices[domain] = {"index": index, "name": name, "uuid": uuid, "total_bytes": mem.total,
                               "reserved_bytes": reserved, "used_bytes": used, "free_bytes": mem.free,
                               "utilization_gpu": util.gpu, "utilization_memory": util.memory,
                               "memory_info": "v2" if reserved is not None else "v1", "processes": processes}
        reading.facts = {"driver": _text(nvml.nvmlSystemGetDriverVersion()), "devices": devices}
        return reading
