"""Pushing events to the clients that asked (the ``watch`` method): rule
warnings, actions and incidents as JSON lines, each to the peers that may
see it.

An event names the uids it concerns (the owner of the job, the users with
processes in the domain, the victims of a kill); None means everyone (the
host running out concerns every user).  Root and the daemon's own user see
every event, and so do members of the admin group (``memguard``, the
group the systemd unit gives the socket).  A watcher that does not read falls behind; once its unsent
lines pass MAX_BUFFERED it is dropped, counted, so a stuck client costs
memguardd a bounded amount of memory and never blocks the loop.
"""

from __future__ import annotations

import asyncio
import json

from .server import Peer

MAX_BUFFERED = 1 << 20
MAX_WATCHERS = 256


class Watchers:
    def __init__(self, admin_gid: int | None = None) -> None:
        self.peers: dict[asyncio.StreamWriter, Peer] = {}
        self.admin_gid = admin_gid
        self.dropped = 0

    def sees_all(self, peer: Peer) -> bool:
        return peer.privileged or (self.admin_gid is not None and self.admin_gid in peer.groups)

    def add(self, peer: Peer) -> bool:
        """Start pushing to *peer*'s connection; False when there are too many."""
        if peer.writer is None or len(self.peers) >= MAX_WATCHERS:
            return False
        writer = peer.writer
        self.peers[writer] = peer
        peer.on_close.append(lambda: self.peers.pop(writer, None))
        return True

    def publish(self, event: dict, uids: set[int] | None) -> int:
        """Send *event* to each watcher that may see it; how many got it."""
        line = json.dumps(event, separators=(",", ":")).encode() + b"\n"
        sent = 0
        for writer, peer in list(self.peers.items()):
            if not (uids is None or peer.uid in uids or self.sees_all(peer)):
                continue
            if writer.is_closing():
                self.peers.pop(writer, None)
                continue
            if writer.transport.get_write_buffer_size() > MAX_BUFFERED:
                self.peers.pop(writer, None)
                self.dropped += 1
                writer.close()
                continue
            writer.write(line)
            sent += 1
        return sent
