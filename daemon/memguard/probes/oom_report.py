"""Kernel OOM reports, parsed from /dev/kmsg records.  Pure: no I/O, no clock.

Kernel docs: Documentation/ABI/testing/dev-kmsg (the record format); the
report itself is printed by mm/oom_kill.c (dump_header, dump_tasks,
dump_oom_summary, __oom_kill_process, oom_reap_task_mm) and mm/memcontrol.c
(mem_cgroup_print_oom_meminfo, mem_cgroup_print_oom_group).  A record::

    4,3925,1192124212,-;python3 invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0

One OOM kill prints tens to thousands of records; :class:`OomReportAssembler`
turns the stream into :class:`OomReport` objects, emitting one at the first
``Killed process`` line (the incident must be written within 100 ms) and again
whenever a later line of the same report adds something (more victims of a
``memory.oom.group`` kill, ``oom_reaper`` lines).  Reports are merged by their
``seq``.

Shapes this reads, by kernel (see tests/fixtures/kmsg/README.md for the
captures each one is checked against):

- header ``COMM invoked oom-killer: gfp_mask=..., order=N, oom_score_adj=N``;
  up to 4.19 it also has ``nodemask=...`` and is followed by a
  ``COMM cpuset=... mems_allowed=...`` line;
- memcg OOMs: ``memory: usage NkB, limit NkB, failcnt N`` then ``memory+swap:``
  and ``kmem:`` (cgroup v1) or ``swap:`` (v2); ``Memory cgroup stats for /X:``
  followed by ``key value`` lines (5.x and later; before 6.4 a v2 block is one
  record with embedded newlines), or up to 5.0 the same line carrying
  ``key:NKB`` pairs; up to 4.19 ``Task in /A killed as a result of limit of /B``;
- global OOMs: ``Mem-Info:`` and the show_mem() lines;
- ``Tasks state (memory values in pages):`` (4.19+) and the table header, whose
  columns are read from the header itself (``rss_anon rss_file rss_shmem``
  since 6.8, ``pgtables_bytes`` since 4.14, ``nr_ptes`` before);
- ``oom-kill:constraint=...,nodemask=...,cpuset=...,mems_allowed=...,``
  ``oom_memcg=...|global_oom,task_memcg=...,task=...,pid=...,uid=...`` (5.0+;
  no memcg fields at all on a kernel built without CONFIG_MEMCG);
- ``[REASON: ]Killed process PID (COMM) total-vm:NkB, anon-rss:NkB,
  file-rss:NkB, shmem-rss:NkB[, UID:N pgtables:NkB oom_score_adj:N]`` (the
  reason prefix by 5.0, the last three fields after 5.0 and by 5.4; RHEL 7
  prints ``, UID N,``); up to 4.19 it follows
  ``REASON: Kill process PID (COMM) score N or sacrifice child``;
- ``Tasks in /X are going to be killed due to memory.oom.group set`` (4.19+,
  after the first kill);
- ``oom_reaper: reaped process PID (COMM), now anon-rss:NkB, file-rss:NkB,
  shmem-rss:NkB``, at once up to 5.10, 2 s after the kill by 6.6
  (OOM_REAPER_DELAY).

This file is long because it is one grammar: the record parser, the line
shapes and the state machine that joins them are read together.
"""

from __future__ import annotations

import dataclasses
import heapq
import re
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone

# Limits that keep a report's memory bounded whatever the kernel prints.  A
# global OOM on a host with thousands of processes prints a row for each.
MAX_TASK_ROWS = 256        # the rows kept are those with the largest rss
MAX_RAW_LINES = 600
MAX_RAW_TASK_ROWS = 64     # table rows copied into ``raw`` (all are parsed)
MAX_MEM_INFO_LINES = 200
MAX_STATS = 200
MAX_VICTIMS = 512          # an oom.group kill of a large cgroup
MAX_REAPED = 512
# A report with no new line for this long (kernel time) is over.  Its lines
# are printed within milliseconds under oom_lock; the oom_reaper line comes up
# to 2 s after the kill (OOM_REAPER_DELAY, by 6.6; seen 2.05 s here).
REPORT_IDLE_USEC = 5_000_000
# oom_reaper lines that arrive after their report closed are matched to it by
# pid for this long.
RECENT_USEC = 30_000_000
RECENT_REPORTS = 8

KIB = 1024


# ----------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class KmsgRecord:
    """One /dev/kmsg record.  ``priority``/``facility`` are None when the
    source did not say (plain ``dmesg`` text)."""

    priority: int | None
    facility: int | None
    seq: int
    usec: int
    continuation: bool
    message: str
    dict_fields: dict[str, str] = field(default_factory=dict)
    caller: str | None = None   # "T1234" / "C2" (CONFIG_PRINTK_CALLER), else None


_ESCAPE = re.compile(rb"\\x([0-9a-fA-F]{2})")


def _unescape(raw: bytes) -> str:
    """The kernel writes bytes < 0x20, >= 0x7f and backslash as ``\\xNN``."""
    return _ESCAPE.sub(lambda m: bytes((int(m.group(1), 16),)), raw).decode("utf-8", "replace")


def _escape(text: str) -> bytes:
    out = bytearray()
    for b in text.encode("utf-8", "surrogatepass"):
        out += b"\\x%02x" % b if b < 0x20 or b >= 0x7F or b == 0x5C else bytes((b,))
    return bytes(out)


def _field_uint(raw: bytes, name: str) -> int:
    if not raw.isdigit() or len(raw) > 20:
        raise ValueError(f"kmsg record {name} {raw[:24]!r} is not an unsigned integer")
    return int(raw)


