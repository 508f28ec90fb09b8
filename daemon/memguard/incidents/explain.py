"""Incident reports from pasted kernel logs (``memguardctl explain``).

People paste ``dmesg``, ``journalctl -k`` and syslog excerpts after a kill,
often from machines memguard never ran on.  :func:`explain` reads such text
into the same incident documents the daemon writes, one per kill, through
the same report assembler as the live kmsg probe.  What it reads:

- prefixes before the kernel's message: syslog (``Jan  5 15:19:27 host
  kernel:``, with or without the host), journalctl (``short``,
  ``short-precise``, ``short-iso``), RFC 3339 stamps, printk levels
  (``<6>``), dmesg stamps (``[ 5864.708440]``, ``dmesg -T``'s ``[Tue Jan  5
  15:19:27 2021]``, the caller id ``[ T123]``), and a stamp whose start was
  cut off (``5864.708440] ``);
- mail and chat quoting (``> ``), Markdown code fences, blank lines between
  every line (a double-spaced paste);
- lines wrapped by a terminal, a mail client or an issue tracker (joined
  back where the wrap split a line: see :func:`_records`), and dmesg's
  indented continuation lines of a multi-line record;
- text with no timestamp at all, in which each line is a record;
- reports cut short: the ``oom-kill:`` summary still names the victim, and
  before 4.19 ``Kill process N (comm) score N or sacrifice child`` names the
  process the kernel chose.

The document says what the text leaves unknown (``unknown``), rather than
leaving a reader to guess from nulls.  Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import datetime, timezone

from ..clock import Instant
from .build import Context, IncidentBuilder, Write, rfc3339
from ..probes.kmsg import kills_of
from ..probes.oom_report import (KmsgRecord, OomReport, OomReportAssembler, Victim, begins_a_fact_line,
                                 complete_line, infer_constraint)
from .redact import redact_cmdline

EXPLAIN_SCHEMA_VERSION = 1
# A page in the task table, for its sizes: 4 KiB on x86 and most arm64
# kernels (a 16 or 64 KiB arm64 or ppc64 kernel makes them larger).
PAGE = 4096
# A line this long that the next line continues was wrapped at a fixed
# width (GitHub and terminals: 80+; mail clients: 72-78).
WRAP_WIDTH = 60

_QUOTE = re.compile(r"^(?:\s*>)+ ?")
_FENCE = re.compile(r"^\s*```\w*|```\s*$")
_MONO = re.compile(r"\[\s*(?P<sec>\d+)\.(?P<frac>\d{1,9})\]")
_CUT_MONO = re.compile(r"^(?P<sec>\d+)\.(?P<frac>\d{6,9})\] ")
_DMESG_T = re.compile(r"\[(?P<ts>[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4})\]")
_KERNEL_TAG = re.compile(r"(?:^|\s)kernel: ")
_CALLER = re.compile(r"^\[\s*[TC]\d+\] ?")
_LEVEL = re.compile(r"^<\d{1,3}>")
_ISO = re.compile(r"(?P<ts>\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?)")
_SYSLOG = re.compile(r"(?P<ts>[A-Z][a-z]{2} [ \d]?\d \d\d:\d\d:\d\d(?:\.\d+)?)")
_CTIME = re.compile(r"(?P<ts>[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4})")
# Where a stamp may be looked for: the start of a line, not deep in a message.
PREFIX_SPAN = 160


@dataclasses.dataclass
class _Line:
    message: str
    stamped: bool           # a timestamp or a "kernel:" tag stood before it
    usec: int | None        # from a dmesg stamp: microseconds since boot
    wall: str | None        # the wall-clock stamp as printed, if any
    raw_length: int
    indented: bool
    leading_space: bool     # the message began with white space (a wrap that kept its blank)


def _strip(line: str) -> str:
    line = _QUOTE.sub("", line.rstrip("\r\n"))
    return _FENCE.sub("", line)


def _wall_of(prefix: str) -> str | None:
    for pattern in (_ISO, _CTIME, _SYSLOG):
        m = pattern.search(prefix)
        if m:
            return m.group("ts")
    return None


def _split(text: str) -> _Line | None:
    """One pasted line (quoting removed): the kernel's message and what stood before it."""
    if not text.strip():
        return None
    head = text[:PREFIX_SPAN]
    usec = wall = None
    start = 0
    stamped = False
    cut = _CUT_MONO.match(text)
    mono = _MONO.search(head)
    tag = _KERNEL_TAG.search(head)
    ctime = _DMESG_T.search(head)
    if cut:
        usec, start, stamped = _usec(cut), cut.end(), True
    elif mono and (tag is None or mono.start() >= tag.start()) and not _before_is_message(head[:mono.start()]):
        usec, start, stamped = _usec(mono), mono.end(), True
        wall = _wall_of(head[:mono.start()])
    elif ctime and not _before_is_message(head[:ctime.start()]):
        start, stamped, wall = ctime.end(), True, ctime.group("ts")
    elif tag:
        start, stamped = tag.end(), True
        wall = _wall_of(head[:tag.start()])
    message = text[start:]
    if stamped:
        message = message[1:] if message.startswith(" ") and not message.startswith("  ") else message
    message = _CALLER.sub("", _LEVEL.sub("", message))
    if tag and start < tag.end() and message.startswith("kernel: "):
        message = message[len("kernel: "):]
    message = _LEVEL.sub("", message)
    return _Line(message.rstrip(), stamped, usec, wall, len(text), text[:1].isspace() and not stamped,
                 message[:1].isspace())


