"""NVIDIA GPUs through NVML (pynvml, the nvidia-ml-py package): each GPU
is a domain ``gpu:<index>``, and each MIG instance one of its own,
``gpu:<index>/mig:<n>``.

Per device: name and UUID (the name read again only when the UUID changes:
a MIG slot can hold another instance after a reconfiguration), memory from
``nvmlDeviceGetMemoryInfo_v2`` where the driver has it, else v1, whose
``used`` includes what the driver reserves (~0.9 GB on an A100): the limit
is what allocations can reach (total - reserved), the working set what
they hold (used); utilization (None where NVML has none); and the compute
processes with the memory each holds (None where NVML cannot say, as under
Windows' WDDM).  NVML reports host pids: in a container, memguardd needs
the host's pid namespace to match them to jobs.

MIG (Multi-Instance GPU, A100 and later,
https://docs.nvidia.com/datacenter/tesla/mig-user-guide/): a GPU in MIG
mode is cut into instances, each with memory no other can use, so a CUDA
allocation fails when its instance is full however much the GPU has free.
Each MIG device is a domain, n its index for
``nvmlDeviceGetMigDeviceHandleByIndex``; indices are reused when instances
are destroyed and made, their ``MIG-...`` UUID is not.  (A MIG device is a
compute instance: where a GPU instance is split into several, they share
its memory and show the same figures.)  NVML has no utilization per
instance, nor for a GPU in MIG mode.  The GPU stays a domain, its memory
the whole card's, so its figures and metrics go on across a change of
mode; but it lists no processes of its own: each is listed on the instance
that holds its memory, so a job is in that instance's domain, not also in
the GPU's, whose rules would warn the jobs of every instance.  Where MIG
is not supported (most GPUs: NVML says NOT_SUPPORTED) or is off, a GPU has
no instances.

NVML calls can block on a wedged driver: the source runs off the loop,
every tick, each run bounded by the runner's timeout.  No pynvml, no
driver: :class:`Unavailable`, said once.  An NVML error on one device (a
GPU lost at run time) or instance skips that one, counted, and the others
go on; the instances of a lost GPU are shown lost with it.
"""

from __future__ import annotations

from ..clock import Instant
from ..model import Sample
from .base import Reading, Unavailable


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _absent(nvml, e) -> bool:
    """Whether *e* says the device or the driver lacks the call: NOT_SUPPORTED,
    or FUNCTION_NOT_FOUND from a driver older than the call."""
    return e.value in (nvml.NVML_ERROR_NOT_SUPPORTED, nvml.NVML_ERROR_FUNCTION_NOT_FOUND)


def _memory(nvml, handle) -> tuple[int, int | None, int, int, str]:
    """(total, reserved, used, free, call): reserved is None from v1, whose
    used includes the reserved memory."""
    try:
        mem = nvml.nvmlDeviceGetMemoryInfo(handle, version=nvml.nvmlMemory_v2)
        return mem.total, mem.reserved, mem.used, mem.free, "v2"
    except nvml.NVMLError as e:
        if not _absent(nvml, e):
            raise
    mem = nvml.nvmlDeviceGetMemoryInfo(handle)
    return mem.total, None, mem.used, mem.free, "v1"


def _utilization(nvml, handle) -> tuple[int | None, int | None]:
    """(gpu, memory) percent; (None, None) where NVML has none (a MIG
    instance, a GPU in MIG mode)."""
    try:
        util = nvml.nvmlDeviceGetUtilizationRates(handle)
    except nvml.NVMLError as e:
        if not _absent(nvml, e):
            raise
        return None, None
    return util.gpu, util.memory


def _mig_slots(nvml, handle) -> int:
    """How many MIG slots the GPU has to look through: 0 where MIG is off or
    not supported (most GPUs), or the driver predates MIG (before R450)."""
    try:
        current, _pending = nvml.nvmlDeviceGetMigMode(handle)
    except nvml.NVMLError as e:
        if not _absent(nvml, e):
            raise
        return 0
    return nvml.nvmlDeviceGetMaxMigDeviceCount(handle) if current == nvml.NVML_DEVICE_MIG_ENABLE else 0


def _instance(index: int, slot: int) -> tuple[str, dict]:
    """The domain of MIG slot *slot* of GPU *index*, and the facts' fields
    that place it there."""
    return f"gpu:{index}/mig:{slot}", {"index": index, "mig_index": slot, "parent": f"gpu:{index}"}


# Seconds before NVML is tried again after it failed to initialise, doubling
# at each failure up to the cap: a host without a driver dlopen()s a minute,
# two, four... apart, and at most hourly.
RETRY_INIT = (60.0, 3600.0)


