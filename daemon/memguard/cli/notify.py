"""memguardctl notify-agent: memguard's warnings on the desktop of the
person whose processes they concern.

The agent runs as that person, in their session (the desktop starts it from
/etc/xdg/autostart/memguard-notify-agent.desktop), and subscribes to the
daemon's ``watch`` stream, which already holds only what this user may see.
So the daemon never reaches into a user's session as root (what nohang does
through sudo and notify-send), and no helper has to listen on the system
bus (earlyoom's systembus-notify).  Each event worth a person's attention
becomes one notification:

- on Linux, through the session bus (org.freedesktop.Notifications.Notify,
  with jeepney, a pure-Python D-Bus library: no C bindings to build);
- in WSL2, also as a Windows toast through interop (powershell.exe), since
  the Linux desktop, if any, is not where the person looks.

Rate-limited: a warning of the same rule and domain at most every
``repeat`` seconds, a critical at most every 10 s; each incident once.  At
start it also tells of the kills and unclean stops of the last
``recent`` seconds (a WSL VM killed whole comes back with no one told).
The agent reconnects when the daemon restarts.
"""

from __future__ import annotations

import datetime
import itertools
import os
import shutil
import subprocess
import sys
import time

from . import client

CRITICAL_REPEAT = 10.0
TOAST_TIMEOUT = 15.0


def _tto(seconds) -> str:
    if seconds is None:
        return ""
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def message(event: dict) -> tuple[str, str, str] | None:
    """(urgency, summary, body) for an event a person should see, or None."""
    kind = event.get("type")
    where = event.get("domain") or "memory"
    if kind == "rule" and event.get("event") in ("warning", "critical"):
        tto = _tto(event.get("tto_seconds"))
        summary = f"{where} " + (f"runs out of memory in {tto}" if tto else "is running out of memory")
        ratio = event.get("usage_ratio")
        body = (f"{event['event'].capitalize()} from rule {event.get('rule')}"
                + (f" for job {event['job']}" if event.get("job") else "")
                + (f"; {100 * ratio:.0f}% of its limit in use" if ratio is not None else "")
                + ". Save your work, or stop something you can spare. See: memguardctl top")
        return ("critical" if event["event"] == "critical" else "normal"), summary, body
    if kind == "action" and event.get("kind") == "kill" and event.get("result") == "sent":
        pids = ", ".join(str(t["pid"]) for t in event.get("targets", ()) if "pid" in t)
        return ("critical", f"memguard ended a process in {where}",
                f"pid {pids}, by rule {event.get('rule')}, before the kernel's OOM killer chose one. "
                "Why: memguardctl incidents")
    if kind == "incident" and event.get("kind") in ("oom_kill", "memguard_kill", "gpu_oom", "unclean_stop"):
        return ("critical", {"oom_kill": "Out of memory: a process was killed",
                             "memguard_kill": "memguard ended a process",
                             "gpu_oom": "CUDA out of memory",
                             "unclean_stop": "The machine stopped without warning"}[event["kind"]],
                (event.get("headline") or "") + f" Details: memguardctl incident show {event.get('id')}")
    return None


class Limiter:
    """Whether to show an event now: the same warning at most every
    *repeat* seconds, a critical every CRITICAL_REPEAT, an incident once."""

    def __init__(self, repeat: float, clock=time.monotonic) -> None:
        self.repeat, self.clock = repeat, clock
        self.last: dict[tuple, float] = {}
        self.incidents: set[str] = set()

    def allow(self, event: dict, urgency: str) -> bool:
        if event.get("type") == "incident":
            if event.get("id") in self.incidents:
                return False
            self.incidents.add(event.get("id"))
            return True
        key = (event.get("type"), event.get("domain"), event.get("rule"), event.get("job"), urgency)
        now = self.clock()
        if now - self.last.get(key, -1e9) < (CRITICAL_REPEAT if urgency == "critical" else self.repeat):
            return False
        self.last[key] = now
        return True