def parse_record(raw: bytes) -> KmsgRecord:
    """Parse one record as read(2) returns it: ``prio,seq,usec,flags[,more];message``
    then optional `` KEY=value`` lines.  Raises ValueError naming what is wrong
    (and never anything else)."""
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise ValueError(f"kmsg record must be bytes, not {type(raw).__name__}")
    data = bytes(raw)
    if data.endswith(b"\n"):
        data = data[:-1]
    first, *rest = data.split(b"\n")
    header, sep, body = first.partition(b";")
    if not sep:
        raise ValueError("kmsg record has no ';' between its header and message")
    fields = header.split(b",")
    if len(fields) < 4:
        raise ValueError(f"kmsg record header {header[:40]!r} has fewer than 4 fields")
    prio = _field_uint(fields[0], "priority")
    seq = _field_uint(fields[1], "sequence number")
    usec = _field_uint(fields[2], "timestamp")
    flags = fields[3].decode("ascii", "replace")
    caller = None
    for extra in fields[4:]:
        if extra.startswith(b"caller="):
            caller = extra[7:].decode("ascii", "replace")
    dict_fields: dict[str, str] = {}
    for line in rest:
        key, eq, value = line[1:].partition(b"=")
        if not line.startswith(b" ") or not eq or not key:
            raise ValueError(f"kmsg continuation line {line[:40]!r} is not ' KEY=value'")
        dict_fields[_unescape(key)] = _unescape(value)
    # 'c': a continuation of an earlier line (4.9+); '+': the same in 3.x-4.8.
    return KmsgRecord(prio & 7, prio >> 3, seq, usec, "c" in flags or "+" in flags,
                      _unescape(body), dict_fields, caller)


def format_record(rec: KmsgRecord) -> bytes:
    """The inverse of :func:`parse_record` (facility and priority None are written as 0 and 6)."""
    prio = ((rec.facility or 0) << 3) | (6 if rec.priority is None else rec.priority)
    head = f"{prio},{rec.seq},{rec.usec},{'c' if rec.continuation else '-'}"
    if rec.caller:
        head += f",caller={rec.caller}"
    out = head.encode() + b";" + _escape(rec.message) + b"\n"
    for key, value in rec.dict_fields.items():
        out += b" " + _escape(key) + b"=" + _escape(value) + b"\n"
    return out


def split_kmsg_dump(data: bytes) -> list[bytes]:
    """Split records written one after another (as read(2) returned them) into
    single records: a line that starts with a space belongs to the record before."""
    records: list[bytes] = []
    for line in data.splitlines(keepends=True):
        if line.startswith(b" ") and records:
            records[-1] += line
        elif line.strip():
            records.append(line)
    return records


# dmesg / syslog / journalctl text.
_SYSLOG_PREFIX = re.compile(r"^(?P<ts>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d) \S+ kernel: ")
_MONO = re.compile(r"^(?:<(?P<prio>\d{1,3})>)?\[\s*(?P<sec>\d+)\.(?P<frac>\d{1,9})\]"
                   r"(?:\[\s*(?P<caller>[TC]\d+)\])? ?(?P<msg>.*)$")
_WALL = re.compile(r"^(?:<(?P<prio>\d{1,3})>)?\[(?P<ts>[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d "
                   r"\d\d:\d\d:\d\d \d{4})\] ?(?P<msg>.*)$")
_JOURNAL_HOST = re.compile(r"^\S+ kernel: ")


def _wall_usec(text: str, fmt: str) -> int | None:
    try:
        moment = datetime.strptime(text, fmt).replace(tzinfo=timezone.utc)
    except ValueError:
        return None
    return int(moment.timestamp()) * 1_000_000


def parse_dmesg_line(line: str, seq: int = 0) -> KmsgRecord | None:
    """One line of ``dmesg`` (``[ 1234.567890] msg``, with ``-r``'s ``<6>`` or a
    ``[ T123]`` caller), ``dmesg -T``, ``journalctl -k -o short-monotonic`` or
    a syslog file (``Mon DD HH:MM:SS host kernel: ...``) as a record numbered
    *seq*.  Without a monotonic stamp ``usec`` comes from the wall-clock stamp
    (only its order means anything).  None for a line of none of these shapes."""
    text = line.rstrip("\r\n")
    syslog = _SYSLOG_PREFIX.match(text)
    rest = text[syslog.end():] if syslog else text
    prio = caller = None
    m = _MONO.match(rest)
    if m:
        usec = int(m.group("sec")) * 1_000_000 + int(m.group("frac").ljust(6, "0")[:6])
        msg, caller = m.group("msg"), m.group("caller")
        if not syslog:
            msg = _JOURNAL_HOST.sub("", msg, count=1)
    elif (w := _WALL.match(rest)) and (wall := _wall_usec(w.group("ts"), "%a %b %d %H:%M:%S %Y")) is not None:
        usec, msg, m = wall, w.group("msg"), w
    elif syslog and (wall := _wall_usec("2000 " + syslog.group("ts"), "%Y %b %d %H:%M:%S")) is not None:
        usec, msg = wall, rest
    else:
        return None
    if m is not None and m.group("prio") is not None:
        prio = int(m.group("prio"))
    return KmsgRecord(None if prio is None else prio & 7, None if prio is None else prio >> 3,
                      seq, usec, False, msg, {}, caller)


def parse_dmesg_text(text: str, first_seq: int = 0) -> list[KmsgRecord]:
    """Every record in a dmesg-style capture, numbered from *first_seq*.  An
    indented line without a stamp continues the record before it (dmesg prints
    a multi-line record that way); other lines without a stamp are dropped."""
    records: list[KmsgRecord] = []
    prefix_len = 0
    for line in text.splitlines():
        rec = parse_dmesg_line(line, first_seq + len(records))
        if rec is not None:
            records.append(rec)
            prefix_len = max(0, len(line) - len(rec.message))
        elif records and line[:1].isspace() and line.strip():
            cont = line[prefix_len:] if line[:prefix_len].isspace() else line.lstrip()
            last = records[-1]
            records[-1] = dataclasses.replace(last, message=last.message + "\n" + cont)
    return records


# ----------------------------------------------------------------- reports