def _before_is_message(prefix: str) -> bool:
    """Whether the text before a stamp-like match is a message already
    (``[ 1.5]`` deep in a sentence is no stamp).  Before a stamp stand only
    timestamps, a host name, tags and levels: a few words
    (``2023-12-04T10:49:30.127Z In(05) vcpu-5 - Guest: <6>`` is six)."""
    return len(prefix.split()) > 8


def _usec(m: re.Match[str]) -> int:
    return int(m.group("sec")) * 1_000_000 + int(m.group("frac").ljust(6, "0")[:6])


# How a kernel line of a report begins: an unstamped line that begins so is
# a line of its own, not the wrapped end of the line before.
_STARTS = re.compile(
    r"^(?:\[\s*(?:pid|\d+)\s*\]|\S.* invoked oom-killer:|CPU: |Hardware name:|Call Trace:|"
    r"(?:memory|memory\+swap|swap|kmem|tcpmem): usage|Memory cgroup (?:stats|out of memory)|"
    r"Task in |Tasks in |Tasks state|Mem-Info:|(?:Out of memory|Memory cgroup out of memory)|"
    r"Killed process|oom-kill:|oom_reaper:|Node \d|[a-z_]+ \d+$|\d+ (?:total pagecache|pages)|"
    r"(?:Free|Total) swap|RIP:|RSP:|RAX:|RDX:|RBP:|R1\d:|Code:)")


def _dedent(lines: list[str]) -> list[str]:
    """Quoting removed, the indentation every line shares (a report indented
    inside a mail quote) removed too."""
    stripped = [_strip(line) for line in lines]
    indents = [len(x) - len(x.lstrip()) for x in stripped if x.strip()]
    cut = min(indents, default=0)
    return [x[cut:] for x in stripped]


def _join(prev: str, nxt: _Line) -> str:
    """*prev* continued by the wrapped rest *nxt*: directly after a
    backslash or where the wrap split a word, with a blank where the wrap
    kept one or the line is only whole with one."""
    rest = nxt.message.strip()
    if prev.endswith("\\"):
        return prev[:-1].rstrip() + rest if prev[:-1].endswith(",") else prev[:-1] + rest
    spaced = prev + " " + rest
    if nxt.leading_space or nxt.indented or (complete_line(spaced) and not complete_line(prev + rest)):
        return spaced
    return prev + rest


def _wrap_width(lines: list[_Line]) -> int | None:
    """The width the paste was wrapped at, if it was: its longest lines,
    two or more of them, all as long (a terminal or a tracker cuts at a
    fixed column); None otherwise."""
    longest = max((x.raw_length for x in lines), default=0)
    at_width = sum(1 for x in lines if x.raw_length >= longest - 1)
    return longest if longest >= WRAP_WIDTH and at_width >= 2 else None


# A line the facts come from is wrapped onto at most this many more lines
# (a kill line of ~200 characters in a 72-column mail).
MAX_WRAPS = 3


def _wrapped(prev: str, prev_raw: int, x: _Line, width: int | None, wraps: int) -> bool:
    """Whether the unstamped line *x* is the wrapped rest of *prev* (which
    *wraps* lines continued already): *prev* ends in a backslash; or it
    reached the paste's wrap width; or it begins a line the facts come from
    and is not whole yet.  Never when *x* begins a line of a report itself."""
    if prev.endswith("\\"):
        return True
    if _STARTS.match(x.message):
        return False
    if width is not None and prev_raw >= width - 1 and not x.indented:
        return True     # cut at the wrap width, however whole it looks
    return wraps < MAX_WRAPS and begins_a_fact_line(prev) and not complete_line(prev)


