"""memguardd: the shell around the engine.

It owns the I/O the engine must not do: it runs the sources on one asyncio
loop (those that can block in a worker thread, with a timeout), watches the
probes' file descriptors, hands both to ``Engine.step`` with the current
instant, and carries out what the step returns: publish the snapshot to the
control socket and the metrics endpoint, write incidents.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures
import dataclasses
import json
import math
import os
import signal
import sys
import time

from . import __version__, state
from .api.protocol import BAD_REQUEST, NOT_FOUND, NOT_PERMITTED, NOT_READY, ProtocolError
from .api.server import ControlServer
from .api.watch import Watchers
from .clock import Clock, Instant, SystemClock
from .config import Config, ConfigError, load_config, octal_mode, untrusted
from .engine.engine import LOOKED, Engine, SourceRun, wake_threshold
from .engine.messages import (AllocatorReported, ChannelClosed, Dropped, GpuOomReported, JobRegistered, JobUnregistered, LookupWanted, ProbeRun,
                              RulesLoaded, RulesRejected)
from .jobs.spec import JobSpecError, parse_job
from .actions.act import carry_out
from .actions.freeze import (FROZEN_FILE, Frozen, FrozenList, Guard, boottime, choose_to_freeze, freeze,
                             own_freezer, thaw, thaw_all)
from .actions.plan import ActionDone, ActionWanted
from .engine.snapshot import Snapshot
from .export.http import MetricsServer
from .export.web import load_web_config
from .export.metrics import Metrics
from .incidents.redact import redact_cmdline
from .incidents.store import IncidentStore
from .incidents.unclean import unclean_stop_incident
from .log import Logger
from .rules.load import RuleError, load_rules
from .probes.build import build_probes
from .probes.memcg import MemcgProbe
from .sources.cgroups import Binding, CgroupSource
from .sources.meminfo import HostSource
from .probes.procevents import describe
from .probes.base import ProbeReading
from .roots import Roots
from .runner import IncidentWriter, ProbeHost, SlowSources, TickSources, run_source
from .sources import build_sources
from .systemd import Notifier, listen_sockets

# Exit codes of memguardd (docs/configuration.md).
EXIT_CONFIG = 2     # the config file or a flag is wrong
EXIT_STARTUP = 3    # a socket or port could not be opened

HEARTBEAT_INTERVAL = 5.0
HEARTBEAT_AT_REST = 60.0   # no domain near its limit: the heartbeat says little more than "alive"
MIN_TICK_SPACING = 0.05  # a probe's wake-up samples at most this often beyond the interval


class Daemon:
    def __init__(self, config: Config, roots: Roots, *, clock: Clock | None = None,
                 log: Logger | None = None) -> None:
        self.config = config
        self.roots = roots
        self.clock = clock or SystemClock()
        self.log = log or Logger()
        self.socket_path, self.state_dir = config.resolved_paths()
        self.tick_sources, slow = build_sources(config, roots)
        self.ticking = TickSources(self.tick_sources)
        self.slow = SlowSources(slow, config.sampling.processes_interval, config.wsl.read_timeout)
        self.engine = Engine(config, self.clock.now(), __version__, redact=redact_cmdline)
        self.metrics = Metrics()
        self.snapshot: Snapshot | None = None
        self.notifier = Notifier()
        self._status_line = ""
        self.protection = {"oom_score_adj": None, "memory_locked": False}   # how the guard protects itself
        self.watchers = Watchers(_gid(config.admin_group))
        self.private_incidents = {"yes": True, "no": False}.get(config.incidents.private) \
            if config.incidents.private != "auto" else proc_hides_pids(roots)
        self._published: collections.OrderedDict[str, str] = collections.OrderedDict()   # incident -> state pushed
        web = config.metrics.web_config
        self.web = load_web_config(config.relative_to_source(web)) if web else None
        self.stopping = asyncio.Event()
        self.wake = asyncio.Event()   # a probe wants the domains sampled now
        self.boot_id = state.boot_id(roots)
        self.cursor_path = os.path.join(self.state_dir, "kmsg-cursor.json")
        self.heartbeat_path = os.path.join(self.state_dir, "heartbeat.json")
        self.store = IncidentStore(os.path.join(self.state_dir, "incidents"),
                                   max_count=config.incidents.max_count,
                                   max_age_seconds=config.incidents.max_age)
        self.writer = IncidentWriter(self.store, self.log)
        self.probes = None
        self._rendered: Snapshot | None = None
        self._memcg_dirs = None
        # The memcg probe's registrations are made in a thread of their own
        # (each usage threshold waits for an RCU grace period): the loop says
        # what it wants, the thread makes the newest of it (_keep_memcg).
        self._memcg_pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="memguard-memcg")
        self._memcg_wanted = None       # (domains, thresholds or None, host) last asked for
        self._memcg_opened = 0          # the probe's open count then
        self._memcg_job: concurrent.futures.Future | None = None
        self._memcg_tracked = None      # (the probe's open count, domains) last tracked, in that thread
        self.metrics_url: str | None = None   # where /metrics is served, once it is
        self._lookups = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="memguard-proc")
        self._actuator = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="memguard-act")
        # Freezing and thawing never wait behind a hook: a thread of their own.
        self._freezer = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="memguard-freeze")
        # Nor does a last-resort kill, whose grace period would hold back thaws.
        self._killer = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="memguard-kill")
        self.frozen = FrozenList(os.path.join(self.state_dir, FROZEN_FILE))
        self.guard = Guard(self.frozen.path)
        self.audit_path = os.path.join(self.state_dir, "actions.log")
        self.channels: dict[int, asyncio.StreamWriter] = {}    # connections that want a job's notifications
        self._channel_seq = 0
        self.reload_rules(initial=True)
        self._saved_seq = None
        self._heartbeat_at = 0.0
        self._heartbeat_near = False       # the last heartbeat listed a domain near its limit
        self._arm_errors: set[str] = set()

    # -- ticks and events -------------------------------------------------------

    def tick(self) -> float:
        """Run one tick; return the interval until the next.  A bug in a
        source or the engine is logged, and the daemon goes on."""
        try:
            return self._tick()
        except Exception as e:  # noqa: BLE001 - one bad tick must not stop the watch
            self.log.error("tick failed", error=repr(e))
            try:
                self._apply(self.engine.step([], self.clock.now(), events=[Dropped({"tick_error": 1})]))
            except Exception as e2:  # noqa: BLE001 - counted or not, the watch goes on
                self.log.error("tick failure not counted", error=repr(e2))
            return self.config.sampling.interval

    def _tick(self) -> float:
        now = self.clock.now()
        t0 = time.perf_counter()
        runs = self.ticking.run(now)
        runs += self.slow.poll(now, resting=self.engine.at_rest)
        duration = time.perf_counter() - t0
        dropped = self.slow.take_dropped()
        effects = self.engine.step(runs, now, tick_duration=duration, events=[Dropped(dropped)] if dropped else [])
        self._apply(effects)
        self.metrics.tick_duration.observe(duration)
        self._persist(now)
        self._keep_memcg()
        return effects.interval

    def _keep_memcg(self) -> None:
        """Keep the memcg probe's registrations on the cgroup domains tracked
        now and, while every domain is at rest, its usage thresholds a step
        above each v1 cgroup's usage and the host's, so that the kernel
        wakes us when one moves; the engine rests fully only on the domains
        so armed.  The registrations are made in the memcg thread: a tick
        asks for them when what it wants changed, and the armed domains are
        the engine's once they stand."""
        memcg = next((p for p in self.probes or () if isinstance(p, MemcgProbe)), None)
        cgroups = self._cgroup_source()
        if not self.engine.at_rest:
            self.engine.armed = frozenset()
        if memcg is None:
            return
        if cgroups is not None and cgroups.hierarchy.dirs is not self._memcg_dirs:
            errors = memcg.watch_dirs(cgroups.hierarchy.dirs)   # inotify only: quick
            if errors:
                self.log.warning("cgroup directories not watched", count=len(errors), first=errors[0])
            self._memcg_dirs = cgroups.hierarchy.dirs
        thresholds, host = None, None
        if self.engine.at_rest:
            sampling = self.config.sampling
            thresholds = {name: wake_threshold(s.used, s.limit, sampling)
                          for name, state in self.engine.domains.items()
                          if (s := state.sample) is not None and s.kind == "cgroup" and s.limit}
            host = self._host_threshold()
        wanted = (cgroups.hierarchy.domains if cgroups is not None else None, thresholds, host)
        old = self._memcg_wanted
        if old is not None and old[0] is wanted[0] and old[1:] == wanted[1:] and memcg.opened == self._memcg_opened:
            return
        self._memcg_wanted, self._memcg_opened = wanted, memcg.opened
        if self._memcg_job is None:
            self._memcg_submit(memcg)

    def _memcg_submit(self, memcg: MemcgProbe) -> None:
        loop = asyncio.get_running_loop()
        self._memcg_job = self._memcg_pool.submit(self._memcg_work, memcg)
        self._memcg_job.add_done_callback(lambda f: self._memcg_done(f, loop))

    def _memcg_work(self, memcg: MemcgProbe) -> tuple:
        """In the memcg thread: make the newest registrations asked for."""
        wanted = self._memcg_wanted
        domains, thresholds, host = wanted
        errors = []
        if domains is not None and self._memcg_tracked != (memcg.opened, domains):
            tracked = (memcg.opened, domains)
            errors += [("memcg notification not registered", e) for e in memcg.track(domains)]
            self._memcg_tracked = tracked
        armed = None
        if thresholds is not None:
            armed, arm_errors = memcg.arm(thresholds, host)
            errors += [("memcg usage threshold not registered", e) for e in arm_errors]
        return wanted, armed, errors

    def _memcg_done(self, future: concurrent.futures.Future, loop: asyncio.AbstractEventLoop) -> None:
        """In the memcg thread: hand the result, or its failure, to the loop."""
        if future.cancelled():
            return
        _to_loop(loop, self._memcg_made, future)

    def _memcg_made(self, future: concurrent.futures.Future) -> None:
        """On the loop: registrations made; the engine rests on the domains
        whose threshold stands, and what was asked for meanwhile is made next."""
        self._memcg_job = None
        if future.exception() is not None:
            if (error := repr(future.exception())) not in self._arm_errors:
                self._arm_errors.add(error)
                self.log.error("memcg registrations failed", error=error)
            self._memcg_wanted = None       # asked for again at the next tick
            return
        wanted, armed, errors = future.result()
        for msg, error in errors:
            if error not in self._arm_errors:   # said once, not at every try
                self._arm_errors.add(error)
                self.log.warning(msg, error=error)
        if armed is not None and self.engine.at_rest:
            self.engine.armed = armed
            self.engine.looks = {name: v for name, v in self.engine.looks.items() if name not in armed}
        memcg = next((p for p in self.probes or () if isinstance(p, MemcgProbe)), None)
        if memcg is not None and self._memcg_wanted is not wanted:
            self._memcg_submit(memcg)

    def _host_threshold(self) -> tuple[str, str, int] | None:
        """(the host domain, the v1 memory hierarchy's root, the usage at
        which the kernel should wake us) while the host is at rest, or None.
        The root cgroup's usage holds every process' memory and the page
        cache: growth takes free memory first and raises it, so a threshold
        half a step to a step and a half above it tells of a step of growth
        (the grid keeps it from being registered again at every tick, the
        half step from waking us as the page cache hovers at it) -- as long
        as a step of free memory is left when it is crossed.  On a host whose
        page cache has taken the free memory, growth takes page cache and
        the usage does not move: no threshold, the daemon looks at
        /proc/meminfo between ticks instead."""
        cgroups = self._cgroup_source()
        root = cgroups.mounts.v1_memory if cgroups is not None and cgroups.mounts is not None else None
        s = next((st.sample for st in self.engine.domains.values()
                  if st.sample is not None and st.sample.kind in LOOKED and st.sample.limit), None)
        if root is None or s is None:
            return None
        step = max(1, int(self.config.sampling.rest_step * s.limit))
        try:
            with open(os.path.join(root, "memory.usage_in_bytes"), "rb") as f:
                usage = int(f.read())
        except (OSError, ValueError):
            return None
        threshold = ((usage + step // 2) // step + 1) * step
        return (s.domain, root, threshold) if threshold - usage + step <= s.limit - s.used else None

    def on_probe(self, name: str, reading: ProbeReading | None, probe_state: str,
                 reason: str | None, now: Instant) -> None:
        """A probe read something (or changed state): fold it in at once."""
        self._apply(self.engine.step([], now, events=[ProbeRun(name, probe_state, reason, reading)]))
        if reading is None:
            return
        cgroups = self._cgroup_source()
        if reading.processes and cgroups is not None and cgroups.notice({p.cgroup for p in reading.processes}):
            self.wake.set()   # a process started in a cgroup made since the last walk
        if reading.kills:
            self.log.log("debug", "kill folded in", probe=name,
                         at=round(time.clock_gettime(time.CLOCK_MONOTONIC), 4))
        if reading.created and cgroups is not None:
            cgroups.changed()            # walked at the next tick
            if self.engine.at_rest:      # which comes now; awake, within the interval
                self.wake.set()
            self.engine.stir(now.mono)   # and a cgroup just made gets its limit a moment later
        if reading.wake or (reading.moved and self.engine.at_rest):
            self.wake.set()

    def _cgroup_source(self) -> CgroupSource | None:
        return next((s for s in self.tick_sources if isinstance(s, CgroupSource)), None)

    def _look_up(self, wanted: LookupWanted) -> list:
        """In the lookup thread, what the engine asked to know of a victim:
        its /proc entry (a dying process's cmdline takes its mmap lock: off
        the loop), the limits along its cgroup's path, read now."""
        events = []
        cgroup = wanted.cgroup
        cgroups = self._cgroup_source()
        if wanted.describe and (info := describe(self.roots, wanted.pid)) is not None:
            events.append(info)
            if cgroup is None and info.cgroup is not None and cgroups is not None \
                    and cgroups.hierarchy.domain_of(info.cgroup, "host") is None:
                cgroup = info.cgroup
        if cgroup is not None and cgroups is not None and (binding := cgroups.resolve(cgroup)) is not None:
            events.append(binding)
        return events

    def _looked_up(self, events: list) -> None:
        self._apply(self.engine.step([], self.clock.now(), events=events))
        cgroups = self._cgroup_source()
        if cgroups is not None and cgroups.notice({e.path for e in events if isinstance(e, Binding)}):
            self.wake.set()

    def _apply(self, effects) -> None:
        """Carry out what a step asked for."""
        self.writer.submit(effects.incidents)
        if effects.snapshot is not None:
            self.snapshot = effects.snapshot
        self._publish(effects)
        for msg, fields in effects.log:
            fields = dict(fields)
            self.log.log(fields.pop("level", "info"), msg, **fields)
        if effects.lookups:
            loop = asyncio.get_running_loop()
            for wanted in effects.lookups:
                future = self._lookups.submit(self._look_up, wanted)
                future.add_done_callback(lambda f: self._lookup_done(f, loop))
        for action in effects.actions:
            if action.kind == "notify" and not action.dry_run:
                self._notify(action)
                continue
            loop = asyncio.get_running_loop()
            if action.kind in ("freeze", "thaw"):
                future = self._freezer.submit(self._freeze_or_thaw, action)
            elif action.kind == "kill":
                future = self._killer.submit(carry_out, self.roots, action, self.clock.now().mono)
            else:
                future = self._actuator.submit(carry_out, self.roots, action, self.clock.now().mono)
            future.add_done_callback(lambda f, a=action: self._action_finished(f, a, loop))

    def _freeze_or_thaw(self, action: ActionWanted) -> ActionDone:
        """In the freezer thread: the process to freeze chosen by what it
        holds now, written to the frozen list before it is stopped, and
        taken off it once thawed (see actions/freeze.py); the guard started
        at the first freeze."""
        now = self.clock.now().mono
        if action.kind == "thaw":
            (pid, start), = action.targets
            item = self.frozen.items.get(pid)
            result = thaw(self.roots, pid, start, item.how if item else "signal")
            self.frozen.remove(pid)
            return ActionDone(action.id, result, ({"pid": pid, "result": result},), now)
        chosen, why, seen = choose_to_freeze(self.roots, action.targets, action.choice)
        if chosen is None:
            return ActionDone(action.id, "no_victim", ({"why": why, "seen": seen},), now)
        pid, start = chosen
        if action.dry_run:
            return ActionDone(action.id, "dry_run", ({"pid": pid, "start": start, "result": "dry_run", "why": why,
                                                      "seen": seen},), now)
        since = boottime()
        how = own_freezer(self.roots, pid) or "signal"
        self.frozen.add(Frozen(pid, start, action.choice["jobs"].get(pid, action.job), action.domain, action.rule,
                               since, since + self.config.actions.max_freeze, how))
        self.guard.ensure()
        result = freeze(self.roots, pid, start, how)
        if result != "sent":
            self.frozen.remove(pid)
        return ActionDone(action.id, result, ({"pid": pid, "start": start, "result": result, "why": why,
                                               "how": how, "seen": seen},), self.clock.now().mono)

    def _thaw_all(self, why: str) -> None:
        """Thaw every process in the frozen list (a predecessor's, at start;
        ours, at stop) and empty it."""
        for item, result in thaw_all(self.roots, list(self.frozen.items.values())):
            self.log.info("thawed", pid=item.pid, job=item.job, domain=item.domain, why=why, result=result)
        self.frozen.clear()

    def _protect_self(self) -> None:
        """oom_score_adj -1000: the kernel's OOM killer never takes the
        guard.  Lowering it needs CAP_SYS_RESOURCE (the unit's
        OOMScoreAdjust=-1000 does it for us); without, it is said once and
        shown in status, and the daemon goes on."""
        path = "/proc/self/oom_score_adj"      # this process's own, whatever tree roots reads the host from
        try:
            with open(path, "w") as f:
                f.write("-1000")
        except OSError as e:
            self.log.warning("not protected from the OOM killer", error=e.strerror,
                             hint="run it under memguard.service (OOMScoreAdjust=-1000) or with CAP_SYS_RESOURCE")
        try:
            with open(path) as f:
                self.protection["oom_score_adj"] = int(f.read())
        except (OSError, ValueError):
            pass

    def _lock_memory(self) -> None:
        """mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT): the guard's pages
        stay in memory when the host thrashes, without locking the address
        space it reserves but never touches (thread stacks).  A refusal
        (RLIMIT_MEMLOCK; the unit raises it) is logged, and the daemon goes on."""
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.mlockall(1 | 2 | 4) != 0:
            err = ctypes.get_errno()
            self.log.warning("memory not locked", error=os.strerror(err),
                             hint="raise RLIMIT_MEMLOCK (LimitMEMLOCK=infinity in the unit)")
        else:
            self.protection["memory_locked"] = True

    def _notify_alive(self) -> None:
        """WATCHDOG=1 every tick, and STATUS (systemctl status' line) when it
        changes: the domain nearest its OOM, or how many are watched."""
        snap = self.snapshot
        near = min(((d.prediction.tto, d.name) for d in snap.domains
                    if d.prediction is not None and d.prediction.tto is not None), default=None)
        status = (f"{near[1]} out of memory in {near[0]:.0f}s" if near is not None
                  else f"watching {len(snap.domains)} domains, none growing toward its limit")
        if status != self._status_line:
            self._status_line = status
            self.notifier.notify(f"WATCHDOG=1\nSTATUS={status}")
        else:
            self.notifier.notify("WATCHDOG=1")

    def _notify(self, action: ActionWanted) -> None:
        """Push a notification to the job's connection (memguard.client), on the loop."""
        writer = self.channels.get(action.channel)
        if writer is None or writer.is_closing():
            result = "gone"
        else:
            writer.write(json.dumps({"event": action.event, "rule": action.rule, "severity": action.severity,
                                     "domain": action.domain, "job": action.job,
                                     **action.context}).encode() + b"\n")
            result = "sent"
        done = ActionDone(action.id, result, ({"channel": action.channel, "result": result},),
                          self.clock.now().mono)
        self._audit(action, done)
        self._finish(action, done)

    def _action_finished(self, future: concurrent.futures.Future, action: ActionWanted,
                         loop: asyncio.AbstractEventLoop) -> None:
        """In the actuator thread: audit the action, hand its result to the loop."""
        if future.cancelled():
            return
        done = future.result() if future.exception() is None else \
            ActionDone(action.id, "failed", ({"error": repr(future.exception())},), self.clock.now().mono)
        self._audit(action, done)
        _to_loop(loop, lambda: self._finish(action, done))

    def _finish(self, action: ActionWanted, done: ActionDone) -> None:
        """On the loop: an action ended; its watchers hear of it."""
        self.watchers.publish({"type": "action", "time": time.time(), "kind": action.kind, "result": done.result,
                               "rule": action.rule, "severity": action.severity, "domain": action.domain,
                               "job": action.job, "dry_run": action.dry_run,
                               "targets": [{k: t[k] for k in ("pid", "result") if k in t} for t in done.details]},
                              {action.uid} if action.uid is not None else set())
        self._apply(self.engine.step([], self.clock.now(), events=[done]))

    def _publish(self, effects) -> None:
        """Rule transitions and incidents first written, to the watchers."""
        if not self.watchers.peers:
            return
        views = {d.name: d for d in self.snapshot.domains} if self.snapshot is not None else {}
        for tr in effects.transitions:
            view = views.get(tr.domain)
            p = view.prediction if view is not None else None
            self.watchers.publish({
                "type": "rule", "time": time.time(), "event": "cleared" if tr.kind == "clear" else tr.severity,
                "transition": tr.kind, "rule": tr.rule, "domain": tr.domain, "job": tr.job,
                "tto_seconds": None if p is None or p.tto is None else round(p.tto, 1),
                "usage_ratio": None if view is None else view.sample.usage_ratio}, self._concerned(tr.domain, tr.job))
        for write in effects.incidents:
            doc = getattr(write, "document", None)
            if doc is None or self._published.get(write.id) == doc.get("state"):
                continue
            # Pushed when first written (open: the kill, at once) and when
            # sealed (what the probes added since: the domain of a cgroup made
            # a moment before, the victim's owner).
            self._published[write.id] = doc.get("state")
            self._published.move_to_end(write.id)
            while len(self._published) > 1024:
                self._published.popitem(last=False)
            self.watchers.publish({"type": "incident", "time": time.time(), "id": write.id, "kind": doc.get("kind"),
                                   "state": doc.get("state"), "domain": doc.get("domain"),
                                   "headline": doc.get("headline")},
                                  {v["uid"] for v in doc.get("victims", ()) if v.get("uid") is not None})

    def _concerned(self, domain: str, job: str | None) -> set[int] | None:
        """Who may hear of *domain* (and *job*): the job's owner; for a
        cgroup or GPU, the users with processes there; for the host or WSL,
        everyone (None)."""
        jobs = self.engine.jobs.jobs
        if job is not None:
            return {jobs[job].uid} if job in jobs and jobs[job].uid is not None else set()
        state = self.engine.domains.get(domain)
        if state is None or state.kind in ("host", "wsl"):
            return None
        uids = {p.uid for p in self.engine.process_table.values() if p.domain == domain and p.uid is not None}
        uids |= {j.uid for j in jobs.values() if j.uid is not None and domain in self.engine.domains_of(j)}
        return uids | self._owners_in_cgroup(domain)

    def _owners_in_cgroup(self, domain: str, most: int = 256) -> set[int]:
        """The owners of (at most *most* of) the processes in *domain*'s
        cgroup and below, by a stat of each /proc entry: a process started
        a moment ago is not in the process table yet.  Transitions are
        rare; this runs for those only."""
        cgroups = self._cgroup_source()
        hierarchy = getattr(cgroups, "hierarchy", None)
        fs_path = next((d.fs_path for d in (hierarchy.domains if hierarchy else ()) if d.name == domain), None)
        owners: set[int] = set()
        if fs_path is None:
            return owners
        seen = 0
        for directory, _dirs, _files in os.walk(fs_path):
            try:
                with open(os.path.join(directory, "cgroup.procs")) as f:
                    pids = f.read().split()
            except OSError:
                continue
            for pid in pids[:most - seen]:
                try:
                    owners.add(os.stat(self.roots.proc_path(pid)).st_uid)
                except OSError:
                    pass
            seen += len(pids)
            if seen >= most:
                break
        return owners

    def _watch(self, params: dict, peer) -> dict:
        """Keep the connection: warnings, actions and incidents follow as
        JSON lines, those the peer may see (api/watch.py)."""
        if not self.watchers.add(peer):
            raise ProtocolError(NOT_PERMITTED, "too many watchers")
        return {"watching": True,
                "sees": "everything" if self.watchers.sees_all(peer) else f"what concerns uid {peer.uid}"}

    def _audit(self, action: ActionWanted, done: ActionDone) -> None:
        """One JSON line per action in <state_dir>/actions.log (0600)."""
        line = json.dumps({"time": time.time(), "id": action.id, "kind": action.kind, "rule": action.rule,
                           "severity": action.severity, "domain": action.domain, "job": action.job,
                           "uid": action.uid, "signal": action.signal, "command": action.command,
                           "dry_run": action.dry_run,
                           "result": done.result, "targets": list(done.details), **action.context})
        try:
            fd = os.open(self.audit_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, line.encode() + b"\n")
            finally:
                os.close(fd)
        except OSError as e:
            self.log.warning("action not audited", error=str(e))

    def _lookup_done(self, future: concurrent.futures.Future, loop: asyncio.AbstractEventLoop) -> None:
        """In the lookup thread: hand the result to the loop (or log the bug)."""
        if future.cancelled():
            return
        if future.exception() is not None:
            self.log.error("lookup failed", error=repr(future.exception()))
        elif future.result():
            _to_loop(loop, self._looked_up, future.result())

    # -- rules ------------------------------------------------------------------

    def reload_rules(self, initial: bool = False) -> dict:
        """Load the rule files again; a file with an error leaves the rules in
        force as they were, and the error is shown in status.  At start-up an
        error raises RuleError (the daemon does not start on broken rules)."""
        try:
            loaded = load_rule_set(self.config)
        except (RuleError, OSError) as e:
            if initial:
                raise
            self._apply(self.engine.step([], self.clock.now(), events=[RulesRejected(str(e))]))
            self.log.error("rules not reloaded; the last good rules stay in force", error=str(e))
            in_force = self.snapshot.rules_info.get("count", 0) if self.snapshot else 0
            return {"reloaded": False, "error": str(e), "rules": in_force}
        self._apply(self.engine.step([], self.clock.now(), events=[loaded]))
        self.log.info("rules loaded", count=len(loaded.rules), files=",".join(loaded.files) or "none")
        return {"reloaded": True, "error": None, "rules": len(loaded.rules)}

    # -- state that survives a restart ----------------------------------------------

    def _persist(self, now: Instant) -> None:
        kmsg = next((p for p in self.probes or () if p.name == "kmsg"), None)
        seq = getattr(kmsg, "last_seq", None)
        try:
            if seq is not None and seq != self._saved_seq:
                state.save(self.cursor_path, {"boot_id": self.boot_id, "seq": seq})
                self._saved_seq = seq
            near = self._near_limit()
            # every 5 s while a domain is near its limit (what an unclean stop
            # would be reported with), else when that changes or once a minute
            if now.mono - self._heartbeat_at >= (HEARTBEAT_INTERVAL if near else HEARTBEAT_AT_REST) \
                    or bool(near) != self._heartbeat_near:
                self._heartbeat(now, clean=False)
        except OSError as e:
            self.log.warning("state not saved", error=str(e))

    def _near_limit(self) -> list[dict]:
        return [{"domain": d.name, "usage_ratio": d.sample.usage_ratio, "limit_bytes": d.sample.limit,
                 "working_set_bytes": d.sample.working_set}
                for d in (self.snapshot.domains if self.snapshot else ())
                if d.sample.usage_ratio is not None and d.sample.usage_ratio >= self.config.sampling.fast_above]

    def _heartbeat(self, now: Instant, clean: bool) -> None:
        near = self._near_limit()
        state.save(self.heartbeat_path, {"boot_id": self.boot_id, "wall": now.wall, "pid": os.getpid(),
                                         "clean": clean, "near_limit": near})
        self._heartbeat_at = now.mono
        self._heartbeat_near = bool(near)

    def _resume_seq(self) -> int | None:
        """The kmsg seq to resume after: only in the same boot."""
        cursor = state.load(self.cursor_path)
        if cursor and cursor.get("boot_id") == self.boot_id and isinstance(cursor.get("seq"), int):
            return cursor["seq"]
        if cursor:
            self.log.info("kmsg cursor from another boot; starting at the end of the log")
        return None

    def _check_unclean_stop(self, now: Instant) -> None:
        beat = state.load(self.heartbeat_path)
        incident = unclean_stop_incident(beat, self.boot_id, now)
        if incident is not None:
            self.log.warning("the host stopped while a domain was near its limit",
                             id=incident["id"], domains=",".join(d["domain"] for d in incident["near_limit"]))
            self.store.write(incident["id"], incident)

    # -- the loop --------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop)
        loop.add_signal_handler(signal.SIGHUP, self.reload_rules)
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        removed = self.store.recover()
        if removed:
            self.log.info("removed partial incident files", count=removed)
        self._check_unclean_stop(self.clock.now())
        self._thaw_all("left frozen by a previous run")
        self._protect_self()
        if self.config.lock_memory:
            self._lock_memory()
        control = ControlServer(self.socket_path, self.log, self.config.socket_mode)
        control.route("version", lambda params, peer: {"version": __version__, "protocol": 1})
        control.route("status", self._status)
        control.route("jobs", self._jobs)
        control.route("watch", self._watch)
        control.route("register", self._register)
        control.route("unregister", self._unregister)
        control.route("gpu_oom", self._gpu_oom)
        control.route("allocator", self._allocator)
        control.route("history", self._history)
        control.route("incidents", self._incidents)
        control.route("incident", self._incident)
        control.route("reload", lambda params, peer: self.reload_rules(), privileged=True)
        await control.start()
        metrics_server, metrics_at = None, "off"
        passed = listen_sockets()
        if passed or self.config.metrics.listen:
            metrics_server = MetricsServer(self.config.metrics.listen, self._metrics_body,
                                           passed[0] if passed else None, self.web)
            await metrics_server.start()
            metrics_at = f"{metrics_server.host}:{metrics_server.bound_port}"
            host = f"[{metrics_server.host}]" if ":" in metrics_server.host else metrics_server.host
            self.metrics_url = f"{metrics_server.scheme}://{host}:{metrics_server.bound_port}/metrics"
        self.log.info("memguardd started", version=__version__, socket=self.socket_path,
                      metrics=metrics_at, proc=self.roots.proc, sys=self.roots.sys)
        self.slow.poll(self.clock.now())
        await self.slow.settle(self.config.wsl.read_timeout)
        self.tick()   # domains and processes are known before the first kill is read
        self.probes = build_probes(self.config, self.roots, self._resume_seq())
        host = ProbeHost(self.probes, self.clock, self.on_probe)
        host.start(loop)
        interval = self.tick()
        self.notifier.notify(f"READY=1\nSTATUS=watching {len(self.snapshot.domains)} domains")
        watchdog = self.notifier.watchdog_interval or math.inf
        tick_at = time.monotonic() + interval
        look_at, ping_at = self._next_look(tick_at), time.monotonic() + watchdog
        try:
            while not self.stopping.is_set():
                # until the next tick, look or watchdog ping, or until a probe or a signal wakes us
                woke = await self._sleep(min(tick_at, look_at, ping_at) - time.monotonic())
                if woke:
                    await asyncio.sleep(MIN_TICK_SPACING)  # coalesce a burst of wake-ups
                self.wake.clear()
                if self.stopping.is_set():
                    break
                now = time.monotonic()
                if woke or now >= tick_at or (now >= look_at and (look_at := self._look(tick_at)) is None):
                    interval = self.tick()
                    self._notify_alive()
                    tick_at, ping_at = time.monotonic() + interval, time.monotonic() + watchdog
                    look_at = self._next_look(tick_at)
                elif now >= ping_at:      # at rest: alive, with no tick due
                    self.notifier.notify("WATCHDOG=1")
                    ping_at = now + watchdog
        finally:
            self.notifier.notify("STOPPING=1")
            self._memcg_pool.shutdown(wait=False, cancel_futures=True)   # what it makes now, close() ends
            host.stop()
            await control.stop()
            if metrics_server is not None:
                await metrics_server.stop()
            self.slow.shutdown()
            self.ticking.shutdown()
            self._lookups.shutdown(wait=False, cancel_futures=True)
            self._actuator.shutdown(wait=False, cancel_futures=True)
            self._killer.shutdown(wait=False, cancel_futures=True)
            self._freezer.shutdown(wait=True, cancel_futures=True)
            self._thaw_all("memguardd stopping")
            self.guard.close()
            self.writer.shutdown()
            self._persist(self.clock.now())
            self._heartbeat(self.clock.now(), clean=True)
            self.log.info("memguardd stopped")

    async def _sleep(self, seconds: float) -> bool:
        """Sleep *seconds* or until ``wake`` is set; whether it was.  A timer
        that sets it, not asyncio.wait_for, which makes a task and cancels
        it at every timeout: at rest, most of what a wake-up cost."""
        timed_out = []

        def time_out() -> None:
            timed_out.append(True)
            self.wake.set()
        timer = asyncio.get_running_loop().call_later(max(0.0, seconds), time_out)
        await self.wake.wait()
        timer.cancel()
        return not timed_out

    def _host_sources(self) -> list[HostSource]:
        return [s for s in self.tick_sources if isinstance(s, HostSource) and s.domain in self.engine.looks]

    def _next_look(self, tick_at: float) -> float:
        """When to look at the host between ticks at rest: as long after the
        tick as growing at ``rest_growth`` would take its working set to
        ``fast_above`` (Engine._rest), never after the next tick."""
        sampling, now = self.config.sampling, time.monotonic()
        return min([tick_at, *(now + max(sampling.interval,
                                         (sampling.fast_above * limit - held) / sampling.rest_growth)
                               for held, limit in self.engine.looks.values())])

    def _look(self, tick_at: float) -> float | None:
        """At rest, between ticks: the host's working set from /proc/meminfo
        alone.  None when it grew a ``rest_step`` since the tick (or cannot
        be read): tick now.  Else when to look next."""
        sampling, now, look_at = self.config.sampling, time.monotonic(), tick_at
        for source in self._host_sources():
            held, limit = self.engine.looks[source.domain]
            try:
                working_set = source.look()
            except (OSError, ValueError):
                return None                 # the tick says what went wrong
            if working_set - held >= sampling.rest_step * limit:
                return None
            look_at = min(look_at, now + max(sampling.interval, (sampling.fast_above * limit - working_set)
                                              / sampling.rest_growth))
        return look_at

    def _metrics_body(self) -> bytes:
        """The rendering of the latest snapshot, made at the first scrape
        after it was published: at most once per tick, and not at all for
        the ticks nobody scrapes (200 domains take ~15 ms to render)."""
        if self.snapshot is not None and self._rendered is not self.snapshot:
            self.metrics.render(self.snapshot)
            self._rendered = self.snapshot
        return self.metrics.rendered

    def _stop(self) -> None:
        self.stopping.set()
        self.wake.set()

    # -- control requests ----------------------------------------------------------------

    def _status(self, params: dict, peer) -> dict:
        if self.snapshot is None:
            raise ProtocolError(NOT_READY, "the first tick has not finished yet")
        doc = {**self.snapshot.to_json(), "metrics": {"url": self.metrics_url}, "protection": self.protection}
        if doc["rest"]["at_rest"]:   # as armed after the tick, not as it began
            doc["rest"].update(armed=sorted(self.engine.armed), looked_at=sorted(self.engine.looks))
        if self.writer.last_error is not None:
            doc["healthy"] = False
            doc["degraded"] = [*doc["degraded"], f"incidents: {len(self.writer.unwritten)} not written yet, "
                                                  f"tried again each tick ({self.writer.last_error})"]
        return doc

    def _jobs(self, params: dict, peer) -> dict:
        if self.snapshot is None:
            raise ProtocolError(NOT_READY, "the first tick has not finished yet")
        doc = self.snapshot.to_json()
        return {"schema_version": 1, "jobs": doc["jobs"], "rejected": doc["jobs_rejected"]}

    async def _register(self, params: dict, peer) -> dict:
        """Register the caller (or, with ``pid``, a process of its own user's)
        as a job; with ``notify`` the connection stays open and hears the
        job's warnings as JSON lines (memguard.client)."""
        pid = params.get("pid", peer.pid)
        if not isinstance(pid, int) or pid <= 0:
            raise ProtocolError(BAD_REQUEST, "params.pid must be a positive integer")
        # off the loop: reading another process's cmdline takes its mmap lock
        info = await asyncio.to_thread(describe, self.roots, pid)
        if info is None:
            raise ProtocolError(NOT_FOUND, f"no process {pid}")
        if pid != peer.pid and not peer.privileged and info.uid != peer.uid:
            raise ProtocolError(NOT_PERMITTED, f"process {pid} is not yours (uid {info.uid}); you are uid {peer.uid}")
        value = params.get("registration")
        if not isinstance(value, str):
            raise ProtocolError(BAD_REQUEST, "params.registration must be a MEMGUARD_JOB value (NAME[,warning=SIG]...)")
        try:
            spec = parse_job(value)
        except JobSpecError as e:
            raise ProtocolError(BAD_REQUEST, str(e)) from None
        channel = None
        if params.get("notify") and peer.writer is not None:
            self._channel_seq += 1
            channel = self._channel_seq
            self.channels[channel] = peer.writer
            peer.on_close.append(lambda c=channel: self._channel_closed(c))
        effects = self.engine.step([], self.clock.now(), events=[JobRegistered(
            pid, info.start_time, info.uid, spec, channel)])
        self._apply(effects)
        job = effects.registered[0]
        if job is None:
            raise ProtocolError(NOT_PERMITTED, "too many jobs registered")
        return {"job": job, "pid": pid, "notify": channel is not None}

    def _gpu_oom(self, params: dict, peer) -> dict:
        """A process reports its CUDA out-of-memory error (memguard.client):
        an incident of kind gpu_oom.  Only its own process, or one of its
        user's; the figures are bounded."""
        pid = params.get("pid", peer.pid)
        if not isinstance(pid, int) or pid <= 0:
            raise ProtocolError(BAD_REQUEST, "params.pid must be a positive integer")
        if pid != peer.pid and not peer.privileged:
            raise ProtocolError(NOT_PERMITTED, f"only root may report for another process (pid {pid})")
        device, stats = _allocator_params(params)
        message = params.get("message", "")
        if not isinstance(message, str):
            raise ProtocolError(BAD_REQUEST, "params.message must be text")
        summary = params.get("summary")
        if summary is not None and not isinstance(summary, str):
            raise ProtocolError(BAD_REQUEST, "params.summary must be text (torch.cuda.memory_summary)")
        effects = self.engine.step([], self.clock.now(), events=[GpuOomReported(
            pid, peer.uid, device, message, stats, summary, _snapshot_param(params.get("snapshot")))])
        self._apply(effects)
        return {"incident": effects.incidents[-1].id}

    def _history(self, params: dict, peer) -> dict:
        """The last ``seconds`` of samples of each domain (``domains``: a
        list of names, or all), for memguardctl profile."""
        seconds, names = params.get("seconds", 60), params.get("domains")
        window = self.config.recorder.fine_window
        if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not 0 < seconds <= window:
            raise ProtocolError(BAD_REQUEST, f"params.seconds must be a number of seconds up to {window:g} "
                                             "(recorder.fine_window)")
        if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
            raise ProtocolError(BAD_REQUEST, "params.domains must be a list of domain names")
        found = self.engine.history(names, float(seconds), self.clock.now().mono)
        missing = sorted(set(names or ()) - set(found))
        if missing:
            raise ProtocolError(NOT_FOUND, f"no domain {', '.join(missing)}; see memguardctl status")
        return {"seconds": seconds, "domains": found}

    def _allocator(self, params: dict, peer) -> dict:
        """A process sends its CUDA allocator's figures (memguard.client):
        kept for its job, if it belongs to one."""
        device, stats = _allocator_params(params)
        self._apply(self.engine.step([], self.clock.now(), events=[AllocatorReported(peer.pid, device, stats)]))
        return {"job": self.engine.jobs.job_of(peer.pid)}

    def _channel_closed(self, channel: int) -> None:
        self.channels.pop(channel, None)
        self._apply(self.engine.step([], self.clock.now(), events=[ChannelClosed(channel)]))

    def _unregister(self, params: dict, peer) -> dict:
        job_id = params.get("job")
        doc = self.snapshot.to_json() if self.snapshot else {"jobs": []}
        job = next((j for j in doc["jobs"] if j["id"] == job_id), None)
        if job is None:
            raise ProtocolError(NOT_FOUND, f"no job {job_id!r} (memguardctl jobs lists them)")
        if not peer.privileged and job["uid"] != peer.uid:
            raise ProtocolError(NOT_PERMITTED, f"job {job_id} is not yours (uid {job['uid']}); you are uid {peer.uid}")
        self._apply(self.engine.step([], self.clock.now(), events=[JobUnregistered(job_id)]))
        return {"job": job_id, "unregistered": True}

    def _may_read(self, peer, uids: frozenset) -> bool:
        """Whether *peer* may read an incident whose victims are *uids*."""
        return not self.private_incidents or peer.uid in uids or self.watchers.sees_all(peer)

    async def _incidents(self, params: dict, peer) -> dict:
        listing = await asyncio.to_thread(self.store.list)  # reads every file: off the loop
        shown = [i for i in listing.incidents if self._may_read(peer, i.uids)]
        return {"schema_version": 1,
                "incidents": [{"id": i.id, "size_bytes": i.size_bytes, "fields": i.fields} for i in shown],
                "corrupt": list(listing.corrupt) if self.watchers.sees_all(peer) else [],
                "hidden": len(listing.incidents) - len(shown)}

    async def _incident(self, params: dict, peer) -> dict:
        ident = params.get("id")
        if not isinstance(ident, str):
            raise ProtocolError(BAD_REQUEST, "params.id must be a string")
        try:
            doc = await asyncio.to_thread(self.store.load, ident)
        except FileNotFoundError:
            raise ProtocolError(NOT_FOUND, f"no incident {ident!r} (memguardctl incidents lists them)") from None
        except ValueError as e:  # a bad id, or a file that does not parse
            raise ProtocolError(BAD_REQUEST, str(e)) from None
        uids = frozenset(v.get("uid") for v in doc.get("victims") or () if isinstance(v, dict))
        if not self._may_read(peer, uids):
            raise ProtocolError(NOT_PERMITTED, f"incident {ident} is about another user's processes "
                                               "(incidents are private on this host: incidents.private)")
        return doc


def _to_loop(loop: asyncio.AbstractEventLoop, callback, *args) -> None:
    """From a worker thread, run *callback* on the daemon's loop (not at all
    once the loop has closed: the daemon is stopping)."""
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:
        pass


def load_rule_set(config: Config) -> RulesLoaded:
    """The config's rule files, loaded and checked, as the engine's input;
    raises RuleError or OSError."""
    files = config.rule_files()
    if os.geteuid() == 0:
        for path in files:
            if (why := untrusted(path)) is not None:
                raise RuleError(path, None, "file", why)
    return RulesLoaded(tuple(load_rules(files)), tuple(files), time.time())


def once(config: Config, roots: Roots) -> Snapshot:
    """One full snapshot: every source once, the slow ones too (each bounded
    by the WSL read timeout), and the rules evaluated on it (only a rule
    without a ``for`` can fire on one sample).  Raises RuleError or OSError
    on a rule file, as the daemon's start does."""
    clock = SystemClock()
    now = clock.now()
    tick_sources, slow = build_sources(config, roots)
    runs = [run_source(s, now) for s in tick_sources]
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=len(slow))
    futures = [(s.name, pool.submit(run_source, s, now)) for s in slow]
    for name, future in futures:
        try:
            runs.append(future.result(timeout=config.wsl.read_timeout))
        except concurrent.futures.TimeoutError:
            runs.append(SourceRun(name, error=f"timed out after {config.wsl.read_timeout:g}s"))
    pool.shutdown(wait=False, cancel_futures=True)  # a read stuck on the Windows drive is left behind
    engine = Engine(config, now, __version__)
    engine.step([], now, events=[load_rule_set(config)])
    return engine.step(runs, clock.now()).snapshot


def parser() -> argparse.ArgumentParser:
    """The command line (also what man pages and shell completion are
    generated from: cli/docgen.py)."""
    p = argparse.ArgumentParser(prog="memguardd", description="Predicts and explains out-of-memory kills.")
    p.add_argument("--config", "-c", help="YAML config file (default: built-in defaults)")
    p.add_argument("--proc-root", help="where procfs is (default /proc; a fixture tree for tests)")
    p.add_argument("--sys-root", help="where sysfs is (default /sys)")
    p.add_argument("--rootfs", help="root of other paths such as WSL's /mnt/c (default /)")
    p.add_argument("--socket", help="control socket path")
    p.add_argument("--state-dir", help="state directory")
    p.add_argument("--socket-mode", help='the control socket\'s mode, e.g. 0660 (default 0666; config socket_mode)')
    p.add_argument("--lock-memory", action="store_true", default=None,
                   help="mlockall: never page the daemon out (config lock_memory)")
    p.add_argument("--metrics-listen", help='host:port for /metrics ("" turns it off)')
    p.add_argument("--no-probes", action="store_true", help="watch no kernel events (fixture trees)")
    p.add_argument("--once", action="store_true", help="take one snapshot, print it, exit")
    p.add_argument("--json", action="store_true", help="with --once: print JSON (the default)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--version", action="version", version=f"memguardd {__version__}")
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return parser().parse_args(argv)


def configure(args: argparse.Namespace) -> tuple[Config, Roots]:
    """The config file with the flags laid over it.  Raises ConfigError."""
    if args.config and os.geteuid() == 0 and (why := untrusted(args.config)) is not None:
        raise ConfigError(args.config, None, "", why)
    config = load_config(args.config) if args.config else Config()
    roots_cfg = dataclasses.replace(config.roots, proc=args.proc_root or config.roots.proc,
                                    sys=args.sys_root or config.roots.sys)
    probes = config.probes
    if args.no_probes:
        probes = dataclasses.replace(probes, kmsg=False, tracefs=False, bpf=False, memcg_events=False,
                                     proc_events=False)
    config = dataclasses.replace(
        config, roots=roots_cfg, probes=probes,
        socket=args.socket or config.socket, state_dir=args.state_dir or config.state_dir,
        socket_mode=config.socket_mode if args.socket_mode is None else _flag_mode(args.socket_mode),
        lock_memory=config.lock_memory if args.lock_memory is None else args.lock_memory,
        metrics=dataclasses.replace(config.metrics, listen=config.metrics.listen
                                    if args.metrics_listen is None else args.metrics_listen))
    roots = Roots(proc=roots_cfg.proc, sys=roots_cfg.sys, rootfs=args.rootfs or "/")
    return config, roots


def proc_hides_pids(roots: Roots) -> bool:
    """Whether procfs is mounted with hidepid (1, 2, invisible, noaccess):
    there users cannot read each other's processes, so neither may they
    read each other's incidents."""
    try:
        with open(roots.proc_path("self", "mountinfo")) as f:
            for line in f:
                fields = line.split(" - ")
                if len(fields) == 2 and fields[1].split()[0] == "proc" and line.split()[4] == "/proc":
                    options = fields[1].split()[2].split(",")
                    return any(o.startswith("hidepid=") and o not in ("hidepid=0", "hidepid=off") for o in options)
    except OSError:
        pass
    return False


def _gid(group: str) -> int | None:
    """The gid of *group*; None when it is "" or not on this host."""
    import grp
    try:
        return grp.getgrnam(group).gr_gid if group else None
    except KeyError:
        return None


def _flag_mode(text: str) -> int:
    try:
        return octal_mode(text)
    except ValueError as e:
        raise ConfigError("--socket-mode", None, "socket_mode", str(e)) from None


def _allocator_params(params: dict) -> tuple[int | None, dict]:
    """(device, stats) of a gpu_oom or allocator request, checked and bounded."""
    device, stats = params.get("device"), params.get("stats") or {}
    if device is not None and (not isinstance(device, int) or isinstance(device, bool) or device < 0):
        raise ProtocolError(BAD_REQUEST, "params.device must be a CUDA device index")
    if not isinstance(stats, dict) or len(stats) > 64 or not all(
            isinstance(k, str) and len(k) <= 64 and isinstance(v, (int, float)) and not isinstance(v, bool)
            for k, v in stats.items()):
        raise ProtocolError(BAD_REQUEST, "params.stats must map at most 64 names to numbers "
                                         "(torch.cuda.memory_stats)")
    return device, stats


_SNAPSHOT_FIGURES = ("segments", "reserved_bytes", "allocated_bytes", "free_bytes", "largest_free_bytes",
                     "failed_bytes")


def _snapshot_param(snapshot) -> dict | None:
    """A gpu_oom request's memory snapshot summary (memguard.client.snapshot_summary),
    checked and bounded; None when it has none."""
    if snapshot is None:
        return None
    bad = ProtocolError(BAD_REQUEST, "params.snapshot must be memguard.client.snapshot_summary's figures, "
                                     "at most 20 sites, and the path of the snapshot or null")

    def number(v):
        return v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 0)
    if not isinstance(snapshot, dict) or set(snapshot) - {*_SNAPSHOT_FIGURES, "sites", "path"}:
        raise bad
    path, sites = snapshot.get("path"), snapshot.get("sites") or []
    if not all(number(snapshot.get(k)) for k in _SNAPSHOT_FIGURES) \
            or not (path is None or (isinstance(path, str) and path.startswith("/") and len(path) <= 4096)) \
            or not isinstance(sites, list) or len(sites) > 20 or not all(
                isinstance(x, dict) and isinstance(x.get("site"), str) and len(x["site"]) <= 512
                and number(x.get("bytes")) and number(x.get("blocks")) for x in sites):
        raise bad
    return {**{k: snapshot.get(k) for k in _SNAPSHOT_FIGURES}, "path": path,
            "sites": [{"site": x["site"], "bytes": x.get("bytes"), "blocks": x.get("blocks")} for x in sites]}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log = Logger(level=args.log_level)
    try:
        config, roots = configure(args)
    except ConfigError as e:
        print(f"memguardd: {e}", file=sys.stderr)
        return EXIT_CONFIG
    except OSError as e:
        print(f"memguardd: cannot read config: {e}", file=sys.stderr)
        return EXIT_CONFIG
    if args.once:
        try:
            snapshot = once(config, roots)
        except (RuleError, OSError) as e:
            print(f"memguardd: cannot load the rules: {e}", file=sys.stderr)
            return EXIT_CONFIG
        json.dump(snapshot.to_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    try:
        daemon = Daemon(config, roots, log=log)
    except (RuleError, ConfigError, OSError) as e:
        print(f"memguardd: cannot start: {e}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        asyncio.run(daemon.run())
    except (RuntimeError, OSError) as e:
        log.error("cannot start", error=str(e))
        return EXIT_STARTUP
    stuck = daemon.slow.stuck() + sorted(daemon.ticking.hung)
    if stuck:
        # A read blocked in a wedged driver (NVML) or a hung mount would hold
        # the exit until it returns, if ever: everything is saved by now.
        log.warning("exiting without waiting for a blocked read", sources=",".join(stuck))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