@dataclass(frozen=True, slots=True)
class Victim:
    """One ``Killed process`` line.  Sizes in bytes; None when not printed."""

    pid: int
    comm: str
    uid: int | None            # from the line, else from the oom-kill: line for this pid
    total_vm: int | None
    anon_rss: int | None
    file_rss: int | None
    shmem_rss: int | None
    pgtables: int | None
    oom_score_adj: int | None
    usec: int
    seq: int
    reason: str | None = None  # "Out of memory", "Memory cgroup out of memory", ...


@dataclass(frozen=True, slots=True)
class TaskRow:
    """One row of the task table; page counts as printed, None for a column
    this kernel lacks."""

    pid: int
    uid: int | None
    tgid: int | None
    total_vm_pages: int | None
    rss_pages: int | None
    rss_anon_pages: int | None
    rss_file_pages: int | None
    rss_shmem_pages: int | None
    pgtables_bytes: int | None
    swapents: int | None
    oom_score_adj: int | None
    name: str


@dataclass(frozen=True, slots=True)
class Reaped:
    """An ``oom_reaper`` line: what the victim still held after reaping (bytes),
    or ``ok=False`` for ``unable to reap``."""

    pid: int
    comm: str
    anon_rss: int | None
    file_rss: int | None
    shmem_rss: int | None
    usec: int
    seq: int
    ok: bool = True


@dataclass(frozen=True)
class OomReport:
    """One OOM report; absent parts are None (or empty) and named in ``missing``."""

    seq: int                         # of the header record, or of the first record seen
    usec: int
    invoker_comm: str | None
    invoker_pid: int | None
    gfp_mask: str | None
    order: int | None
    invoker_oom_score_adj: int | None
    kernel_release: str | None       # from the CPU: line
    constraint: str | None           # CONSTRAINT_MEMCG, ... (None before 5.0: not printed)
    nodemask: str | None
    cpuset: str | None
    mems_allowed: str | None
    global_oom: bool | None          # True: not a memcg OOM; None: cannot tell
    oom_memcg: str | None
    task_memcg: str | None
    oom_group: str | None            # cgroup killed whole (memory.oom.group)
    memcg_usage: int | None          # bytes, from "memory: usage"
    memcg_limit: int | None
    memcg_failcnt: int | None
    memcg_counters: dict[str, tuple[int, int, int]]  # "memory", "memory+swap", "swap", "kmem": (usage, limit, failcnt)
    memcg_stats_for: str | None
    memcg_stats: dict[str, int]      # as printed (bytes or counts); "key:NKB" converted to bytes
    mem_info: tuple[str, ...]
    tasks: tuple[TaskRow, ...]
    victims: tuple[Victim, ...]      # one per pid, in order (the chosen victim is printed twice by an oom.group kill)
    reaped: tuple[Reaped, ...]
    no_kill_reason: str | None       # "no killable processes", "victim already exiting", "panic_on_oom"
    missing: tuple[str, ...]         # header, memory_info, task_table, constraint, killed, records
    lost_records: int | None         # None: nothing lost; else the count known (0: unknown)
    raw: tuple[str, ...]
    truncated: dict[str, int]        # what the limits dropped: tasks, raw, mem_info, memcg_stats, victims, reaped
    chosen_reason: str | None = None  # <= 4.19: the REASON of "REASON: Kill process N (c) score N ..."
    legacy_memcg_line: bool = False   # <= 4.19: "Task in /A killed as a result of limit of /B"
    chosen: tuple[int, str] | None = None                   # <= 4.19: "Kill process PID (COMM) score ..."
    summary_victim: tuple[int, str | None, int] | None = None  # the oom-kill: line's pid, task, uid

    @property
    def only_kill_lines(self) -> bool:
        """Nothing but ``Killed process`` lines: the kernel printed no header,
        memory figures, task table or summary for this kill (its report rate
        limit), or the text it came from left them out."""
        return bool(self.victims) and not (self.invoker_comm or self.memcg_counters or self.mem_info
                                           or self.memcg_stats_for or self.tasks or self.constraint
                                           or self.oom_memcg or self.task_memcg)


# Line shapes.
_HEADER = re.compile(r"^(?P<comm>.*?) invoked oom-killer: (?P<rest>.*)$")
_CPU = re.compile(r"^CPU: \d+ (?:UID: \d+ )?PID: (?P<pid>\d+) Comm: (?P<comm>.*?) "
                  r"(?:Kdump: loaded )?(?:Not tainted|Tainted:)")
_RELEASE = re.compile(r" (?P<rel>\d+\.\d+\S*) +#\d+")
_CPUSET_LEGACY = re.compile(r"^(?P<comm>.*?) cpuset=(?P<cpuset>\S*)(?: mems_allowed=(?P<mems>\S*))?$")
_TASK_IN = re.compile(r"^Task in (?P<task>.+) killed as a result of limit of (?P<oom>.+)$")
_COUNTER = re.compile(r"^(?P<name>memory|memory\+swap|swap|kmem|tcpmem|kmem\.tcp): usage (?P<usage>\d+)kB, "
                      r"limit (?P<limit>\d+)kB, failcnt (?P<failcnt>\d+)$")
_STATS_HEAD = "Memory cgroup stats for"
_STATS_INLINE = re.compile(r"^(?P<cg>.*?): (?P<stats>[a-z_]+:\d+KB.*)$")
_STAT_LINE = re.compile(r"^(?P<key>[a-z][a-z0-9_.]*) (?P<value>-?\d+)$")
_STAT_PAIR = re.compile(r"(?P<key>[a-z][a-z0-9_]*):(?P<value>\d+)KB")
_MEMINFO_LINE = re.compile(
    r"^(?:\s*[a-z_]+(?:\([a-z]+\))?:\s?-?\d|Node \d+ |\w+ free:\d+kB|\w+: \d+\*\d+kB|lowmem_reserve\[\]:|"
    r"\d+ (?:total pagecache pages|pages\b)|(?:Free|Total) swap +=|Swap cache stats:|"
    r"Unreclaimable slab info:|Name +Used +Total|\S+ +\d+KB +\d+KB$|Memory allocations|"
    r"No memory allocation info|\s*[\d.]+ [KMGT]?i?B +\d+ |\w+ per-cpu:|CPU +\d+: hi:)")