def _records(text: str) -> tuple[list[KmsgRecord], dict[int, str | None], set[int]]:
    """The records of a paste, numbered in order; each one's wall stamp; the
    records whose usec is a dmesg stamp (seconds since boot)."""
    lines = [x for x in (_split(line) for line in _dedent(text.splitlines())) if x is not None]
    any_stamped = any(x.stamped for x in lines)
    width = _wrap_width(lines)
    out: list[list] = []   # [message, usec, wall]
    last_raw = wraps = 0
    prev_stamped = False
    for x in lines:
        if out and not x.stamped:
            if _wrapped(out[-1][0].rsplit("\n", 1)[-1], last_raw, x, width, wraps):
                out[-1][0] = _join(out[-1][0], x)        # the rest of a wrapped line
                last_raw, wraps = x.raw_length, wraps + 1
                continue
            if any_stamped and x.indented and prev_stamped:
                out[-1][0] += "\n" + x.message.strip()   # dmesg's continuation of a multi-line record
                continue
        wraps = 0
        out.append([x.message, x.usec, x.wall])
        last_raw, prev_stamped = x.raw_length, x.stamped
    records, walls, stamped = [], {}, set()
    usec = 0
    for seq, (message, stamp, wall) in enumerate(out):
        if stamp is not None and stamp >= usec:
            usec = stamp
            stamped.add(seq)
        else:
            usec += 1
        records.append(KmsgRecord(None, None, seq, usec, False, message))
        walls[seq] = wall
    return records, walls, stamped


def reports(text: str) -> tuple[list[OomReport], dict[int, str | None], set[int]]:
    """Every OOM report in *text*, in order (the last version of each); the
    wall stamp of each record; the records whose dmesg stamp gave their time."""
    records, walls, stamped = _records(text)
    assembler = OomReportAssembler()
    found: dict[int, OomReport] = {}
    for rec in records:
        for report in assembler.feed(rec):
            found[report.seq] = report
    for report in assembler.expire(1 << 62):
        found[report.seq] = report
    return [found[k] for k in sorted(found)], walls, stamped


def _victims_of(report: OomReport) -> tuple[OomReport, str | None]:
    """A report cut short before its kill line, with the victim its summary
    (or, before 4.19, the ``Kill process`` line) names, and a note saying so."""
    if report.victims:
        return report, None
    if report.summary_victim is not None:
        (pid, comm, uid), note = report.summary_victim, (
            "The text ends before the kill line; the victim is the process the oom-kill: summary names.")
    elif report.chosen is not None:
        (pid, comm), uid, note = report.chosen, None, (
            "The text ends before the kill line; the victim named is the process the kernel chose "
            "('Kill process ... or sacrifice child'): before 4.19 it may have killed one of that "
            "process's children instead.")
    else:
        return report, None
    victim = Victim(pid=pid, comm=comm or "", uid=uid, total_vm=None, anon_rss=None, file_rss=None,
                    shmem_rss=None, pgtables=None, oom_score_adj=None, usec=report.usec, seq=report.seq)
    return dataclasses.replace(report, victims=(victim,)), note


def _wall_time(stamp: str | None) -> str | None:
    """RFC 3339 for a stamp that carries its date and year; None otherwise
    (syslog's ``Jan  5 15:19:27`` has no year, and no stamp its zone)."""
    if stamp is None:
        return None
    for fmt in ("%a %b %d %H:%M:%S %Y", "%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%dT%H:%M:%S%z",
                "%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"):
        try:
            moment = datetime.strptime(" ".join(stamp.replace(",", ".").split()), fmt)
        except ValueError:
            continue
        if moment.tzinfo is None:
            return moment.strftime("%Y-%m-%dT%H:%M:%S") + " (zone not given)"
        return rfc3339(moment.astimezone(timezone.utc).timestamp())
    return None


def _unknown(doc: dict, report: OomReport) -> list[str]:
    out = []
    if not doc["victims"]:
        out.append("which process was killed: the text has no kill line, and no oom-kill: summary naming one")
    if doc["constraint"] is None:
        out.append("whether a memory cgroup or the whole machine ran out (no constraint, counters or kill reason)")
    if doc["constraint"] == "CONSTRAINT_MEMCG" and not doc["oom_memcg"]:
        out.append("which cgroup ran out (no oom-kill: summary and no 'Task in ... limit of' line)")
    if doc["constraint"] == "CONSTRAINT_MEMCG" and doc["limit_bytes"] is None:
        out.append("the cgroup's limit and usage (no 'memory: usage ..., limit ...' line)")
    if doc["constraint"] == "CONSTRAINT_NONE" and not report.mem_info:
        out.append("the machine's memory at the kill (no Mem-Info block)")
    if not report.tasks:
        out.append("the other processes and their sizes (no task table)")
    if report.invoker_comm is None:
        out.append("which allocation invoked the OOM killer (no 'invoked oom-killer' header)")
    if doc["time"] is None and doc["time_in_text"] is None and doc["seconds_since_boot"] is None:
        out.append("when it happened (no timestamps)")
    return out


