"""Prometheus metrics, rendered from the published snapshot.

Each daemon has its own registry (never prometheus_client's global one), so
tests build as many as they like.  A snapshot is rendered at most once, at
the first scrape after it was published; later scrapes of the same tick
serve the same bytes, so a frequent scraper costs no more than one a tick.  Names follow
Prometheus conventions (base units, ``_bytes``, ``_seconds``, ``_total``) and
are documented in docs/metrics.md; they are an API.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.process_collector import ProcessCollector

from ..engine.snapshot import Snapshot

# Tick durations from 0.5 ms (a quiet host) to 1 s (200 cgroups under load).
TICK_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class SnapshotCollector:
    """Yields metric families from the snapshot it was last given."""

    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None

    def collect(self):
        snap = self.snapshot
        if snap is None:
            return
        yield from _build_info(snap)
        yield from _domain_metrics(snap)
        yield from _source_metrics(snap)
        yield from _daemon_metrics(snap)
        yield from _probe_metrics(snap)
        yield from _gpu_metrics(snap)


def _build_info(snap: Snapshot):
    info = GaugeMetricFamily("memguard_build_info", "memguard's version; always 1.",
                             labels=["version"])
    info.add_metric([snap.version], 1)
    yield info


def _domain_metrics(snap: Snapshot):
    labels = ["domain", "kind"]

    def gauge(name, doc):
        return GaugeMetricFamily(f"memguard_domain_{name}", doc, labels=labels)

    used = gauge("used_bytes", "Memory the kernel charges to the domain.")
    ws = gauge("working_set_bytes", "Used memory minus what the kernel can reclaim; what runs into the limit.")
    recl = gauge("reclaimable_bytes", "Memory the kernel can drop without an OOM (inactive file cache, ZFS ARC above c_min).")
    limit = gauge("limit_bytes", "Effective memory limit of the domain (absent when unlimited).")
    swap = gauge("swap_used_bytes", "Swap used by the domain.")
    avg10 = GaugeMetricFamily("memguard_domain_pressure_avg10_ratio",
                              "PSI memory pressure: share of the last 10 s that tasks stalled on memory.",
                              labels=labels + ["pressure"])
    stalled = CounterMetricFamily("memguard_domain_pressure_stalled_seconds",
                                  "PSI memory pressure: total time tasks stalled on memory.",
                                  labels=labels + ["pressure"])
    tto = gauge("time_to_oom_seconds", "Predicted time until the working set reaches the limit (absent when not growing).")
    growth = gauge("growth_bytes_per_second", "Growth of the working set's upper envelope on the horizon the prediction used.")
    confidence = gauge("prediction_confidence_ratio", "Confidence of the prediction, 0 to 1.")
    leak = gauge("leak_bytes_per_second", "Growth sustained over minutes (a leak), absent when there is none.")
    kills = CounterMetricFamily("memguard_domain_oom_kills",
                                "OOM kills the kernel counted in the domain (cgroup oom_kill, /proc/vmstat oom_kill).",
                                labels=labels)
    for d in snap.domains:
        s, key = d.sample, [d.name, d.kind]
        used.add_metric(key, s.used)
        ws.add_metric(key, s.working_set)
        if s.reclaimable is not None:
            recl.add_metric(key, s.reclaimable)
        if s.limit is not None:
            limit.add_metric(key, s.limit)
        if s.swap_used is not None:
            swap.add_metric(key, s.swap_used)
        if s.oom_kills is not None:
            kills.add_metric(key, s.oom_kills)
        p = d.prediction
        if p is not None:
            growth.add_metric(key, p.rate)
            confidence.add_metric(key, p.confidence)
            if p.tto is not None:
                tto.add_metric(key, p.tto)
            if p.leak_rate is not None:
                leak.add_metric(key, p.leak_rate / 60)
        if s.psi is not None:
            for kind in ("some", "full"):
                p = getattr(s.psi, kind)
                if p is not None:
                    avg10.add_metric(key + [kind], p.avg10 / 100)
                    stalled.add_metric(key + [kind], p.total_us / 1e6)
    yield from (used, ws, recl, limit, swap, avg10, stalled, kills, tto, growth, confidence, leak)


def _source_metrics(snap: Snapshot):
    up = GaugeMetricFamily("memguard_source_up", "1 when the source's last run worked.", labels=["source"])
    available = GaugeMetricFamily("memguard_source_available",
                                  "0 when the source cannot work on this host (no PSI, not WSL2); alert on "
                                  "memguard_source_up == 0 and memguard_source_available == 1.", labels=["source"])
    dur = GaugeMetricFamily("memguard_source_duration_seconds", "Duration of the source's last run.",
                            labels=["source"])
    errors = CounterMetricFamily("memguard_source_errors", "Runs of the source that failed.", labels=["source"])
    skipped = CounterMetricFamily("memguard_source_skipped_files",
                                  "Files a source skipped (vanished, permission, io_error, malformed).",
                                  labels=["source", "reason"])
    for s in snap.sources:
        up.add_metric([s.name], 1 if s.active else 0)
        available.add_metric([s.name], 0 if s.state == "unavailable" else 1)
        if s.last_duration is not None:
            dur.add_metric([s.name], s.last_duration)
        errors.add_metric([s.name], s.errors)
        for reason, n in sorted(s.skipped.items()):
            skipped.add_metric([s.name, reason], n)
    yield from (up, available, dur, errors, skipped)


def _daemon_metrics(snap: Snapshot):
    c = snap.counters
    overruns = CounterMetricFamily("memguard_tick_overruns", "Ticks that took longer than the sampling interval.")
    overruns.add_metric([], c.tick_overruns)
    suspends = CounterMetricFamily("memguard_host_suspends", "Times the host was seen to resume from suspend.")
    suspends.add_metric([], c.suspends)
    dropped = CounterMetricFamily("memguard_events_dropped", "Inputs dropped because a queue was full or a worker busy.",
                                  labels=["queue"])
    for queue, n in sorted(c.dropped.items()):
        dropped.add_metric([queue], n)
    interval = GaugeMetricFamily("memguard_sampling_interval_seconds", "The current sampling interval.")
    interval.add_metric([], snap.interval)
    domains = GaugeMetricFamily("memguard_domains", "Domains tracked.", labels=["kind"])
    for kind in sorted({d.kind for d in snap.domains}):
        domains.add_metric([kind], sum(1 for d in snap.domains if d.kind == kind))
    untracked = GaugeMetricFamily("memguard_cgroups_untracked",
                                  "Limited cgroups not tracked because cgroups.max_tracked was reached.")
    untracked.add_metric([], snap.facts.get("cgroups", {}).get("cgroups_untracked", 0))
    yield from (overruns, suspends, dropped, interval, domains, untracked)


def _probe_metrics(snap: Snapshot):
    up = GaugeMetricFamily("memguard_probe_up", "1 when the probe is watching the kernel.", labels=["probe"])
    available = GaugeMetricFamily("memguard_probe_available",
                                  "0 when the probe cannot work on this host (no BCC, no tracefs, not root).",
                                  labels=["probe"])
    events = CounterMetricFamily("memguard_probe_events", "OOM kills the probe reported.", labels=["probe"])
    errors = CounterMetricFamily("memguard_probe_errors", "Times the probe failed and was reopened.",
                                 labels=["probe"])
    lost = CounterMetricFamily("memguard_probe_records_lost",
                               "Kernel records lost before the probe read them (kmsg ring overflow).",
                               labels=["probe"])
    malformed = CounterMetricFamily("memguard_probe_records_malformed", "Records the probe could not parse.",
                                    labels=["probe"])
    for p in snap.probes:
        up.add_metric([p.name], 1 if p.active else 0)
        available.add_metric([p.name], 0 if p.state == "unavailable" else 1)
        events.add_metric([p.name], p.skipped.get("events", 0))
        errors.add_metric([p.name], p.errors)
        lost.add_metric([p.name], p.skipped.get("lost", 0))
        malformed.add_metric([p.name], p.skipped.get("malformed", 0))
    incidents = CounterMetricFamily("memguard_incidents",
                                    "Incidents sealed, by kind (oom_kill, unattributed_oom_kill), domain and constraint.",
                                    labels=["kind", "domain", "constraint"])
    for (kind, domain, constraint), n in sorted(snap.counters.incidents.items()):
        incidents.add_metric([kind, domain, constraint], n)
    unattributed = CounterMetricFamily("memguard_unattributed_oom_kills",
                                       "Kills the kernel counted that no probe reported.")
    unattributed.add_metric([], snap.unattributed_kills)
    stall_s = CounterMetricFamily("memguard_cgroup_reclaim_stall_seconds",
                                  "Time tasks of the cgroup spent stalled in memory reclaim (eBPF).", labels=["cgroup"])
    stalls = CounterMetricFamily("memguard_cgroup_reclaim_stalls", "Reclaim stalls of the cgroup's tasks (eBPF).",
                                 labels=["cgroup"])
    for path, (n, seconds) in sorted(snap.reclaim.items()):
        stalls.add_metric([path], n)
        stall_s.add_metric([path], seconds)
    yield from (up, available, events, errors, lost, malformed, incidents, unattributed, stall_s, stalls)
    firing = GaugeMetricFamily("memguard_rule_firing", "1 for each rule firing on a domain (and job, for a rule "
                               "about jobs; empty otherwise), at its severity.",
                               labels=["rule", "domain", "job", "severity"])
    for rule, domain, severity, _, job in snap.firing:
        firing.add_metric([rule, domain, job or "", severity], 1)
    loaded = GaugeMetricFamily("memguard_rules_loaded", "Rules in force.")
    loaded.add_metric([], snap.rules_info.get("count", 0))
    reload_ok = GaugeMetricFamily("memguard_rules_last_reload_ok",
                                  "0 when the last reload failed and the previous rules stay in force.")
    reload_ok.add_metric([], 0 if snap.rules_info.get("error") else 1)
    actions = CounterMetricFamily("memguard_actions", "Actions carried out (or, dry, decided), by rule, kind "
                                  "(signal, hook, notify, oom_score_adj, freeze, thaw, kill) and result.",
                                  labels=["rule", "kind", "result"])
    for (rule, kind, result), n in sorted(snap.counters.actions.items()):
        actions.add_metric([rule, kind, result], n)
    frozen = GaugeMetricFamily("memguard_frozen_processes", "Processes of a job memguard holds frozen now.",
                               labels=["domain", "job"])
    for job in snap.jobs:
        if job["frozen"]:
            frozen.add_metric([job["domain"] or "", job["id"]], len(job["frozen"]))
    yield from (firing, loaded, reload_ok, actions, frozen)


def _gpu_metrics(snap: Snapshot):
    """Per GPU (NVML): what dcgm-exporter's DCGM_FI_DEV_FB_* and
    DCGM_FI_DEV_GPU_UTIL give (in bytes and ratios here, MiB and percent
    there), and each process's memory, which dcgm-exporter does not give;
    nothing without GPUs."""
    allocated = GaugeMetricFamily("memguard_gpu_allocator_bytes", "What a job's CUDA caching allocator "
                                  "holds (memguard.client): allocated, reserved, active, inactive_split.",
                                  labels=["domain", "job", "kind"])
    fragmentation = GaugeMetricFamily("memguard_gpu_allocator_fragmentation_ratio", "(reserved - allocated) / "
                                      "reserved of a job's CUDA caching allocator.", labels=["domain", "job"])
    for job in snap.jobs:
        for domain, a in job.get("allocator", {}).items():
            for kind in ("allocated", "reserved", "active", "inactive_split"):
                if f"{kind}_bytes" in a:
                    allocated.add_metric([domain, job["id"], kind], a[f"{kind}_bytes"])
            if "fragmentation" in a:
                fragmentation.add_metric([domain, job["id"]], a["fragmentation"])
    if allocated.samples:
        yield from (allocated, fragmentation)
    devices = snap.facts.get("gpu", {}).get("devices", {})
    if not devices:
        return
    info = GaugeMetricFamily("memguard_gpu_info", "1 per GPU domain, with its UUID and name.",
                             labels=["domain", "uuid", "name"])
    up = GaugeMetricFamily("memguard_gpu_up", "1 when NVML answered for the GPU at the last sample, 0 on an "
                           "error (a GPU lost).", labels=["domain"])
    memory = {key: GaugeMetricFamily(f"memguard_gpu_memory_{key}_bytes", help_, labels=["domain"])
              for key, help_ in (("total", "The GPU's memory (DCGM_FI_DEV_FB_TOTAL)."),
                                 ("reserved", "Memory the driver reserves, never allocatable "
                                              "(DCGM_FI_DEV_FB_RESERVED; NVML v2 only)."),
                                 ("used", "Memory allocations hold (DCGM_FI_DEV_FB_USED)."),
                                 ("free", "Memory free for allocations (DCGM_FI_DEV_FB_FREE)."))}
    util = GaugeMetricFamily("memguard_gpu_utilization_ratio", "Share of the last sample period a kernel ran "
                             "on the GPU (DCGM_FI_DEV_GPU_UTIL / 100).", labels=["domain"])
    procs = GaugeMetricFamily("memguard_gpu_process_memory_bytes", "GPU memory a process holds, by pid and "
                              "registered job (empty: none); absent where NVML cannot say.",
                              labels=["domain", "pid", "job"])
    jobs = {pid: job["id"] for job in snap.jobs for pid in job["pids"]}
    for domain, d in sorted(devices.items()):
        info.add_metric([domain, d.get("uuid") or "", d.get("name") or ""], 1)
        up.add_metric([domain], 0 if d.get("error") else 1)
        if d.get("error"):
            continue
        for key, family in memory.items():
            if d.get(f"{key}_bytes") is not None:
                family.add_metric([domain], d[f"{key}_bytes"])
        if d["utilization_gpu"] is not None:      # NVML has none for a MIG instance, nor a GPU in MIG mode
            util.add_metric([domain], d["utilization_gpu"] / 100)
        for p in d["processes"]:
            if p["used_bytes"] is not None:
                procs.add_metric([domain, str(p["pid"]), jobs.get(p["pid"], "")], p["used_bytes"])
    yield from (info, up, *memory.values(), util, procs)


class Metrics:
    """The daemon's registry and its last rendering."""

    def __init__(self, proc_root: str = "/proc") -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = SnapshotCollector()
        self.registry.register(self.collector)
        ProcessCollector(namespace="", registry=self.registry, proc=proc_root)
        self.tick_duration = Histogram("memguard_tick_duration_seconds", "Duration of one sampling tick.",
                                       buckets=TICK_BUCKETS, registry=self.registry)
        self.rendered = b""

    def render(self, snapshot: Snapshot) -> bytes:
        self.collector.snapshot = snapshot
        self.rendered = generate_latest(self.registry)
        return self.rendered
