"""The daemon's YAML configuration, loaded once into typed, validated data.

Every value is checked when the file is read, with units resolved
(``interval: 250ms`` becomes 0.25), so nothing downstream parses strings.
An unknown key or a wrong type is a :class:`ConfigError` naming the file,
line and dotted key, and what was expected.  The schema is the dataclasses
below; docs/configuration.md documents each key.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import typing
from dataclasses import dataclass, field

import yaml

from .units import parse_duration, parse_size


class ConfigError(ValueError):
    """A problem in a config file, placed at file:line and a dotted key."""

    def __init__(self, source: str, line: int | None, key: str, message: str) -> None:
        self.source, self.line, self.key, self.message = source, line, key, message
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {key or 'document'}: {message}")


# The system daemon's control socket (root's default; a user's memguardctl
# falls back to it).
SYSTEM_SOCKET = "/run/memguard/memguard.sock"


def _duration(**kw):
    return field(metadata={"parse": parse_duration, "expect": "a duration (250ms, 2s, 5m)"}, **kw)


@dataclass(frozen=True)
class SamplingConfig:
    interval: float = _duration(default=1.0)            # when a domain is neither at rest nor close
    fast_interval: float = _duration(default=0.25)      # when any domain is close to it
    rest_interval: float = _duration(default=300.0)      # when every domain is at rest (0s: never rest)
    rest_below: float = 0.5                             # a domain under this share of its limit is at rest
    rest_step: float = 0.05                             # at rest, a v1 cgroup growing by this share of its limit wakes us
    # a domain the kernel cannot wake us for (host, v2 cgroups, GPUs) is
    # assumed to grow at most this much a second while the daemon rests
    rest_growth: int = field(default=1 << 30, metadata={"parse": parse_size, "expect": "a size (1GiB) per second"})
    fast_above: float = 0.85                            # usage ratio that counts as close
    fast_below_tto: float = _duration(default=120.0)    # ...or a predicted time to OOM this short
    processes_interval: float = _duration(default=5.0)  # top consumers: slower, costlier
    discovery_interval: float = _duration(default=10.0) # rescan of the cgroup hierarchies


@dataclass(frozen=True)
class RecorderConfig:
    fine_window: float = _duration(default=600.0)   # every sample, this far back
    fine_step: float = _duration(default=0.5)       # finest spacing kept (sizes the ring)
    coarse_window: float = _duration(default=3600.0)
    coarse_step: float = _duration(default=10.0)    # one max-aggregated point per step


@dataclass(frozen=True)
class CgroupsConfig:
    include: tuple[str, ...] = ("*",)     # fnmatch globs on the cgroup path ("/system.slice/*")
    exclude: tuple[str, ...] = ()
    max_tracked: int = 256                # domains beyond this are counted, not tracked


@dataclass(frozen=True)
class ProcessesConfig:
    top: int = 10                         # consumers listed per snapshot


@dataclass(frozen=True)
class WslConfig:
    wslconfig: str = "auto"               # "auto" (/mnt/c/Users/*/.wslconfig), a path, or "off"
    read_timeout: float = _duration(default=2.0)  # the Windows drive can hang


@dataclass(frozen=True)
class GpuConfig:
    enabled: bool = True                  # NVIDIA GPUs through NVML (pynvml) as domains gpu:<index>


@dataclass(frozen=True)
class ProbesConfig:
    kmsg: bool = True                     # /dev/kmsg: the kernel's OOM report
    tracefs: bool = True                  # oom:mark_victim in our own trace instance
    mount_tracefs: bool = True            # mount tracefs at /sys/kernel/tracing when it is not
    tracefs_instance: str = "memguard"    # our trace instance, instances/NAME
    bpf: bool = True                      # eBPF through BCC, in a child process
    bpf_python: str = ""                  # a Python that can import Debian's bcc ("" = memguardd's own)
    memcg_events: bool = True             # cgroup OOM notifications (v1 eventfd, v2 memory.events)
    proc_events: bool = True              # exec events (netlink proc connector): who a victim was


@dataclass(frozen=True)
class IncidentsConfig:
    max_count: int = 1000                 # the newest kept
    max_age: float = _duration(default=90 * 86400.0)
    settle: float = _duration(default=2.0)  # sealed when no probe added anything for this long
    # Who may read an incident (its victims' command lines, environment):
    # "auto" follows /proc (private where it is mounted with hidepid), "yes"
    # only the victims' owners (and root, admin_group), "no" every user.
    private: str = field(default="auto", metadata={"parse": lambda raw: _one_of(raw, ("auto", "yes", "no")),
                                                   "expect": "auto, yes or no"})


@dataclass(frozen=True)
class RulesConfig:
    # Rule files or globs (rules.d/*.yaml); relative paths are taken from
    # the config file's directory.  docs/rules.md describes the format.
    files: tuple[str, ...] = ()


@dataclass(frozen=True)
class ActionsConfig:
    dry_run: bool = False                 # decide, log and count every action, carry out none
    hook_timeout: float = _duration(default=30.0)   # a hook still running then is killed
    freeze_every: float = _duration(default=5.0)    # while a freeze level holds, one more process this often
    thaw_every: float = _duration(default=5.0)      # once it no longer holds, one process thawed this often
    max_freeze: float = _duration(default=600.0)    # no process stays frozen longer, whatever the rules say
    kill_every: float = _duration(default=10.0)     # while a kill level stands, another kill this long after one


def _one_of(raw, choices: tuple[str, ...]) -> str:
    """*raw* when it is one of *choices*; YAML's bools read as yes/no."""
    value = {True: "yes", False: "no"}.get(raw, raw) if isinstance(raw, bool) else raw
    if value not in choices:
        raise ValueError(f"expected one of {', '.join(choices)}, got {raw!r}")
    return value