def desktop(urgency: str, summary: str, body: str) -> bool:
    """Notify through the session bus; False without one."""
    if not os.environ.get("DBUS_SESSION_BUS_ADDRESS"):
        return False
    try:
        from jeepney import DBusAddress, new_method_call
        from jeepney.io.blocking import open_dbus_connection
    except ImportError:
        return False
    address = DBusAddress("/org/freedesktop/Notifications", bus_name="org.freedesktop.Notifications",
                          interface="org.freedesktop.Notifications")
    hints = {"urgency": ("y", 2 if urgency == "critical" else 1), "category": ("s", "device.warning"),
             "desktop-entry": ("s", "memguard-notify-agent")}
    msg = new_method_call(address, "Notify", "susssasa{sv}i",
                          ("memguard", 0, "dialog-warning", summary, body, [], hints,
                           0 if urgency == "critical" else 10000))
    try:
        with open_dbus_connection(bus="SESSION") as conn:
            conn.send_and_get_reply(msg, timeout=5)
    except Exception:           # no notification server, a bus that went away
        return False
    return True


def in_wsl() -> bool:
    return bool(os.environ.get("WSL_DISTRO_NAME")) or os.path.exists("/proc/sys/fs/binfmt_misc/WSLInterop")


def toast(summary: str, body: str) -> bool:
    """A Windows toast from WSL2 through interop (powershell.exe and the
    WinRT toast API every Windows 10/11 has); False without interop."""
    powershell = shutil.which("powershell.exe")
    if powershell is None:
        return False

    def quoted(text: str) -> str:
        return "'" + text.replace("'", "''") + "'"
    script = ("[Windows.UI.Notifications.ToastNotificationManager, Windows.UI.Notifications, ContentType=WindowsRuntime]"
              " | Out-Null; "
              "$t = [Windows.UI.Notifications.ToastNotificationManager]::GetTemplateContent("
              "[Windows.UI.Notifications.ToastTemplateType]::ToastText02); "
              f"$x = $t.GetElementsByTagName('text'); $x.Item(0).InnerText = {quoted(summary)}; "
              f"$x.Item(1).InnerText = {quoted(body)}; "
              "[Windows.UI.Notifications.ToastNotificationManager]::CreateToastNotifier('memguard')"
              ".Show([Windows.UI.Notifications.ToastNotification]::new($t))")
    try:
        return subprocess.run([powershell, "-NoProfile", "-NonInteractive", "-Command", script],
                              capture_output=True, timeout=TOAST_TIMEOUT).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def show(urgency: str, summary: str, body: str) -> list[str]:
    """Every way this session has; which worked (stdout when none did)."""
    shown = []
    if desktop(urgency, summary, body):
        shown.append("desktop")
    if in_wsl() and toast(summary, body):
        shown.append("windows")
    stamp = datetime.datetime.now().strftime("%H:%M:%S")
    print(f"{stamp} {summary}: {body} [{', '.join(shown) or 'here only'}]", flush=True)
    return shown


def _recent(paths: list[str], timeout: float, recent: float) -> list[dict]:
    """Incidents of the last *recent* seconds, as watch events, oldest first."""
    for path in paths:
        try:
            listing = client.call(path, "incidents", {}, timeout=timeout)
        except (client.Unreachable, client.RemoteError):
            continue
        now = datetime.datetime.now(datetime.timezone.utc)
        out = []
        for inc in listing.get("incidents", ()):
            f = inc["fields"]
            try:
                when = datetime.datetime.fromisoformat(f["time"].replace("Z", "+00:00"))
            except (KeyError, ValueError):
                continue
            if (now - when).total_seconds() <= recent:
                out.append({"type": "incident", "id": inc["id"], "kind": f.get("kind"),
                            "domain": f.get("domain"), "headline": f.get("headline")})
        return out[::-1]
    return []


def agent(paths: list[str], timeout: float, repeat: float, recent: float, retry: float = 5.0) -> int:
    """Follow the daemon until stopped, reconnecting when it restarts."""
    limiter = Limiter(repeat)
    told_recent = False
    while True:
        for path in paths:
            try:
                events = client.stream(path, "watch", {}, timeout=timeout)
                first = next(events)
            except (client.Unreachable, client.RemoteError):
                continue
            print(f"notify-agent: following memguardd on {path} ({first['sees']})", file=sys.stderr, flush=True)
            backlog = [] if told_recent else _recent([path], timeout, recent)
            told_recent = True
            try:
                for event in itertools.chain(backlog, events):
                    said = message(event)
                    if said is not None and limiter.allow(event, said[0]):
                        show(*said)
            except (OSError, ValueError):
                pass
            print("notify-agent: memguardd went away; waiting for it", file=sys.stderr, flush=True)
            break
        time.sleep(retry)