_TASKS_STATE = "Tasks state (memory values in pages):"
_TABLE_HEADER = re.compile(r"^\[\s*pid\s*\]\s+uid\s+tgid\s+total_vm\s+rss\b.*\bname$")
_TABLE_ROW = re.compile(r"^\[\s*(?P<pid>\d+)\]\s+(?P<rest>.*)$")
_KILLED = re.compile(r"^(?:(?P<reason>.*?): )?Killed process (?P<pid>\d+)(?:, UID (?P<uid>\d+),)? "
                     r"\((?P<comm>.*)\)(?P<rest>.*)$")   # RHEL 6: "Killed process N, UID N, (comm)"
_KILL_LEGACY = re.compile(r"^(?P<reason>.*?): [Kk]ill process (?P<pid>\d+) \((?P<comm>.*)\) score \d+ "
                          r"or (?:sacrifice|a) child$")   # "or a child" up to 2.6.35
_SIZE = re.compile(r"(?P<key>[A-Za-z_-]+)[: ](?P<value>-?\d+)(?P<kb>kB)?")
_REAPED = re.compile(r"^oom_reaper: reaped process (?P<pid>\d+) \((?P<comm>.*)\), now (?P<rest>.*)$")
_UNREAPED = re.compile(r"^oom_reaper: unable to reap pid:(?P<pid>\d+) \((?P<comm>.*)\)$")
_OOM_GROUP = re.compile(r"^Tasks in (?P<cg>.+?) are going to be killed due to memory\.oom\.group set$")
_NO_KILL = (
    (re.compile(r"^Out of memory and no killable processes"), "no killable processes"),
    (re.compile(r"^.*: OOM victim \d+ \(.*\) is already exiting\. Skip killing the task$"), "victim already exiting"),
    (re.compile(r"^Out of memory: (?:compulsory|system-wide) panic_on_oom is enabled"), "panic_on_oom"),
)
_TRACE_LINE = re.compile(
    r"^(?:Hardware name: |Call Trace:|Workqueue: |Tainted: \[|Modules linked in:|Exception stack|Backtrace:|"
    r"\s*</?(?:TASK|IRQ|NMI|EOI)>|\s*(?:\? )?[\w.$]+\+0x[0-9a-f]+/0x[0-9a-f]+|\s*\[<[0-9a-f]+>\]|"
    r"\S+ from \S+\+0x|[0-9a-f]{4}: |(?:pc|lr|sp) : |x\d+ ?: |\s*(?:[0-9a-f]{16} ?)+$|"
    r"(?:RIP|RSP|RAX|RBX|RCX|RDX|RSI|RDI|RBP|R\d{1,2}|FS|GS|CS|DS|ES|CR\d|Code|EFLAGS)\b)")
_OOM_LOOKING = re.compile(r"out of memory|oom-kill|oom_kill|oom_reaper|memory\.oom", re.IGNORECASE)

# The order of a report's sections.  A line of an earlier section than one
# already seen starts another report (its header was lost): reports do not
# interleave, every OOM kill holds oom_lock while it prints.
_RANK = {"counter": 1, "task_in": 1, "meminfo_head": 1, "stats_head": 2, "tasks_state": 3,
         "table_header": 3, "summary": 4, "killed": 5, "chosen": 5, "group": 5, "no_kill": 5,
         "unrecognised": 0}

# Kinds of line whose text a continuation record ('c' flag) may complete.
_CONTINUABLE = frozenset({"header", "cpuset", "summary", "group", "stats_head"})


def _kb_fields(text: str) -> dict[str, int]:
    """``key:NkB`` (bytes) and ``key:N`` / ``key N`` (as is) pairs; a value that
    should carry ``kB`` and does not (a line cut short) is left out."""
    out: dict[str, int] = {}
    for m in _SIZE.finditer(text):
        key = m.group("key").lower()
        if key.endswith(("rss", "vm", "pgtables")):
            if m.group("kb"):
                out[key] = int(m.group("value")) * KIB
        elif not m.group("kb"):
            out[key] = int(m.group("value"))
    return out


def _summary_fields(text: str) -> dict[str, str | None]:
    """The ``oom-kill:`` line (possibly only its first part) as key -> value.
    nodemask and mems_allowed can hold commas ("0-1,3"), so split on known keys."""
    body = text[len("oom-kill:"):]
    out: dict[str, str | None] = {}
    tail = re.search(r",task=(?P<task>.*),pid=(?P<pid>\d+),uid=(?P<uid>\d+)$", body)
    if tail:
        out.update(task=tail.group("task"), pid=tail.group("pid"), uid=tail.group("uid"))
        body = body[:tail.start()]
    keys = "constraint|nodemask|cpuset|mems_allowed|oom_memcg|task_memcg|task|pid|uid"
    for part in re.split(rf",(?=(?:{keys})=|global_oom(?:,|$))", body):
        key, eq, value = part.partition("=")
        out[key] = value if eq else None
    return out


