"""Which actions a rule transition asks for.  Pure.

A job registered with ``warning=SIG`` gets that signal when a rule fires on
a domain it has processes in, at warning or above (a fast climb may fire at
critical first: the job is still told); with ``critical=SIG``, that one at
critical or above (``last_resort`` counts as critical).  Each once per job,
rule and domain while the rule keeps firing, again after it clears.  The engine
emits an :class:`ActionWanted`; the shell carries it out off the loop
(actions/act.py) and hands back an :class:`ActionDone`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SEVERITY_SIGNAL = {"warning": ("warning",), "critical": ("warning", "critical"),
                   "last_resort": ("warning", "critical")}


@dataclass(frozen=True)
class ActionWanted:
    id: int
    kind: str                                   # "signal", "hook", "notify", "freeze", "thaw", "kill",
                                                # "oom_score_adj"
    rule: str
    severity: str | None                        # None: a thaw (the rule no longer stands at a freezing level)
    domain: str
    job: str | None                             # None: a rule's hook for the domain itself
    uid: int | None
    targets: tuple[tuple[int, float | None], ...]   # (pid, start time since boot)
    signal: int | None
    dry_run: bool
    at: float                                   # monotonic
    context: dict = field(default_factory=dict)   # the prediction that led to it
    command: str | None = None                  # a hook's command line
    timeout: float = 30.0                       # a hook's time to finish
    channel: int | None = None                  # where a notification goes
    event: str | None = None                    # a notification's: "warning" or "critical"
    choice: dict | None = None                  # a kill's: cgroup, pick, prefer, avoid, grace (actions/kill.py);
                                                # an oom_score_adj's: value


@dataclass(frozen=True)
class ActionDone:
    """The result of an ActionWanted: ``sent`` (every target), ``partial``,
    ``gone`` (no target was still there), ``failed``, ``dry_run``; a hook's
    ``ok`` or ``timed_out``; a kill's ``terminated`` (on SIGTERM),
    ``killed`` (SIGKILL after the grace period) or ``no_victim``; an
    oom_score_adj's ``refused`` (by every target: lowering needs
    CAP_SYS_RESOURCE)."""

    id: int
    result: str
    details: tuple[dict, ...] = ()
    at: float = 0.0


def wanted_hook(spec, severity: str) -> str | None:
    """The hook a job's registration asks to run once a rule reaches
    *severity* (warning or above), or None."""
    return spec.hook if severity in SEVERITY_SIGNAL else None


def wanted_signals(spec, severity: str) -> list[tuple[str, int]]:
    """(which, signal) the job's registration asks for once a rule reaches
    *severity*: its warning signal, and at critical its critical one."""
    return [(which, getattr(spec, which)) for which in SEVERITY_SIGNAL.get(severity, ())
            if getattr(spec, which) is not None]