def _largest_tasks(report: OomReport) -> list[dict]:
    rows = sorted(report.tasks, key=lambda r: -(r.rss_pages or 0))[:10]
    return [{"pid": r.pid, "name": r.name, "uid": r.uid,
             "rss_bytes": None if r.rss_pages is None else r.rss_pages * PAGE,
             "total_vm_bytes": None if r.total_vm_pages is None else r.total_vm_pages * PAGE,
             "oom_score_adj": r.oom_score_adj} for r in rows]


# The parts of a live incident a paste cannot have.
_LIVE_ONLY = ("state", "detected", "found_late", "probes", "samples", "growth", "top_consumers",
              "predictions", "warnings", "actions", "warning_seconds", "time_monotonic", "domain_tracked",
              "limit_source")


def explain(text: str) -> dict:
    """The incident documents of every OOM kill (or report without a kill)
    in *text*: ``{"schema_version", "incidents": [...], "reports"}``."""
    found, walls, stamped = reports(text)
    docs = []
    for n, report in enumerate(found):
        report, cut_note = _victims_of(report)
        builder = IncidentBuilder(live=False)
        ctx = Context({}, {}, {}, lambda path: None, redact_cmdline)
        now = Instant(mono=report.usec / 1e6, wall=0.0, boot=report.usec / 1e6)
        kills = kills_of(report, now.mono, 0.0)
        doc = None
        for kill in kills:
            for effect in builder.add_kill(kill, now, ctx):
                if isinstance(effect, Write):
                    doc = effect.document
        if doc is None:     # a report without a kill: what it says all the same
            constraint, how = infer_constraint(report)
            doc = {"victims": [], "victim": None, "constraint": constraint, "constraint_source": how,
                   "oom_memcg": report.oom_memcg, "task_memcg": report.task_memcg,
                   "domain": None if constraint != "CONSTRAINT_NONE" else "host",
                   "invoker": {"comm": report.invoker_comm, "pid": report.invoker_pid,
                               "gfp_mask": report.gfp_mask, "order": report.order,
                               "oom_score_adj": report.invoker_oom_score_adj},
                   "memcg": None if report.memcg_limit is None else {
                       "usage_bytes": report.memcg_usage, "limit_bytes": report.memcg_limit,
                       "failcnt": report.memcg_failcnt, "stats": dict(report.memcg_stats)},
                   "kernel_tasks": [], "missing": list(report.missing), "raw_report": list(report.raw),
                   "notes": [], "limit_bytes": None}
            if report.oom_memcg and constraint == "CONSTRAINT_MEMCG":
                doc["domain"] = f"cgroup:{report.oom_memcg}"
        doc = {k: v for k, v in doc.items() if k not in _LIVE_ONLY}
        if cut_note:
            doc["notes"] = [cut_note] + doc["notes"]
        stamp = walls.get(report.victims[0].seq if report.victims else report.seq) or walls.get(report.seq)
        doc.update(
            id=f"text-{n + 1}", kind="oom_kill" if doc["victims"] else "oom_report_without_kill",
            source="text", kernel_release=report.kernel_release,
            time=_wall_time(stamp), time_in_text=stamp,
            seconds_since_boot=round(report.usec / 1e6, 6) if report.seq in stamped else None,
            limit_bytes=doc.get("limit_bytes") if doc.get("limit_bytes") is not None else report.memcg_limit,
            usage_bytes=report.memcg_usage, largest_tasks=_largest_tasks(report))
        doc["headline"] = _headline(doc)
        doc["unknown"] = _unknown(doc, report)
        doc["schema_version"] = EXPLAIN_SCHEMA_VERSION
        docs.append(doc)
    return {"schema_version": EXPLAIN_SCHEMA_VERSION, "incidents": docs}


def _headline(doc: dict) -> str:
    from ..units import format_bytes
    where = doc.get("domain") or "a memory cgroup" if doc.get("constraint") == "CONSTRAINT_MEMCG" else doc.get("domain")
    if doc.get("constraint") == "CONSTRAINT_NONE":
        ran_out = "the whole machine ran out of memory (a global OOM)"
    elif where:
        limit = doc.get("limit_bytes")
        ran_out = f"{where} ran out of memory" + (f" (limit {format_bytes(limit)})" if limit else "")
    else:
        ran_out = "the text does not say what ran out of memory"
    if not doc["victims"]:
        return f"An OOM report whose kill is not in the text: {ran_out}."
    return f"{doc['victim']} was killed by the kernel's OOM killer: {ran_out}."