class _Draft:
    """A report being assembled (mutable)."""

    def __init__(self, seq: int, usec: int, header: bool) -> None:
        self.seq, self.usec, self.last_usec = seq, usec, usec
        self.header = header
        self.phase = "trace" if header else "none"
        self.rank = 0            # how far through the report's sections it has got (see _RANK)
        self.strong = header     # something only an OOM prints was seen
        self.legacy = False      # a pre-5.0 shape: no oom-kill: line is expected
        self.version = 0
        self.emitted = -1
        self.last_kind: str | None = None
        self.last_text = ""      # the last line taken, which a continuation record may complete
        self.fields: dict[str, object] = {}
        self.counters: dict[str, tuple[int, int, int]] = {}
        self.stats_for: str | None = None
        self.stats: dict[str, int] = {}
        self.mem_info: list[str] = []
        self.columns: list[str] | None = None
        self.table_seen = False
        self.rows: list[tuple[int, int, TaskRow]] = []   # heap of (rss, -index, row)
        self.row_count = 0
        self.victims: dict[int, Victim] = {}
        self.reaped: list[Reaped] = []
        self.no_kill_reason: str | None = None
        self.lost: int | None = None
        self.raw: list[str] = []
        self.truncated: dict[str, int] = {}

    def drop(self, what: str, n: int = 1) -> None:
        self.truncated[what] = self.truncated.get(what, 0) + n

    def add_raw(self, line: str) -> None:
        if len(self.raw) < MAX_RAW_LINES:
            self.raw.append(line)
        else:
            self.drop("raw")

    def add_loss(self, count: int | None) -> None:
        self.lost = (self.lost or 0) + (count or 0)
        self.version += 1

    @property
    def finished(self) -> bool:
        return bool(self.victims) or self.no_kill_reason is not None

    def build(self, final: bool) -> OomReport:
        f = self.fields
        summary_seen = "summary" in f
        memory_info = bool(self.counters or self.mem_info or self.stats_for)
        missing = []
        if not self.header:
            missing.append("header")
        if not memory_info:
            missing.append("memory_info")
        if not self.table_seen or not self.row_count:     # every report's table has a row, the victim's
            missing.append("task_table")
        if not summary_seen and not self.legacy:
            missing.append("constraint")
        if not self.finished and final:
            missing.append("killed")
        if self.lost is not None:
            missing.append("records")
        oom_memcg = f.get("oom_memcg")
        if f.get("global_oom") or (summary_seen and oom_memcg is None) or (self.mem_info and not self.counters):
            global_oom: bool | None = True
        elif oom_memcg is not None or self.counters:
            global_oom = False
        else:
            global_oom = None
        memory = self.counters.get("memory")
        rows = [row for _, _, row in sorted(self.rows, key=lambda r: -r[1])]
        return OomReport(
            seq=self.seq, usec=self.usec,
            invoker_comm=f.get("invoker_comm"), invoker_pid=f.get("invoker_pid"),
            gfp_mask=f.get("gfp_mask"), order=f.get("order"),
            invoker_oom_score_adj=f.get("invoker_oom_score_adj"), kernel_release=f.get("kernel_release"),
            constraint=f.get("constraint"), nodemask=f.get("nodemask"), cpuset=f.get("cpuset"),
            mems_allowed=f.get("mems_allowed"), global_oom=global_oom, oom_memcg=oom_memcg,
            task_memcg=f.get("task_memcg"), oom_group=f.get("oom_group"),
            memcg_usage=memory[0] if memory else None, memcg_limit=memory[1] if memory else None,
            memcg_failcnt=memory[2] if memory else None, memcg_counters=dict(self.counters),
            memcg_stats_for=self.stats_for, memcg_stats=dict(self.stats), mem_info=tuple(self.mem_info),
            tasks=tuple(rows), victims=tuple(self.victims.values()), reaped=tuple(self.reaped),
            no_kill_reason=self.no_kill_reason, missing=tuple(missing), lost_records=self.lost,
            raw=tuple(self.raw), truncated=dict(self.truncated), chosen_reason=f.get("chosen_reason"),
            legacy_memcg_line=bool(f.get("task_in")), chosen=f.get("chosen"),
            summary_victim=f.get("summary_victim"))


