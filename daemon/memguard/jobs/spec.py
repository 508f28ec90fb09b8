"""The registration a job carries in its environment.

    MEMGUARD_JOB=NAME[,warning=SIGNAL][,critical=SIGNAL][,target=leader|all|largest][,hook=COMMAND]

``MEMGUARD_JOB=train python train.py`` registers the training run as job
``train``; every process it starts inherits the variable and belongs to the
job too.  ``warning=USR1`` asks for SIGUSR1 when a rule warns of the job's
domain, ``critical=TERM`` for SIGTERM at critical (signal names with or
without ``SIG``, or numbers); ``target`` says whether the job's first
process (``leader``, the default), all of them, or the largest by RSS (the
one growing, where a shell started it) gets it; ``hook=`` a
command to run, which takes the rest of the value (commas too), run as the
job's own user.  Pure: :func:`parse_job` raises :class:`JobSpecError`
naming the field.
"""

from __future__ import annotations

import re
import signal
from dataclasses import dataclass

ENV = "MEMGUARD_JOB"
NAME = re.compile(r"^[A-Za-z0-9_.@+-]{1,64}$")
MAX_VALUE = 4096
TARGETS = ("leader", "all", "largest")


class JobSpecError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{ENV}: {field}: {message}")
        self.field, self.message = field, message


@dataclass(frozen=True)
class JobSpec:
    name: str
    warning: int | None = None      # signal number at a warning
    critical: int | None = None     # at critical
    target: str = "leader"
    hook: str | None = None         # command line, run as the job's user

    def to_json(self) -> dict:
        return {"name": self.name, "warning": _signame(self.warning), "critical": _signame(self.critical),
                "target": self.target, "hook": self.hook}


def _signame(number: int | None) -> str | None:
    return None if number is None else signal.Signals(number).name


def parse_signal(text: str, field: str) -> int:
    """A signal by name (``USR1``, ``SIGUSR1``) or number; raises JobSpecError."""
    t = text.strip().upper()
    if t.isdigit():
        number = int(t)
        if number in {s.value for s in signal.Signals}:
            return number
    else:
        name = t if t.startswith("SIG") else "SIG" + t
        if name in signal.Signals.__members__:
            return signal.Signals[name].value
    raise JobSpecError(field, f"{text!r} is not a signal (USR1, SIGTERM, 10, ...)")


def parse_job(value: str) -> JobSpec:
    """The job a MEMGUARD_JOB value registers; raises JobSpecError."""
    if len(value) > MAX_VALUE:
        raise JobSpecError("value", f"longer than {MAX_VALUE} characters")
    head, _, rest = value.partition(",")
    name = head.strip()
    if not NAME.match(name):
        raise JobSpecError("name", f"{name!r} is not a job name (1-64 of letters, digits and _.@+-)")
    fields: dict[str, str] = {}
    while rest:
        part, _, after = rest.partition(",")
        key, eq, val = part.partition("=")
        key = key.strip()
        if not eq:
            raise JobSpecError(key or "field", "expected key=value")
        if key == "hook":       # the command is the rest of the value, commas and all
            val, after = rest.partition("=")[2], ""
        if key in fields:
            raise JobSpecError(key, "given twice")
        fields[key] = val
        rest = after
    known = {"warning", "critical", "target", "hook"}
    for key in fields:
        if key not in known:
            raise JobSpecError(key, f"unknown (known: {', '.join(sorted(known))})")
    target = fields.get("target", "leader").strip()
    if target not in TARGETS:
        raise JobSpecError("target", f"expected one of {', '.join(TARGETS)}, got {target!r}")
    hook = fields.get("hook")
    if hook is not None and not hook.strip():
        raise JobSpecError("hook", "empty command")
    return JobSpec(name,
                   parse_signal(fields["warning"], "warning") if "warning" in fields else None,
                   parse_signal(fields["critical"], "critical") if "critical" in fields else None,
                   target, hook.strip() if hook else None)


def format_job(spec: JobSpec) -> str:
    """The MEMGUARD_JOB value for *spec* (the inverse of parse_job)."""
    parts = [spec.name]
    for key in ("warning", "critical"):
        number = getattr(spec, key)
        if number is not None:
            parts.append(f"{key}={_signame(number).removeprefix('SIG')}")
    if spec.target != "leader":
        parts.append(f"target={spec.target}")
    if spec.hook:
        parts.append(f"hook={spec.hook}")
    return ",".join(parts)
