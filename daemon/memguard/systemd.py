"""sd_notify(3): tell systemd we are ready, alive, and stopping.

The protocol is one datagram of ``KEY=VALUE`` lines to $NOTIFY_SOCKET (an
abstract socket when it starts with '@').  Without NOTIFY_SOCKET every call
does nothing, so the daemon runs the same outside systemd.
"""

from __future__ import annotations

import os
import socket


class Notifier:
    def __init__(self, environ: dict | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET")
        self.address = None
        if address:
            self.address = "\0" + address[1:] if address.startswith("@") else address
        usec = env.get("WATCHDOG_USEC")
        # Ping at half the watchdog period, as sd_watchdog_enabled(3) advises.
        self.watchdog_interval = int(usec) / 2e6 if usec and usec.isdigit() else None

    def notify(self, state: str) -> bool:
        """Send *state*; False when not under systemd or the send failed."""
        if self.address is None:
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            try:
                s.sendto(state.encode(), self.address)
            except OSError:
                return False
        return True


SD_LISTEN_FDS_START = 3


def listen_sockets(environ: dict | None = None) -> list[socket.socket]:
    """The sockets systemd passed (sd_listen_fds(3)): for socket activation,
    where memguard.socket opens /metrics' port and memguardd, allowed no
    internet socket of its own, serves on it.  Empty when none were passed
    to this process; the variables are removed so children do not see them."""
    env = os.environ if environ is None else environ
    try:
        ours = int(env.get("LISTEN_PID", "")) == os.getpid()
        count = int(env.get("LISTEN_FDS", "0"))
    except ValueError:
        return []
    for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        env.pop(key, None)
    if not ours:
        return []
    out = []
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count):
        os.set_inheritable(fd, False)
        out.append(socket.socket(fileno=fd))
    return out