class OomReportAssembler:
    """Feeds on records in order; returns reports as soon as they are ready.

    A report is emitted at its first ``Killed process`` line (or a line saying
    no process was killed), and again, with the same ``seq``, whenever a later
    line adds to it; a report that never got that far is emitted when it
    closes (a new header, :meth:`expire`, or idle for ``idle_usec``) if it had
    any line only an OOM prints.  Records from a facility other than the
    kernel's (0) are ignored: user space cannot write those (devkmsg_write
    gives them LOG_USER), so a fake report written to /dev/kmsg is not read.
    Unknown shapes never raise.
    """

    def __init__(self, idle_usec: int = REPORT_IDLE_USEC, recent_usec: int = RECENT_USEC) -> None:
        self.idle_usec = idle_usec
        self.recent_usec = recent_usec
        self._open: _Draft | None = None
        self._recent: deque[_Draft] = deque(maxlen=RECENT_REPORTS)
        self._last_seq: int | None = None
        self._pending_loss: int | None = None   # for the next report that starts without its header
        self._reported_loss = 0                 # lost() count not yet matched by a seq gap

    # ------------------------------------------------------------ interface

    def feed(self, rec: KmsgRecord) -> list[OomReport]:
        """Take the next record; the reports it completes or adds to (usually none)."""
        out: list[OomReport] = []
        if self._last_seq is not None and rec.seq > self._last_seq + 1:
            gap = rec.seq - self._last_seq - 1
            if gap > self._reported_loss:
                self._note_loss(gap - self._reported_loss, out)
        self._reported_loss = 0
        self._last_seq = rec.seq
        if rec.facility not in (0, None):
            return out
        draft = self._open
        if draft is not None and rec.usec - draft.last_usec > self.idle_usec:
            self._close(out)
        lines = rec.message.split("\n")
        draft = self._open
        if rec.continuation and draft is not None and draft.last_kind in _CONTINUABLE:
            self._line(draft.last_text + lines[0], rec, out, replace=True)
            lines = lines[1:]
        for line in lines:
            self._line(line, rec, out)
        self._emit_ready(out)
        return out

    def lost(self, count: int | None) -> None:
        """The reader lost records (EPIPE): *count* of them, or None if unknown.
        A gap in the next record's seq is taken as the count if larger."""
        self._note_loss(count, None)
        self._reported_loss = count or 0

    def expire(self, now_usec: int) -> list[OomReport]:
        """Close the report in progress if its last line is older than
        ``idle_usec`` at kernel time *now_usec*; returns what that emits."""
        out: list[OomReport] = []
        if self._open is not None and now_usec - self._open.last_usec > self.idle_usec:
            self._close(out)
        while self._recent and now_usec - self._recent[0].last_usec > self.recent_usec:
            self._recent.popleft()
        return out

    # ------------------------------------------------------------ machinery

    def _note_loss(self, count: int | None, out: list[OomReport] | None) -> None:
        draft = self._open
        if draft is not None and not draft.finished:
            draft.add_loss(count)
            return
        if draft is not None:      # its kill was seen; what follows the loss is another report
            self._close(out if out is not None else [])
        self._pending_loss = (self._pending_loss or 0) + (count or 0)

    def _close(self, out: list[OomReport]) -> None:
        draft, self._open = self._open, None
        if draft is None:
            return
        if draft.emitted < 0 and draft.strong:
            out.append(draft.build(final=True))
            draft.emitted = draft.version
        if draft.emitted >= 0:
            self._recent.append(draft)

    def _emit_ready(self, out: list[OomReport]) -> None:
        draft = self._open
        if draft is not None and draft.strong and draft.finished and draft.emitted != draft.version:
            out.append(draft.build(final=False))
            draft.emitted = draft.version

    def _start(self, rec: KmsgRecord, header: bool, out: list[OomReport]) -> _Draft:
        self._close(out)
        draft = self._open = _Draft(rec.seq, rec.usec, header)
        if header:
            self._pending_loss = None
        elif self._pending_loss is not None:
            draft.lost, self._pending_loss = self._pending_loss, None
        return draft

    def _line(self, line: str, rec: KmsgRecord, out: list[OomReport], replace: bool = False) -> None:
        """One line; *replace*: it is the last line again, completed by a continuation record.
        Shapes are matched without trailing blanks, ``raw`` keeps them (a
        continuation record may begin right after one)."""
        raw_text = line.rstrip("\r")
        text = raw_text.rstrip()
        if not text:
            return
        m = _HEADER.match(text)
        if m:
            draft = self._open if replace and self._open else self._start(rec, True, out)
            self._header(draft, m)
            self._took(draft, rec, raw_text, "header", replace)
            return
        if self._reaper(text, rec, out):
            return
        draft = self._open
        kind = self._classify(draft, text, rec, out, replace)
        if kind is None:
            return
        draft = self._open
        assert draft is not None
        if kind != "row_quiet":
            self._took(draft, rec, raw_text, kind, replace)
        else:
            draft.last_usec = max(draft.last_usec, rec.usec)
            draft.last_kind = "row"
            draft.version += 1

    def _took(self, draft: _Draft, rec: KmsgRecord, text: str, kind: str, replace: bool) -> None:
        if replace and draft.raw and draft.raw[-1] == draft.last_text:
            draft.raw[-1] = text
        else:
            draft.add_raw(text)
        draft.last_text = text
        draft.last_usec = max(draft.last_usec, rec.usec)
        draft.last_kind = kind
        draft.version += 1

    def _open_for(self, draft: _Draft | None, rec: KmsgRecord, out: list[OomReport], kind: str,
                  strong: bool = True) -> _Draft:
        rank = _RANK[kind]
        if draft is None or rank < draft.rank:
            draft = self._start(rec, False, out)
        draft.rank = max(draft.rank, rank)
        draft.strong = draft.strong or strong
        return draft

    def _classify(self, draft: _Draft | None, text: str, rec: KmsgRecord,
                  out: list[OomReport], replace: bool = False) -> str | None:
        """Apply one line to the open report (opening one if the line can only
        be part of an OOM report); the kind of line, or None if it is not ours."""
        if (m := _KILLED.match(text)) is not None:
            if (draft is not None and draft.victims and not replace and "oom_group" not in draft.fields
                    and int(m.group("pid")) not in draft.victims):
                # Another kill, not a member of an oom.group kill: the kernel
                # rate-limits the report (10 headers per 5 s, oom_rs in
                # mm/oom_kill.c) but never the kill line, so a burst of kills
                # prints bare kill lines; each is a report of its own.
                draft = self._start(rec, False, out)
            draft = self._open_for(draft, rec, out, "killed")
            self._victim(draft, m, rec)
            draft.phase = "kill"
            return "killed"
        if (m := _KILL_LEGACY.match(text)) is not None:
            if draft is not None and "chosen" in draft.fields and not draft.victims and not replace:
                # the kernel chose again before a kill line: a burst whose
                # kill lines were lost (or left out of a paste)
                draft = self._start(rec, False, out)
            draft = self._open_for(draft, rec, out, "chosen")
            draft.legacy, draft.phase = True, "kill"
            draft.fields.setdefault("chosen_reason", m.group("reason"))
            draft.fields.setdefault("chosen", (int(m.group("pid")), m.group("comm")))
            return "chosen"
        if text.startswith("oom-kill:"):
            draft = self._open_for(draft, rec, out, "summary")
            self._summary(draft, text)
            draft.phase = "summary"
            return "summary"
        if (m := _OOM_GROUP.match(text)) is not None or text.startswith("Tasks in"):
            draft = self._open_for(draft, rec, out, "group")
            if m is not None:
                draft.fields["oom_group"] = m.group("cg")
            return "group"
        for pattern, reason in _NO_KILL:
            if pattern.match(text):
                draft = self._open_for(draft, rec, out, "no_kill")
                if not draft.victims:   # an oom.group member may be exiting already
                    draft.no_kill_reason = reason
                return "no_kill"
        if (m := _TASK_IN.match(text)) is not None:
            draft = self._open_for(draft, rec, out, "task_in")
            draft.fields.update(task_memcg=m.group("task"), oom_memcg=m.group("oom"), task_in=True)
            draft.legacy = True
            return "task_in"
        if (m := _COUNTER.match(text)) is not None:
            draft = self._open_for(draft, rec, out, "counter")
            if len(draft.counters) < 16:
                draft.counters[m.group("name")] = (int(m.group("usage")) * KIB, int(m.group("limit")) * KIB,
                                                   int(m.group("failcnt")))
            draft.phase = "memcg"
            return "counter"
        if text.startswith(_STATS_HEAD):
            draft = self._open_for(draft, rec, out, "stats_head")
            self._stats_head(draft, text[len(_STATS_HEAD):].lstrip(), again=replace)
            return "stats_head"
        if text == "Mem-Info:":
            draft = self._open_for(draft, rec, out, "meminfo_head", strong=False)
            draft.phase = "meminfo"
            return "meminfo_head"
        if text == _TASKS_STATE:
            draft = self._open_for(draft, rec, out, "tasks_state")
            draft.phase = "tasks"
            return "tasks_state"
        if _TABLE_HEADER.match(text):
            draft = self._open_for(draft, rec, out, "table_header")
            draft.columns = text.replace("[", " ").replace("]", " ").split()
            draft.table_seen, draft.phase = True, "tasks"
            return "table_header"
        if draft is None:
            if _OOM_LOOKING.search(text) and not _TRACE_LINE.match(text):
                draft = self._open_for(draft, rec, out, "unrecognised")
                return "unrecognised"
            return None
        return self._in_phase(draft, text)

    def _in_phase(self, draft: _Draft, text: str) -> str | None:
        phase = draft.phase
        if phase == "stats" and (m := _STAT_LINE.match(text)) is not None:
            if len(draft.stats) < MAX_STATS:
                draft.stats[m.group("key")] = int(m.group("value"))
            else:
                draft.drop("memcg_stats")
            return "stat"
        if phase == "tasks" and draft.columns is not None and (row := _task_row(draft.columns, text)):
            index = draft.row_count
            draft.row_count += 1
            item = (row.rss_pages or 0, -index, row)
            if len(draft.rows) < MAX_TASK_ROWS:
                heapq.heappush(draft.rows, item)
            else:
                heapq.heappushpop(draft.rows, item)
                draft.drop("tasks")
            if index >= MAX_RAW_TASK_ROWS:
                draft.drop("raw")
                return "row_quiet"
            return "row"
        if phase == "meminfo" and _MEMINFO_LINE.match(text):
            if len(draft.mem_info) < MAX_MEM_INFO_LINES:
                draft.mem_info.append(text)
            else:
                draft.drop("mem_info")
            return "meminfo"
        if phase == "trace":
            if (m := _CPU.match(text)) is not None:
                if draft.fields.get("invoker_comm") in (None, m.group("comm")) and "invoker_pid" not in draft.fields:
                    draft.fields["invoker_pid"] = int(m.group("pid"))
                    if (rel := _RELEASE.search(text)) is not None:
                        draft.fields["kernel_release"] = rel.group("rel")
                return "cpu"
            if (m := _CPUSET_LEGACY.match(text)) is not None and m.group("comm") == draft.fields.get("invoker_comm"):
                draft.fields["cpuset"] = m.group("cpuset")
                if m.group("mems") is not None:
                    draft.fields["mems_allowed"] = m.group("mems")
                return "cpuset"
            if text == "COMPACTION is disabled!!!" or _TRACE_LINE.match(text):
                return "trace"
        if _OOM_LOOKING.search(text) and not _TRACE_LINE.match(text):
            draft.strong = True
            return "unrecognised"
        return None

    # ------------------------------------------------------------ line parsers

    @staticmethod
    def _header(draft: _Draft, m: re.Match[str]) -> None:
        f = draft.fields
        f["invoker_comm"] = m.group("comm")
        for part in m.group("rest").split(", "):
            key, _, value = part.partition("=")
            try:
                if key == "gfp_mask":
                    f["gfp_mask"] = value
                elif key == "nodemask":      # <= 4.19 prints it here
                    f["nodemask"] = value
                    draft.legacy = True
                elif key in ("order", "oom_score_adj"):
                    f["order" if key == "order" else "invoker_oom_score_adj"] = int(value)
            except ValueError:
                continue

    @staticmethod
    def _summary(draft: _Draft, text: str) -> None:
        fields = _summary_fields(text)
        f = draft.fields
        for key in ("constraint", "nodemask", "cpuset", "mems_allowed", "oom_memcg", "task_memcg"):
            if fields.get(key) is not None:
                f[key] = fields[key]
        f["summary"] = True
        if "global_oom" in fields:
            f["global_oom"] = True
        pid, uid = fields.get("pid"), fields.get("uid")
        if pid is not None and uid is not None and pid.isdigit() and uid.isdigit():
            pid, uid = int(pid), int(uid)
            f["summary_uid"] = (pid, uid)
            f["summary_victim"] = (pid, fields.get("task"), uid)
            if pid in draft.victims and draft.victims[pid].uid is None:
                draft.victims[pid] = dataclasses.replace(draft.victims[pid], uid=uid)

    def _stats_head(self, draft: _Draft, rest: str, again: bool) -> None:
        """*again*: the same line, completed by a continuation record."""
        if again:
            draft.stats_for = None
            draft.stats.clear()
        if draft.stats_for is not None:
            draft.phase = "stats_other"     # <= 4.19 prints one line per cgroup below the OOM one
            return
        m = _STATS_INLINE.match(rest)
        if m is None:                       # "/X:", one "key value" per line after it
            draft.stats_for, draft.phase = (rest[:-1] if rest.endswith(":") else rest), "stats"
            return
        draft.stats_for = m.group("cg")
        for pair in _STAT_PAIR.finditer(m.group("stats")):
            if len(draft.stats) < MAX_STATS:
                draft.stats[pair.group("key")] = int(pair.group("value")) * KIB
        draft.phase = "memcg"

    @staticmethod
    def _victim(draft: _Draft, m: re.Match[str], rec: KmsgRecord) -> None:
        pid = int(m.group("pid"))
        if pid in draft.victims:
            return          # an oom.group kill names its chosen victim again
        if len(draft.victims) >= MAX_VICTIMS:
            draft.drop("victims")
            return
        sizes = _kb_fields(m.group("rest"))
        uid = sizes.get("uid") if m.group("uid") is None else int(m.group("uid"))
        summary = draft.fields.get("summary_uid")
        if uid is None and isinstance(summary, tuple) and summary[0] == pid:
            uid = summary[1]
        draft.victims[pid] = Victim(
            pid=pid, comm=m.group("comm"), uid=uid, total_vm=sizes.get("total-vm"),
            anon_rss=sizes.get("anon-rss"), file_rss=sizes.get("file-rss"), shmem_rss=sizes.get("shmem-rss"),
            pgtables=sizes.get("pgtables"), oom_score_adj=sizes.get("oom_score_adj"),
            usec=rec.usec, seq=rec.seq, reason=m.group("reason"))

    def _reaper(self, text: str, rec: KmsgRecord, out: list[OomReport]) -> bool:
        m = _REAPED.match(text) or _UNREAPED.match(text)
        if m is None:
            return False
        pid = int(m.group("pid"))
        draft = self._owner(pid)
        if draft is None:
            return True     # belongs to nothing we saw
        if len(draft.reaped) >= MAX_REAPED:
            draft.drop("reaped")
            return True
        sizes = _kb_fields(m.groupdict().get("rest") or "")
        draft.reaped.append(Reaped(pid, m.group("comm"), sizes.get("anon-rss"), sizes.get("file-rss"),
                                   sizes.get("shmem-rss"), rec.usec, rec.seq, ok=m.re is _REAPED))
        draft.add_raw(text)
        draft.version += 1
        draft.last_kind = "reaped"
        if draft is self._open:
            draft.last_usec = max(draft.last_usec, rec.usec)
        elif draft.emitted >= 0:
            out.append(draft.build(final=True))
            draft.emitted = draft.version
        return True

    def _owner(self, pid: int) -> _Draft | None:
        if self._open is not None and pid in self._open.victims:
            return self._open
        for draft in reversed(self._recent):
            if pid in draft.victims:
                return draft
        return None


