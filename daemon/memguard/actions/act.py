"""Carrying actions out: signals through pidfds, and hooks.

A process is signalled only if it is still the one that registered: the
pidfd is opened first (it then refers to one process, whatever happens to
its pid), and the process's start time read after it must be the one the
job recorded; a pid reused by another process is left alone.  Linux 5.3+
(pidfd_open).

A hook runs as the job's own user and that user's primary group, never as
root for a job that is not root's: its command came from the job's
environment.  It runs in a session of its own from /, with the prediction
in MEMGUARD_* variables and as JSON on its standard input; what it prints
is kept up to HOOK_OUTPUT bytes; when it outlasts its timeout its whole
process group is killed; it is always waited for (no zombie).  Everything
here runs in a worker thread, never on the loop.
"""

from __future__ import annotations

import json
import os
import pwd
import select
import signal
import subprocess
import time

from ..roots import Roots
from .kill import kill_one
from .pidfd import pin
from .plan import ActionDone, ActionWanted


def signal_process(roots: Roots, pid: int, start: float | None, sig: int) -> str:
    """``sent``, ``gone`` (it exited), ``reused`` (another process has the
    pid now) or ``failed: REASON``."""
    fd = pin(roots, pid, start)
    if isinstance(fd, str):
        return fd
    try:
        signal.pidfd_send_signal(fd, sig)
    except ProcessLookupError:
        return "gone"
    except OSError as e:
        return f"failed: {e.strerror}"
    finally:
        os.close(fd)
    return "sent"


def set_oom_score_adj(roots: Roots, pid: int, start: float | None, value: int) -> str:
    """``set``, ``gone``, ``reused``, ``refused`` (lowering a process's value
    below what it was given needs CAP_SYS_RESOURCE, which root lacks in many
    containers) or ``failed: REASON``.  The pidfd is held while the value is
    written, so the pid cannot change hands."""
    fd = pin(roots, pid, start)
    if isinstance(fd, str):
        return fd
    try:
        with open(roots.proc_path(str(pid), "oom_score_adj"), "w") as f:
            f.write(str(value))
    except FileNotFoundError:
        return "gone"
    except PermissionError:
        return "refused"
    except OSError as e:
        return f"failed: {e.strerror}"
    finally:
        os.close(fd)
    return "set"


HOOK_OUTPUT = 16 * 1024      # bytes of a hook's output kept (the rest is read and dropped)


def hook_environment(action: ActionWanted) -> dict[str, str]:
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "MEMGUARD_RULE": action.rule,
           "MEMGUARD_SEVERITY": action.severity, "MEMGUARD_DOMAIN": action.domain}
    if action.job:
        env["MEMGUARD_JOB_ID"] = action.job      # (none for a hook of the domain itself)
    for key, value in action.context.items():
        if value is not None:
            env[f"MEMGUARD_{key.upper()}"] = str(value)
    return env


def run_hook(action: ActionWanted) -> tuple[str, dict]:
    """Run the hook as the job's user: (result, detail), result ``ok``,
    ``failed`` or ``timed_out``."""
    uid = action.uid if action.uid is not None else 65534
    try:
        gid = pwd.getpwuid(uid).pw_gid
    except KeyError:
        gid = uid   # a uid without a passwd entry (a container's): its own number as the group
    detail: dict = {"uid": uid, "gid": gid}
    payload = json.dumps({"job": action.job, "rule": action.rule, "severity": action.severity,
                          "domain": action.domain, **action.context}).encode()
    try:
        proc = subprocess.Popen(["/bin/sh", "-c", action.command], cwd="/", env=hook_environment(action),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                user=uid, group=gid, extra_groups=[], start_new_session=True, close_fds=True)
    except (OSError, subprocess.SubprocessError) as e:
        return "failed", {**detail, "error": str(e)}
    output, timed_out = _communicate(proc, payload, action.timeout)
    detail.update(exit_status=proc.returncode, output=output.decode("utf-8", "replace"))
    if timed_out:
        return "timed_out", detail
    return ("ok" if proc.returncode == 0 else "failed"), detail


def _communicate(proc: subprocess.Popen, payload: bytes, timeout: float) -> tuple[bytes, bool]:
    """Feed *payload*, keep HOOK_OUTPUT bytes of the output until it ends,
    kill the hook's process group at *timeout*; always reaps it.  Returns
    (output, timed out)."""
    deadline = time.monotonic() + timeout
    try:
        proc.stdin.write(payload)    # small: fits the pipe, so this never blocks
        proc.stdin.close()
    except OSError:
        pass   # it does not read its input: fine
    fd = proc.stdout.fileno()
    kept = bytearray()
    timed_out = False
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            break
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break    # every writer closed its end: the hook and what it started
            if len(kept) < HOOK_OUTPUT:
                kept += chunk[:HOOK_OUTPUT - len(kept)]
    if not timed_out:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            timed_out = True
    if timed_out:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    proc.stdout.close()
    return bytes(kept), timed_out


def carry_out(roots: Roots, action: ActionWanted, now: float) -> ActionDone:
    """Do *action* (or, dry, only say what would be done: a dry kill still
    chooses its victim)."""
    if action.kind == "kill":
        result, details = kill_one(roots, action.choice, os.getpid(), dry_run=action.dry_run)
        return ActionDone(action.id, result, details, now)
    if action.dry_run:
        return ActionDone(action.id, "dry_run", tuple({"pid": p, "result": "dry_run"} for p, _ in action.targets),
                          now)
    if action.kind == "hook":
        result, detail = run_hook(action)
        return ActionDone(action.id, result, (detail,), now)
    if action.kind == "oom_score_adj":
        details = tuple({"pid": pid, "result": set_oom_score_adj(roots, pid, start, action.choice["value"])}
                        for pid, start in action.targets)
        done = [d for d in details if d["result"] == "set"]
        if "refused" in {d["result"] for d in details} and not done:
            return ActionDone(action.id, "refused", details, now)
        details = tuple({**d, "result": "sent" if d["result"] == "set" else d["result"]} for d in details)
    else:
        details = tuple({"pid": pid, "result": signal_process(roots, pid, start, action.signal)}
                        for pid, start in action.targets)
    results = {d["result"] for d in details}
    if results == {"sent"}:
        result = "sent"
    elif "sent" in results:
        result = "partial"
    elif results <= {"gone", "reused"}:
        result = "gone"
    else:
        result = "failed"
    return ActionDone(action.id, result, details, now)
