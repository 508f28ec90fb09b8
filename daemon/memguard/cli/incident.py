"""Incidents for people: the list, one report as text, and a plot."""

from __future__ import annotations

from ..units import format_bytes
from .render import one_line, table


def render_list(listing: dict) -> str:
    rows = []
    for inc in listing["incidents"]:
        f = inc["fields"]
        rows.append([inc["id"], f.get("time", "-"), f.get("kind", "-"), f.get("state", "-"),
                     f.get("domain") or "-", f.get("victim") or "-"])
    hidden = listing.get("hidden") or 0
    note = [f"({hidden} incident(s) about other users' processes not shown: incidents are private here)"] \
        if hidden else []
    if not rows:
        return "\n".join(["no incidents", *note]) + "\n"
    out = table(["ID", "TIME", "KIND", "STATE", "DOMAIN", "VICTIM"], rows, set()) + note
    if listing.get("corrupt"):
        out.append(f"({len(listing['corrupt'])} unreadable incident file(s) skipped: "
                   + ", ".join(listing["corrupt"]) + ")")
    return "\n".join(out) + "\n"


def _signal_name(number) -> str:
    import signal
    try:
        return signal.Signals(number).name
    except (ValueError, TypeError):
        return str(number)


def _rate(bps: float | None) -> str:
    if bps is None:
        return "unknown"
    return f"{format_bytes(abs(bps) * 60)}/min" + (" (shrinking)" if bps < 0 else "")


def _growth(doc: dict) -> str:
    """How fast memory grew, over the time it was really measured: a domain
    memguard watched for 2 s has no five-minute rate."""
    growth = doc.get("growth") or {}
    rates = growth.get("working_set_bytes_per_second") or {}
    measured = growth.get("seconds_measured")
    if measured is None:   # written before issue 16: no spans recorded
        return (f"How fast memory grew: {_rate(rates.get('last_60s'))} over the last minute, "
                f"{_rate(rates.get('last_300s'))} over five minutes before the kill.")
    short, long = measured.get("last_60s") or 0.0, measured.get("last_300s") or 0.0
    if rates.get("last_60s") is None:
        return ("How fast memory grew: unknown: memguard has no samples of this domain from before "
                "the kill (fewer than two).")
    if short < 54:
        return (f"How fast memory grew: {_rate(rates['last_60s'])} over the {short:.0f} s before the kill, "
                f"all memguard had measured of this domain.")
    out = f"How fast memory grew: {_rate(rates['last_60s'])} over the last minute before the kill"
    if long >= 270:
        return out + f", {_rate(rates.get('last_300s'))} over five minutes."
    return out + f", {_rate(rates.get('last_300s'))} over the {long:.0f} s memguard had measured."


def _action_line(a: dict) -> str:
    """One action memguard took, seconds from the first warning or the kill."""
    if a.get("kind") == "signal":
        what = f"signal {_signal_name(a.get('signal'))} to job {a.get('job')}"
    elif a.get("kind") == "kill":
        victim = (a.get("targets") or [{}])[0]
        what = f"kill of {victim.get('comm') or '?'} (pid {victim.get('pid')}), memguard choosing"
    elif a.get("kind") == "oom_score_adj":
        what = f"oom_score_adj raised for job {a.get('job')}"
    else:
        what = f"{a.get('kind')} for job {a.get('job')}" if a.get("job") else f"{a.get('kind')} for the domain"
    return f"  {a.get('t'):+.1f} s: {what} ({a.get('rule')}, {a.get('severity')}): {a.get('result')}"