def _task_row(columns: list[str], text: str) -> TaskRow | None:
    """A table row under *columns* (the header's words, ``pid`` first and
    ``name`` last), or None if the line is not one."""
    m = _TABLE_ROW.match(text)
    if m is None:
        return None
    numeric = columns[1:-1]
    parts = m.group("rest").split(None, len(numeric))
    if len(parts) < len(numeric):
        return None
    try:
        values = dict(zip(numeric, (int(p) for p in parts[:len(numeric)])))
    except ValueError:
        return None
    name = parts[len(numeric)] if len(parts) > len(numeric) else ""
    return TaskRow(
        pid=int(m.group("pid")), uid=values.get("uid"), tgid=values.get("tgid"),
        total_vm_pages=values.get("total_vm"), rss_pages=values.get("rss"),
        rss_anon_pages=values.get("rss_anon"), rss_file_pages=values.get("rss_file"),
        rss_shmem_pages=values.get("rss_shmem"), pgtables_bytes=values.get("pgtables_bytes"),
        swapents=values.get("swapents"), oom_score_adj=values.get("oom_score_adj"), name=name)


# The REASON before "Killed process" names the kind of OOM (mm/oom_kill.c,
# out_of_memory(): "Memory cgroup out of memory" when is_memcg_oom(), else
# "Out of memory"; the same words before "Kill process" up to 4.19).
_MEMCG_REASON = "Memory cgroup out of memory"
_GLOBAL_REASON = "Out of memory"


