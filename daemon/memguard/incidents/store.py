"""Incident reports on disk: one JSON file per incident, written atomically.

Layout: ``<state_dir>/incidents/<id>.json`` (directory mode 0700, files 0600:
a report holds command lines).  An incident is written at the first sighting
of a kill and rewritten as other probes report it; every write goes through a
temporary file in the same directory::

    .tmp-<id>.<pid>.<random>   open(O_CREAT|O_EXCL, 0600)   hook "opened"
                               write every byte             hook "written"
                               stamp mtime, fsync           hook "fsynced"
                                                            hook "before_rename"
    <id>.json                  rename(2) over the old one   hook "renamed"
                               fsync the directory

so a reader, or the daemon after a crash at any point, finds either the whole
old version or the whole new one, never a mix.  A crash leaves at most a
``.tmp-*`` file, which :meth:`IncidentStore.recover` removes at start-up.

The ids are the caller's (``20261125T101530.123Z-4711-oom``): sortable, so
"newest first" is a reverse sort of the names.  Retention keeps the newest
``max_count`` and drops any older than ``max_age_seconds``; age is the file's
mtime, which each write stamps with the store's clock (so a test's fake clock
drives retention, and in production it is the time of the last write).  An
incident this store wrote is aged by the monotonic clock instead: a wall
clock stepped forward (NTP correcting a clock that booted years behind)
does not make what was written a minute ago look months old.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import secrets
import time
from dataclasses import dataclass
from typing import Callable

SUFFIX = ".json"
TMP_PREFIX = ".tmp-"
MAX_ID_LENGTH = 128  # + ".tmp-" + ".<pid>.<8 hex>" stays well under NAME_MAX (255)
_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
# Retention by age needs a directory scan; once an hour is plenty against a
# limit counted in days.  Retention by count runs as soon as the count is over.
AGE_PRUNE_INTERVAL = 3600.0

Hook = Callable[[str, str], None]
WRITE_POINTS = ("opened", "written", "fsynced", "before_rename", "renamed")


class CorruptIncidentError(ValueError):
    """An incident file that is not a JSON object (truncated, not UTF-8, ...)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"incident file {path} is corrupt: {reason}; move it away or delete it")
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class IncidentSummary:
    """One incident as :meth:`IncidentStore.list` shows it.

    ``fields`` holds the document's top-level scalar values (str, number,
    bool, null: ``kind``, ``state``, ``time``, ``domain``, ...); nested
    lists and objects are left out.  ``mtime`` is the time of the last write
    on the store's clock; ``uids`` the owners of its victims (who may read
    it where incidents are private).
    """

    id: str
    path: str
    size_bytes: int
    mtime: float
    fields: dict
    uids: frozenset = frozenset()


@dataclass(frozen=True)
class Listing:
    """What :meth:`IncidentStore.list` found: readable incidents newest first,
    and the ids of files that could not be parsed (skipped, never fatal)."""

    incidents: tuple[IncidentSummary, ...]
    corrupt: tuple[str, ...]


def check_id(incident_id: str) -> str:
    """Return *incident_id* if it is a safe file name, else raise ValueError.

    Allowed: letters, digits, ``-``, ``_`` and ``.``, not starting with ``.``
    (no hidden files, no ``..``, no temporary-file names), 1 to
    MAX_ID_LENGTH characters.  A ``/`` can never pass, so an id cannot leave
    the directory.
    """
    if not isinstance(incident_id, str) or not _ID.fullmatch(incident_id) \
            or len(incident_id) > MAX_ID_LENGTH:
        raise ValueError(f"bad incident id {incident_id!r}: use 1 to {MAX_ID_LENGTH} letters, "
                         "digits, '-', '_' or '.', not starting with '.'")
    return incident_id