def render_incident(doc: dict) -> str:
    out = [f"Incident {doc['id']}  ({doc.get('kind')}, {doc.get('state')})", ""]
    out.append(doc.get("headline") or doc.get("explanation") or "")
    out.append(f"When: {doc.get('time')}" + ("  (found late: it happened while memguardd was not running)"
                                              if doc.get("found_late") else ""))
    if doc.get("kind") == "near_miss":
        out += ["", f"Rule {doc.get('rule')} fired on {doc.get('domain')} and cleared at {doc.get('cleared')}; "
                    f"peak usage {100 * (doc.get('peak_usage_ratio') or 0):.0f}% of the limit.", "",
                "What memguard did:"]
        out += [_action_line(a) for a in doc.get("actions", ())]
        return "\n".join(out) + "\n"
    if doc.get("kind") == "memguard_kill":
        v = (doc.get("victims") or [{}])[0]
        out += ["", f"Rule {doc.get('rule')} stood at {doc.get('severity')} on {doc.get('domain')}; memguard "
                    f"chose pid {v.get('pid')} {one_line(v.get('comm') or '?')} (uid {v.get('uid')}, "
                    f"RSS {format_bytes(v.get('rss_bytes'))}): {doc.get('why')}."]
        if v.get("cmdline"):
            out.append(f"    {one_line(v['cmdline'])}")
        choice = doc.get("choice") or {}
        for key in ("prefer", "avoid"):
            globs = choice.get(key) or {}
            out.append(f"{key.capitalize()}: " + ("; ".join(f"{k} {', '.join(v)}" for k, v in globs.items())
                                                   or "nothing"))
        out += ["", "What it weighed (largest first):"]
        out += ["  " + line for line in table(
            ["PID", "COMM", "RSS", "VERDICT"],
            [[str(c["pid"]), one_line(c["comm"]), format_bytes(c["rss_bytes"]),
              c["verdict"] + (f" ({c['matched']})" if c.get("matched") else "")]
             for c in doc.get("candidates", ())], {0, 2})]
        return "\n".join(out) + "\n"
    if doc.get("kind") == "gpu_oom":
        out += ["", f"The process's error: {one_line(doc.get('message') or '')}", "",
                "Its CUDA caching allocator (torch.cuda.memory_stats):"]
        for key, value in (doc.get("allocator") or {}).items():
            shown = format_bytes(value) if key.endswith("_bytes") else (
                f"{100 * value:.0f}% of reserved memory unused" if key == "fragmentation" else str(value))
            out.append(f"  {key}: {shown}")
        gpu = doc.get("gpu")
        if gpu and not gpu.get("error"):
            out += ["", f"The GPU as NVML saw it last: {gpu.get('name')} {gpu.get('uuid')}, "
                        f"used {format_bytes(gpu.get('used_bytes'))} of {format_bytes(gpu.get('total_bytes'))}"
                        + (f" ({format_bytes(gpu.get('reserved_bytes'))} reserved by the driver)"
                           if gpu.get("reserved_bytes") else "")]
            out += [f"  pid {p['pid']}: {format_bytes(p['used_bytes'])}" for p in gpu.get("processes", ())]
        if snap := doc.get("snapshot"):
            out += ["", f"Its memory snapshot: {snap.get('segments')} segments, "
                        f"{format_bytes(snap.get('allocated_bytes'))} allocated of "
                        f"{format_bytes(snap.get('reserved_bytes'))} reserved; largest free block "
                        f"{format_bytes(snap.get('largest_free_bytes'))} of {format_bytes(snap.get('free_bytes'))} free"
                        + (f"; the allocation that failed: {format_bytes(snap['failed_bytes'])}"
                           if snap.get("failed_bytes") else "")]
            if snap.get("sites"):
                out += ["Held by (innermost frame outside torch):"]
                out += [f"  {format_bytes(x['bytes'])} in {x['blocks']} blocks: {one_line(x['site'])}"
                        for x in snap["sites"]]
            if snap.get("path"):
                out += [f"The whole snapshot: {snap['path']} (open it in https://pytorch.org/memory_viz)"]
        if doc.get("summary"):
            out += ["", "Allocator summary (torch.cuda.memory_summary):", doc["summary"].rstrip()]
        return "\n".join(out) + "\n"
    if doc.get("kind") == "unclean_stop":
        out += ["", doc.get("explanation", ""), "", "Near their limit at the last heartbeat:"]
        for d in doc.get("near_limit", ()):
            out.append(f"  {d['domain']}: {100 * (d.get('usage_ratio') or 0):.0f}% of {format_bytes(d.get('limit_bytes'))}")
        return "\n".join(out) + "\n"
    constraint = doc.get("constraint") or "unknown"
    if doc.get("constraint_source") not in (None, "kernel"):
        constraint += " (inferred)"
    out.append(f"Domain: {doc.get('domain') or 'unknown'}  (limit {format_bytes(doc.get('limit_bytes'))}, "
               f"constraint {constraint})"
               + ("" if doc.get("domain_tracked", True) else "  not tracked by memguard before the kill"))
    if doc.get("oom_memcg") or doc.get("task_memcg"):
        out.append(f"Cgroup that ran out: {doc.get('oom_memcg') or '-'}; victim's own cgroup: {doc.get('task_memcg') or '-'}")
    out += ["", "What was killed:"]
    for v in doc.get("victims", ()):
        rss = sum(v.get(k) or 0 for k in ("anon_rss_bytes", "file_rss_bytes", "shmem_rss_bytes"))
        out.append(f"  pid {v.get('pid')} {v.get('comm') or '?'} (uid {v.get('uid')}), "
                   f"RSS at kill {format_bytes(rss) if rss else '-'}, oom_score_adj {v.get('oom_score_adj')}")
        if v.get("cmdline"):
            out.append(f"    {one_line(v['cmdline'])}")
        if v.get("job"):
            out.append(f"    job: {v['job']}")
    for note in doc.get("notes", ()):
        out += ["", note]
    out += ["", _growth(doc)]
    consumers = doc.get("top_consumers") or []
    if consumers:
        out += ["", "Who else used memory in the domain:"]
        out += ["  " + line for line in table(
            ["PID", "COMM", "RSS", "COMMAND"],
            [[str(c["pid"]), one_line(c["comm"]), format_bytes(c["rss_bytes"]), one_line(c.get("cmdline") or "")[:60]]
             for c in consumers], {0, 2})]
    warned = doc.get("warnings") or []
    actions = doc.get("actions") or []
    out += ["", "What memguard did before: "
            + (f"{len(warned)} warning(s), {doc.get('warning_seconds')} s before the kill; "
               f"{len(actions)} action(s)." if warned or actions else "nothing: no warning had fired.")]
    out += [_action_line(a) for a in actions]
    probes = doc.get("probes") or []
    if probes:
        out += ["", "Seen by: " + ", ".join(
            f"{p['name']} ({'+%.0f ms' % (1000 * p['delay_seconds']) if p.get('delay_seconds') is not None else 'delay unknown'})"
            for p in probes)]
    if doc.get("missing"):
        why = {"rate_limited": " (the kernel rate-limited its report)",
               "only_kill_lines": " (the text holds only the kill line)",
               "records_lost": " (kernel log records were lost)"}.get(doc.get("missing_reason"), "")
        out.append("Missing from the kernel's report: " + ", ".join(doc["missing"]) + why)
    return "\n".join(out) + "\n"