def octal_mode(raw) -> int:
    """A file mode: YAML reads an unquoted 0660 as the octal number already."""
    if isinstance(raw, str):
        try:
            raw = int(raw, 8)
        except ValueError:
            raise ValueError(f"expected an octal mode such as \"0660\", got {raw!r}") from None
    if not isinstance(raw, int) or isinstance(raw, bool) or not 0 <= raw <= 0o777:
        raise ValueError(f"expected an octal mode such as \"0660\", got {raw!r}")
    return raw


@dataclass(frozen=True)
class MetricsConfig:
    listen: str = "127.0.0.1:9717"        # host:port; "" turns the endpoint off
    web_config: str = ""                  # TLS and basic auth (export/web.py); relative to the config file


@dataclass(frozen=True)
class RootsConfig:
    proc: str = "/proc"
    sys: str = "/sys"


@dataclass(frozen=True)
class Config:
    socket: str = ""                      # "" = /run/memguard/memguard.sock as root, else per user
    state_dir: str = ""                   # "" = /var/lib/memguard as root, else per user
    # Who may connect: 0666, anyone (each request is checked against the
    # peer's credentials); 0660, root and the socket's group (the unit's
    # Group=memguard).
    socket_mode: int = field(default=0o666, metadata={"parse": octal_mode, "expect": 'an octal mode such as "0660"'})
    lock_memory: bool = False             # mlockall: the guard is never paged out under pressure
    admin_group: str = "memguard"         # its members see every user's events (watch), as root does
    roots: RootsConfig = RootsConfig()
    metrics: MetricsConfig = MetricsConfig()
    sampling: SamplingConfig = SamplingConfig()
    recorder: RecorderConfig = RecorderConfig()
    cgroups: CgroupsConfig = CgroupsConfig()
    processes: ProcessesConfig = ProcessesConfig()
    wsl: WslConfig = WslConfig()
    gpu: GpuConfig = GpuConfig()
    probes: ProbesConfig = ProbesConfig()
    incidents: IncidentsConfig = IncidentsConfig()
    rules: RulesConfig = RulesConfig()
    actions: ActionsConfig = ActionsConfig()
    source: str = field(default="", metadata={"internal": True})  # the file read ("" for the defaults)

    def rule_files(self) -> list[str]:
        """The rule files, globs expanded, relative to the config file, each once."""
        out = []
        for pattern in self.rules.files:
            path = self.relative_to_source(pattern)
            matched = sorted(glob.glob(path)) if glob.has_magic(path) else [path]
            out += [m for m in matched if m not in out]      # a file named twice is read once
        return out

    def relative_to_source(self, path: str) -> str:
        """*path* from the config file's directory (the working directory
        for the built-in defaults)."""
        base = os.path.dirname(os.path.abspath(self.source)) if self.source else os.getcwd()
        return os.path.normpath(os.path.join(base, os.path.expanduser(path)))

    def resolved_paths(self) -> tuple[str, str]:
        """(socket, state_dir) with the defaults for the current user filled in."""
        if os.geteuid() == 0:
            run, state = os.path.dirname(SYSTEM_SOCKET), "/var/lib/memguard"
        else:
            base = os.environ.get("XDG_RUNTIME_DIR") or os.path.expanduser("~/.local/state")
            run = state = os.path.join(base, "memguard")
        socket = self.socket or os.path.join(run, "memguard.sock")
        return socket, self.state_dir or state


