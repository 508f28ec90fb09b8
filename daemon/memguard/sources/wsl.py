"""WSL2: is this a WSL2 virtual machine, and does Windows give it what
``.wslconfig`` says?

Inside WSL2 the VM's MemTotal is the limit Windows set (``[wsl2] memory=``,
by default half of the Windows host's RAM), and when the VM runs out the
whole distro can die from the Windows side with no kernel OOM line.  Markers,
any of which is enough:

    /proc/sys/kernel/osrelease   5.15.153.1-microsoft-standard-WSL2
    /proc/version                Linux version ...-microsoft-standard-WSL2 ...
    /proc/sys/fs/binfmt_misc/WSLInterop   (Windows interop is registered)

``.wslconfig`` lives in the Windows user's profile (``C:\\Users\\NAME``), seen
from Linux through the drvfs/9p mount of drive C (``/mnt/c`` by default).
Reading it can hang when the Windows side is busy, so this source is run off
the event loop with a timeout.
"""

from __future__ import annotations

import configparser
import glob
import os

from ..clock import Instant
from ..roots import Roots, read_optional, read_text
from .base import Reading, Unavailable
from .meminfo import parse_meminfo

# MemTotal of a WSL2 VM is a little below its configured memory= (the kernel
# keeps its own image and reserved pages): 8GB configured shows ~7.7 GiB.
MATCH_TOLERANCE = 0.10


def detect(roots: Roots) -> str | None:
    """The WSL2 kernel release, or None when this is not a WSL2 VM."""
    release = (read_optional(roots.proc_path("sys", "kernel", "osrelease")) or "").strip()
    version = read_optional(roots.proc_path("version")) or ""
    interop = os.path.exists(roots.proc_path("sys", "fs", "binfmt_misc", "WSLInterop"))
    marker = "microsoft-standard"
    if marker in release.lower() or "wsl2" in release.lower() or marker in version.lower() or interop:
        return release or "unknown"
    return None


_WSL_UNITS = {"": 1, "B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


def parse_wsl_size(text: str) -> int:
    """A size as WSL reads it: ``8GB`` is 8 GiB (WSL's units are binary)."""
    value = text.strip().upper()
    number = value.rstrip("KMGTB")
    unit = value[len(number):]
    if unit in ("K", "M", "G", "T"):
        unit += "B"
    try:
        size = float(number) * _WSL_UNITS[unit]
        if not 0 <= size < 2**63:            # inf, nan (found by fuzzing: memory=INF), negative
            raise ValueError
        return int(size)
    except (ValueError, KeyError):
        raise ValueError(f"expected a size such as 8GB or 512MB, got {text!r}") from None


def parse_wslconfig(text: str) -> dict[str, object]:
    """The memory settings of a .wslconfig: memory and swap in bytes (None =
    WSL's default), auto_memory_reclaim as written.  Raises ValueError naming
    the bad line."""
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str.lower  # WSL reads keys case-insensitively
    try:
        parser.read_string(text)
    except configparser.Error as e:
        raise ValueError(f"not an INI file: {e}") from None
    wsl2 = parser["wsl2"] if parser.has_section("wsl2") else {}
    out: dict[str, object] = {"memory": None, "swap": None, "auto_memory_reclaim": None}
    for key in ("memory", "swap"):
        if key in wsl2:
            try:
                out[key] = parse_wsl_size(wsl2[key])
            except ValueError as e:
                raise ValueError(f"[wsl2] {key}: {e}") from None
    for section in ("experimental", "wsl2"):  # moved from [experimental] in WSL 2.x
        if parser.has_section(section) and "automemoryreclaim" in parser[section]:
            out["auto_memory_reclaim"] = parser[section]["automemoryreclaim"].strip()
    return out


def find_wslconfig(roots: Roots, setting: str) -> list[str]:
    """Candidate .wslconfig paths for the configured *setting* ("auto" or a path)."""
    if setting == "auto":
        pattern = roots.rootfs_path("/mnt/*/Users/*/.wslconfig")
        return sorted(glob.glob(pattern))
    return [setting] if os.path.exists(setting) else []


class WslSource:
    """Facts about the WSL2 VM for status; the memory itself is the ``wsl``
    domain read by the host source."""

    name = "wsl"
    blocking = True  # the Windows drive can hang: run off the loop

    def __init__(self, roots: Roots, wslconfig: str = "auto") -> None:
        self.roots = roots
        self.setting = wslconfig
        self.release = detect(roots)

    def collect(self, now: Instant) -> Reading:
        if self.release is None:
            raise Unavailable("not a WSL2 virtual machine")
        mem = parse_meminfo(read_text(self.roots.proc_path("meminfo")))
        facts: dict[str, object] = {"kernel": self.release, "mem_total_bytes": mem.get("MemTotal"),
                                    "swap_total_bytes": mem.get("SwapTotal")}
        reading = Reading(facts=facts)
        if self.setting == "off":
            facts["wslconfig"] = "not read (wsl.wslconfig: off)"
            return reading
        paths = find_wslconfig(self.roots, self.setting)
        if not paths:
            facts["wslconfig"] = "not found: WSL's defaults apply (memory = half the Windows RAM)"
            return reading
        facts["wslconfig"] = paths[0]
        if len(paths) > 1:
            facts["wslconfig_others"] = paths[1:]
        try:
            settings = parse_wslconfig(read_text(paths[0]))
        except ValueError as e:
            facts["wslconfig_error"] = f"{paths[0]}: {e}"
            reading.skipped["malformed"] += 1
            return reading
        facts.update({f"wslconfig_{k}": v for k, v in settings.items()})
        facts["wslconfig_matches"] = self._matches(settings, mem)
        return reading

    @staticmethod
    def _matches(settings: dict[str, object], mem: dict[str, int]) -> bool | None:
        """Whether the VM got what .wslconfig asks for; None when it asks nothing."""
        verdicts = []
        memory, total = settings["memory"], mem.get("MemTotal")
        if memory is not None and total is not None:
            verdicts.append((1 - MATCH_TOLERANCE) * memory <= total <= memory)
        swap, swap_total = settings["swap"], mem.get("SwapTotal")
        if swap is not None and swap_total is not None:
            verdicts.append(abs(swap_total - swap) <= MATCH_TOLERANCE * max(swap, 1))
        return all(verdicts) if verdicts else None