def plot(doc: dict, path: str) -> None:
    """The domain's usage and working set against its limit, the kill marked.
    Raises ImportError without matplotlib (pip install 'memguard[plot]')."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = doc.get("samples") or {}
    t = s.get("t") or []
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=100)
    mib = 2**20
    if t:
        ax.plot(t, [u / mib for u in s["used_bytes"]], label="used", color="tab:blue")
        ax.plot(t, [w / mib for w in s["working_set_bytes"]], label="working set", color="tab:orange")
        limits = [(x, lim / mib) for x, lim in zip(t, s["limit_bytes"]) if lim is not None]
        if limits:
            ax.plot([x for x, _ in limits], [y for _, y in limits], label="limit", color="tab:red", linestyle="--")
    for w in doc.get("warnings") or []:
        ax.axvline(w.get("t", 0), color="gold", linewidth=1)
    ax.axvline(0, color="black", linewidth=1.5, label="OOM kill")
    victims = ", ".join(f"{v.get('comm')} ({v.get('pid')})" for v in doc.get("victims", ()))
    ax.set_title(f"{doc.get('domain')}: {victims or doc.get('kind')} at {doc.get('time')}", fontsize=10)
    ax.set_xlabel("seconds relative to the kill")
    ax.set_ylabel("MiB")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def render_explained(result: dict) -> str:
    """``memguardctl explain``: one report per kill found in the text."""
    docs = result["incidents"]
    if not docs:
        return "No kernel OOM report found in the text.\n"
    out = [f"{len(docs)} OOM report(s) in the text."]
    for doc in docs:
        out += ["", f"== {doc['id']}: {doc['headline']}"]
        when = doc.get("time") or doc.get("time_in_text")
        since_boot = doc.get("seconds_since_boot")
        if when or since_boot is not None:
            out.append("When: " + ", ".join(filter(None, [
                when, None if since_boot is None else f"{since_boot:.3f} s after boot"])))
        if doc.get("kernel_release"):
            out.append(f"Kernel: {doc['kernel_release']}")
        constraint = doc.get("constraint") or "unknown"
        if doc.get("constraint_source") not in (None, "kernel"):
            constraint += f" (inferred from {doc['constraint_source']})"
        out.append(f"Constraint: {constraint}")
        if doc.get("oom_memcg") or doc.get("task_memcg"):
            out.append(f"Cgroup that ran out: {doc.get('oom_memcg') or '-'}; "
                       f"victim's own cgroup: {doc.get('task_memcg') or '-'}")
        if doc.get("limit_bytes") is not None:
            out.append(f"Limit {format_bytes(doc['limit_bytes'])}, usage at the kill "
                       f"{format_bytes(doc.get('usage_bytes'))}")
        invoker = doc.get("invoker") or {}
        if invoker.get("comm"):
            out.append(f"Invoked by: {one_line(invoker['comm'])}"
                       + (f" (pid {invoker['pid']})" if invoker.get("pid") else "")
                       + (f", gfp_mask={invoker['gfp_mask']}" if invoker.get("gfp_mask") else ""))
        for v in doc.get("victims", ()):
            rss = [(k, v.get(f"{k}_rss_bytes")) for k in ("anon", "file", "shmem")]
            sizes = ", ".join(f"{k}-rss {format_bytes(b)}" for k, b in rss if b is not None)
            out.append(f"Killed: pid {v['pid']} {one_line(v.get('comm') or '?')}"
                       + (f" (uid {v['uid']})" if v.get("uid") is not None else "")
                       + (f", {sizes}" if sizes else ""))
        tasks = doc.get("largest_tasks") or []
        if tasks:
            out += ["Largest tasks in the kernel's table (RSS in 4 KiB pages):"]
            out += ["  " + line for line in table(
                ["PID", "NAME", "RSS", "OOM_SCORE_ADJ"],
                [[str(t["pid"]), one_line(t["name"]), format_bytes(t["rss_bytes"]), str(t["oom_score_adj"])]
                 for t in tasks], {0, 2, 3})]
        for note in doc.get("notes", ()):
            out.append(f"Note: {note}")
        if doc.get("unknown"):
            out.append("The text does not say: " + "; ".join(doc["unknown"]) + ".")
    return "\n".join(out) + "\n"