def infer_constraint(report: OomReport) -> tuple[str | None, str | None]:
    """(constraint, how it is known) for a report: the ``oom-kill:`` line's
    own word when printed ("kernel"), else what the rest of the report implies,
    with the line that implies it; (None, None) when nothing does.

    A kernel before 5.0 prints no constraint; after a burst of kills, or in a
    paste cut short, only the ``Killed process`` line may be there.  "Out of
    memory" is printed for cpuset and memory-policy OOMs too: it is taken as
    CONSTRAINT_NONE, and the reason says so."""
    if report.constraint:
        return report.constraint, "kernel"
    if report.legacy_memcg_line:
        return "CONSTRAINT_MEMCG", "'Task in ... killed as a result of limit of ...' (before 5.0)"
    if report.memcg_counters.get("memory") is not None:
        return "CONSTRAINT_MEMCG", "the memory cgroup's 'memory: usage ..., limit ...' line"
    reasons = [v.reason for v in report.victims if v.reason] + \
        ([report.chosen_reason] if report.chosen_reason else [])
    if any(r.endswith(_MEMCG_REASON) for r in reasons):
        return "CONSTRAINT_MEMCG", f"the kill line's '{_MEMCG_REASON}'"
    if report.mem_info and not report.memcg_counters:
        return "CONSTRAINT_NONE", "'Mem-Info:' (a system-wide report)"
    if any(r.endswith(_GLOBAL_REASON) for r in reasons):
        return "CONSTRAINT_NONE", (f"the kill line's '{_GLOBAL_REASON}' (a cpuset or memory-policy "
                                   "OOM prints the same words)")
    return None, None


# Complete forms of the lines a report's facts come from: a pasted line that
# begins like one of them but is not complete was wrapped (incidents.explain).
_STARTS_KNOWN = re.compile(r"^(?:.*?: )?Kill(?:ed)? process \d|^oom-kill:|^.* invoked oom-killer:|^Task in /|"
                           r"^(?:memory|memory\+swap|swap|kmem): usage ")
_COMPLETE = (
    re.compile(r"^(?:.*?: )?Killed process \d+(?:, UID \d+,)? \(.*\).*(?:-rss:\d+kB|oom_score_adj:-?\d+|"
               r"pgtables:\d+kB)$"),
    _KILL_LEGACY, _TASK_IN, _COUNTER,
    re.compile(r"^oom-kill:.*,(?:task=.*,pid=\d+,uid=\d+|global_oom|task_memcg=\S+)$"),
    re.compile(r"^.* invoked oom-killer: .*oom_(?:score_)?adj=-?\d+$"),   # oom_adj up to 2.6.35
)


def begins_a_fact_line(text: str) -> bool:
    """Whether *text* begins one of the lines a report's facts come from."""
    return _STARTS_KNOWN.match(text) is not None


def complete_line(text: str) -> bool:
    """Whether *text* is one of those lines whole (not cut by a wrap)."""
    return any(p.match(text) for p in _COMPLETE)