def encode(document: dict) -> bytes:
    """The bytes written for *document*: UTF-8 JSON and a newline.

    Raises ValueError/TypeError, before anything touches the disk, for what
    JSON cannot hold (NaN, infinity, sets, ...): readers such as jq reject
    Python's ``NaN`` extension, so the builder must write null instead.
    """
    if not isinstance(document, dict):
        raise TypeError(f"an incident document is a dict, not {type(document).__name__}")
    return (json.dumps(document, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")


def decode(data: bytes, path: str) -> dict:
    """The document in *data* read from *path*; CorruptIncidentError naming
    the file when it is not UTF-8 JSON holding an object."""
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptIncidentError(path, str(e)) from None
    if not isinstance(document, dict):
        raise CorruptIncidentError(path, f"a JSON {type(document).__name__}, not an object")
    return document


class IncidentStore:
    """The incident directory.  One daemon writes it; any number may read.

    write, remove, prune and recover belong to one thread (the daemon's
    writer); list, load and ids may run on others at the same time: they
    skip a file removed under them and never see a half-written one.
    """

    def __init__(self, directory: str, *, max_count: int = 1000,
                 max_age_seconds: float = 90 * 86400, hook: Hook | None = None,
                 clock: Callable[[], float] = time.time, mono: Callable[[], float] = time.monotonic) -> None:
        if max_count < 1 or not max_age_seconds > 0:
            raise ValueError("max_count must be >= 1 and max_age_seconds > 0")
        self.directory = os.fspath(directory)
        self.max_count = max_count
        self.max_age_seconds = max_age_seconds
        self._hook = hook
        self._clock = clock
        self._mono = mono
        self._written_at: dict[str, float] = {}   # id -> the monotonic time this store last wrote it
        self._count: int | None = None   # sealed files at the last scan, then counted
        self._next_age_prune = -math.inf          # monotonic
        # list()'s summaries by id: (inode, mtime_ns, size) and the summary,
        # None for a corrupt file.  Holds only the files of the last listing.
        self._summaries: dict[str, tuple[tuple, IncidentSummary | None]] = {}
        _make_directory(self.directory)

    def path(self, incident_id: str) -> str:
        return os.path.join(self.directory, check_id(incident_id) + SUFFIX)

    # -- writing -----------------------------------------------------------------

    def write(self, incident_id: str, document: dict) -> str:
        """Write (or rewrite) one incident atomically; return its path.

        Raises ValueError for a bad id or a document JSON cannot hold, and
        OSError naming the directory when the disk refuses (not writable,
        full): the temporary file is then removed and the previous version,
        if any, is left as it was.  An exception raised by the test hook
        that is not an OSError stands for the process dying there: nothing
        is cleaned up, as nothing would be.
        """
        path = self.path(incident_id)
        data = encode(document)
        tmp = os.path.join(self.directory,
                           f"{TMP_PREFIX}{incident_id}.{os.getpid()}.{secrets.token_hex(4)}")
        existed = os.path.lexists(path)
        try:
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise self._error(e, f"cannot create incident {incident_id}") from e
        try:
            try:
                self._at("opened", tmp)
                _write_all(fd, data)
                self._at("written", tmp)
                stamp = self._clock()
                os.utime(fd, (stamp, stamp))
                os.fsync(fd)
                self._at("fsynced", tmp)
            finally:
                os.close(fd)
            self._at("before_rename", tmp)
            os.replace(tmp, path)
        except OSError as e:
            self._discard(tmp, e)
            raise self._error(e, f"cannot write incident {incident_id}") from e
        self._at("renamed", path)
        self._written_at[incident_id] = self._mono()
        try:
            _fsync_directory(self.directory)
        except OSError as e:
            raise self._error(e, f"incident {incident_id} written but not yet durable") from e
        self._after_write(existed)
        return path

    def _at(self, point: str, path: str) -> None:
        if self._hook is not None:
            self._hook(point, path)

    def _discard(self, tmp: str, cause: OSError) -> None:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        except OSError as e:
            cause.add_note(f"the temporary file {tmp} could not be removed ({e.strerror}); "
                           "recover() removes it at the next start")

    def _error(self, e: OSError, what: str) -> OSError:
        """*e* again, its message naming the directory and saying how to fix it."""
        if e.errno is None:
            return OSError(f"{what} in {self.directory}: {e}")
        hint = {errno.EACCES: "; the directory must be writable by the user memguardd runs as",
                errno.EPERM: "; the directory must be writable by the user memguardd runs as",
                errno.EROFS: "; the state directory is on a read-only file system",
                errno.ENOSPC: "; the file system is full (the previous version is kept)",
                errno.EDQUOT: "; the disk quota is exhausted (the previous version is kept)",
                }.get(e.errno, "")
        return OSError(e.errno, f"{what} in {self.directory}: {e.strerror}{hint}",
                       e.filename or self.directory)

    def _after_write(self, existed: bool) -> None:
        if self._count is not None and not existed:
            self._count += 1
        if self._count is None or self._count > self.max_count or self._mono() >= self._next_age_prune:
            self.prune()

    def remove(self, incident_id: str) -> bool:
        """Remove one incident; return False when there was none.

        Raises ValueError for a bad id and OSError naming the directory when
        the file cannot be removed.
        """
        try:
            os.unlink(self.path(incident_id))
        except FileNotFoundError:
            return False
        except OSError as e:
            raise self._error(e, f"cannot remove incident {incident_id}") from e
        self._written_at.pop(incident_id, None)
        _fsync_directory(self.directory)
        if self._count is not None:
            self._count -= 1
        return True

    # -- start-up and retention --------------------------------------------------

    def recover(self) -> int:
        """Remove the temporary files a crash left; return how many.

        Call it at start-up, before the first write: a sealed ``<id>.json``
        is never touched.  Returns 0 when there are none.
        """
        removed = 0
        with os.scandir(self.directory) as entries:
            for entry in entries:
                if entry.name.startswith(TMP_PREFIX) and not entry.is_dir(follow_symlinks=False):
                    try:
                        os.unlink(entry.path)
                    except FileNotFoundError:
                        continue
                    removed += 1
        return removed

    def prune(self, now: float | None = None) -> list[str]:
        """Remove incidents beyond the newest ``max_count`` or last written
        more than ``max_age_seconds`` before *now* (the store's clock when
        None); return the removed ids, newest first (empty when none)."""
        now = self._clock() if now is None else now
        mono = self._mono()
        sealed = sorted(self._scan(), key=lambda e: e[0], reverse=True)
        cutoff = now - self.max_age_seconds

        def too_old(name: str, entry: os.DirEntry) -> bool:
            if name in self._written_at:
                return mono - self._written_at[name] > self.max_age_seconds
            return _mtime(entry, cutoff) < cutoff
        removed = [name for i, (name, entry) in enumerate(sealed) if i >= self.max_count or too_old(name, entry)]
        for incident_id in removed:
            try:
                os.unlink(os.path.join(self.directory, incident_id + SUFFIX))
            except FileNotFoundError:
                pass
            except OSError as e:
                raise self._error(e, f"cannot remove old incident {incident_id}") from e
            self._written_at.pop(incident_id, None)
        if removed:
            _fsync_directory(self.directory)
        self._count = len(sealed) - len(removed)
        self._next_age_prune = mono + AGE_PRUNE_INTERVAL
        return removed

    # -- reading -----------------------------------------------------------------

    def _scan(self) -> list[tuple[str, os.DirEntry]]:
        out = []
        with os.scandir(self.directory) as entries:
            for entry in entries:
                name = entry.name
                if name.endswith(SUFFIX) and entry.is_file(follow_symlinks=False):
                    stem = name[:-len(SUFFIX)]
                    if _ID.fullmatch(stem) and len(stem) <= MAX_ID_LENGTH:
                        out.append((stem, entry))
        return out

    def ids(self) -> list[str]:
        """Ids of the sealed incident files, newest first (names only, no
        file is opened); empty when there are none."""
        return sorted((name for name, _ in self._scan()), reverse=True)

    def load(self, incident_id: str) -> dict:
        """The document of one incident.

        Raises ValueError for a bad id, FileNotFoundError when there is no
        such incident, CorruptIncidentError (a ValueError) naming the file
        when it does not parse.
        """
        path = self.path(incident_id)
        with open(path, "rb") as f:
            return decode(f.read(), path)

    def list(self) -> Listing:
        """Every incident, newest first, with its top-level scalar fields.

        A file that does not parse is skipped and its id listed in
        ``corrupt``; one removed meanwhile is skipped silently.  Each file is
        parsed once: its summary is kept, keyed by inode, mtime and size, so
        a later call only stats the files and parses those rewritten since
        (1000 incidents of 48 KB: ~0.4 s the first time, ~10 ms after, on a
        2-core VM).  Raises OSError for a file it may not read.
        """
        found, corrupt, summaries = [], [], {}
        for incident_id, entry in sorted(self._scan(), key=lambda e: e[0], reverse=True):
            try:
                st = entry.stat(follow_symlinks=False)
                known = self._summaries.get(incident_id)
                if known is None or known[0] != _key(st):
                    known = _summarize(incident_id, entry.path)
            except FileNotFoundError:
                continue
            summaries[incident_id] = known
            if known[1] is None:
                corrupt.append(incident_id)
            else:
                found.append(known[1])
        self._summaries = summaries
        return Listing(tuple(found), tuple(corrupt))


def _key(st: os.stat_result) -> tuple[int, int, int]:
    """What changes when a file is rewritten (a rename brings a new inode)."""
    return st.st_ino, st.st_mtime_ns, st.st_size


def _summarize(incident_id: str, path: str) -> tuple[tuple, IncidentSummary | None]:
    """The file's key and summary; None for the summary of a corrupt file."""
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        data = f.read()
    try:
        document = decode(data, path)
    except CorruptIncidentError:
        return _key(st), None
    fields = {k: v for k, v in document.items()
              if v is None or isinstance(v, (str, int, float, bool))}
    victims = document.get("victims")
    uids = frozenset(v["uid"] for v in (victims if isinstance(victims, list) else ())
                     if isinstance(v, dict) and isinstance(v.get("uid"), int))
    return _key(st), IncidentSummary(incident_id, path, st.st_size, st.st_mtime, fields, uids)


def _mtime(entry: os.DirEntry, default: float) -> float:
    """The entry's mtime; *default* (never pruned by age) when it vanished."""
    try:
        return entry.stat(follow_symlinks=False).st_mtime
    except FileNotFoundError:
        return default


def _make_directory(directory: str) -> None:
    """Create *directory* with mode 0700 (parents as needed) when missing.

    An existing directory keeps the mode its owner gave it.  Raises OSError
    naming the path when it cannot be created or is not a directory.
    """
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        if not os.path.isdir(directory):
            raise NotADirectoryError(errno.ENOTDIR, "the incident directory is not a directory",
                                     directory) from None
        return
    except FileNotFoundError:
        os.makedirs(os.path.dirname(directory) or ".", exist_ok=True)
        os.mkdir(directory, 0o700)
    os.chmod(directory, 0o700)  # exactly 0700 whatever the umask


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_directory(directory: str) -> None:
    """Make a rename or unlink in *directory* durable (fsync of the directory)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