class GpuSource:
    name = "gpu"
    every_tick = True        # off the loop, but at the domain interval, not the process scan's

    def __init__(self) -> None:
        self.nvml = None
        self.names: dict[str, tuple[str, str]] = {}     # domain -> (name, uuid), as last read
        self.instances: dict[int, list[int]] = {}       # GPU index -> the MIG slots it used, as last read
        self.errors: dict[str, str] = {}                # domain -> the last NVML error
        self._init_error: str | None = None             # why NVML last failed to initialise
        self._retry = RETRY_INIT[0]
        # Until when (monotonic) a run would only say the same Unavailable:
        # the daemon does not hand it to a thread before then.
        self.idle_until = 0.0

    def _init(self, now: Instant):
        """NVML, initialised; Unavailable (the same, without trying again)
        until ``idle_until`` after a failure (RETRY_INIT): a driver
        installed or loaded later is found, and a host without one does not
        dlopen() at every tick."""
        if self._init_error is not None and now.mono < self.idle_until:
            raise Unavailable(self._init_error)
        try:
            import pynvml
        except ImportError:
            return self._unavailable(now, "pynvml (nvidia-ml-py) is not installed")
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError_LibraryNotFound:
            return self._unavailable(now, "no NVIDIA driver (libnvidia-ml.so.1 not found)")
        except pynvml.NVMLError as e:
            return self._unavailable(now, f"NVML: {e}")
        self._init_error, self._retry, self.idle_until = None, RETRY_INIT[0], 0.0
        self.nvml = pynvml
        return pynvml

    def _unavailable(self, now: Instant, reason: str):
        self._init_error = reason
        self.idle_until = now.mono + self._retry
        self._retry = min(2 * self._retry, RETRY_INIT[1])
        raise Unavailable(reason)

    def collect(self, now: Instant) -> Reading:
        nvml = self.nvml or self._init(now)
        reading = Reading(tracked=set())
        devices: dict[str, dict] = {}
        for index in range(nvml.nvmlDeviceGetCount()):
            gpu = f"gpu:{index}"
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                slots = _mig_slots(nvml, handle)
            except nvml.NVMLError as e:
                self._failed(reading, devices, gpu, {"index": index}, e)
                for slot in self.instances.get(index, ()):
                    self._failed(reading, devices, *_instance(index, slot), e)
            else:
                self._read(nvml, reading, devices, gpu, {"index": index}, handle, processes=not slots)
                self.instances[index] = [slot for slot in range(slots)
                                         if self._read_instance(nvml, reading, devices, index, handle, slot)]
            devices[gpu]["mig_devices"] = [_instance(index, slot)[0] for slot in self.instances.get(index, ())]
        reading.facts = {"driver": _text(nvml.nvmlSystemGetDriverVersion()), "devices": devices}
        return reading

    def _read_instance(self, nvml, reading: Reading, devices: dict, index: int, handle, slot: int) -> bool:
        """Sample MIG slot *slot* of GPU *index* (*handle*); whether the slot
        holds an instance (NOT_FOUND: it is empty)."""
        domain, where = _instance(index, slot)
        try:
            mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
        except nvml.NVMLError as e:
            if e.value == nvml.NVML_ERROR_NOT_FOUND:
                return False
            self._failed(reading, devices, domain, where, e)
            return True
        self._read(nvml, reading, devices, domain, where, mig, processes=True)
        return True

    def _read(self, nvml, reading: Reading, devices: dict, domain: str, where: dict, handle,
              processes: bool) -> None:
        """Sample the GPU or MIG instance behind *handle* as *domain*, with
        its processes where *processes*; an NVML error skips it, counted."""
        reading.tracked.add(domain)
        try:
            uuid = _text(nvml.nvmlDeviceGetUUID(handle))
            if self.names.get(domain, (None, None))[1] != uuid:
                self.names[domain] = (_text(nvml.nvmlDeviceGetName(handle)), uuid)
            total, reserved, used, free, call = _memory(nvml, handle)
            util_gpu, util_memory = _utilization(nvml, handle)
            held = [{"pid": p.pid, "used_bytes": p.usedGpuMemory}
                    for p in nvml.nvmlDeviceGetComputeRunningProcesses(handle)] if processes else []
        except nvml.NVMLError as e:
            self._failed(reading, devices, domain, where, e)
            return
        self.errors.pop(domain, None)
        name, uuid = self.names[domain]
        reading.samples.append(Sample(domain, "gpu", used, used, total - (reserved or 0)))
        devices[domain] = {**where, "name": name, "uuid": uuid, "total_bytes": total, "reserved_bytes": reserved,
                           "used_bytes": used, "free_bytes": free, "utilization_gpu": util_gpu,
                           "utilization_memory": util_memory, "memory_info": call, "processes": held}

    def _failed(self, reading: Reading, devices: dict, domain: str, where: dict, e) -> None:
        """*domain* could not be read: still tracked (it stays a domain while
        it fails), counted, and shown with the error, its last name and UUID."""
        reading.tracked.add(domain)
        self.errors[domain] = str(e)
        reading.skipped["nvml_error"] += 1
        name, uuid = self.names.get(domain, (None, None))
        devices[domain] = {**where, "error": str(e), "name": name, "uuid": uuid}