def untrusted(path: str) -> str | None:
    """Why memguardd, running as root, must not read *path* (a config or
    rule file: it names hooks that run, processes to kill), or None: it and
    its directory must be root's and writable by no group or other user,
    or anyone who could write them would act as root."""
    for where in (path, os.path.dirname(os.path.abspath(path))):
        try:
            st = os.stat(where)
        except OSError:
            return None         # a missing file is reported by its reader
        if st.st_uid != 0:
            return (f"{where} is owned by uid {st.st_uid}, not root: memguardd runs as root and reads no file "
                    "another user could change (chown root it, or run memguardd as that user)")
        if st.st_mode & 0o022 and not (os.path.isdir(where) and st.st_mode & 0o1000):
            return (f"{where} is writable by its group or others (mode {st.st_mode & 0o7777:04o}): "
                    "memguardd runs as root and reads no file another user could change (chmod go-w it)")
    return None


def load_config(path: str) -> Config:
    """Read and validate *path*.  Raises ConfigError or OSError."""
    with open(path, encoding="utf-8") as f:
        return dataclasses.replace(parse_config(f.read(), path), source=path)


def parse_config(text: str, source: str = "<config>") -> Config:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise ConfigError(source, mark.line + 1 if mark else None, "", f"not valid YAML: {e}") from None
    if node is None:
        return Config()
    return _build(Config, node, source, "")


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _build(cls, node: yaml.Node, source: str, prefix: str):
    if not isinstance(node, yaml.MappingNode):
        raise ConfigError(source, _line(node), prefix, "expected a mapping of keys")
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    hints = typing.get_type_hints(cls)
    values = {}
    for key_node, value_node in node.value:
        key = key_node.value
        dotted = f"{prefix}.{key}" if prefix else key
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(source, _line(key_node), dotted, f"unknown key (known here: {known})")
        if key in values:
            raise ConfigError(source, _line(key_node), dotted, "given twice")
        values[key] = _value(hints[key], fields[key], value_node, source, dotted)
    return cls(**values)


def _value(hint, f: dataclasses.Field, node: yaml.Node, source: str, dotted: str):
    if dataclasses.is_dataclass(hint):
        return _build(hint, node, source, dotted)
    if typing.get_origin(hint) is tuple:
        if not isinstance(node, yaml.SequenceNode):
            raise ConfigError(source, _line(node), dotted, "expected a list of strings")
        return tuple(_scalar(str, item, source, dotted) for item in node.value)
    parse = f.metadata.get("parse")
    if parse is not None:
        if not isinstance(node, yaml.ScalarNode):
            raise ConfigError(source, _line(node), dotted, f"expected {f.metadata['expect']}")
        raw = yaml.safe_load(yaml.serialize(node))
        try:
            return parse(raw)
        except ValueError as e:
            raise ConfigError(source, _line(node), dotted, str(e)) from None
    return _scalar(hint, node, source, dotted)


def _scalar(hint, node: yaml.Node, source: str, dotted: str):
    expected = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}[hint]
    if not isinstance(node, yaml.ScalarNode):
        raise ConfigError(source, _line(node), dotted, f"expected {expected}")
    value = yaml.safe_load(yaml.serialize(node))
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if hint is str and value is None:
        value = ""
    elif hint is str and isinstance(value, bool):
        value = node.value      # YAML 1.1 reads a plain off/on/yes/no as a bool: `wslconfig: off` means "off"
    if type(value) is not hint:
        raise ConfigError(source, _line(node), dotted, f"expected {expected}, got {node.value!r}")
    if hint in (int, float) and value < 0:
        raise ConfigError(source, _line(node), dotted, f"must not be negative, got {value}")
    return value
