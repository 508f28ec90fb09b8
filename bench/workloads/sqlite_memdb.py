"""An in-memory SQLite database (Python's stdlib sqlite3) filled, indexed and queried.

    python3 sqlite_memdb.py [--rows 2000000] [--rate 40000] [--batch 2000]
        [--payload 120] [--query-every 5] [--hold 20] [--seed 0]

An ingest job keeps an event table in ``sqlite3.connect(":memory:")``:
``events(id INTEGER PRIMARY KEY, user TEXT, ts INTEGER, kind TEXT,
amount REAL, payload TEXT)``.  Rows are generated (seeded ``random``:
~50k users drawn with a skew, 12 kinds, a ``--payload``-character text
field of random letters) and inserted in transactions of ``--batch`` rows,
paced at ``--rate`` rows a second on CLOCK_MONOTONIC (slower if the CPU
cannot keep up).  An in-memory database keeps every page in SQLite's heap
(malloc), so the working set climbs with the row count, in small steps, one
commit each.

Every ``--query-every`` seconds of ingest a "dashboard" query runs
(``GROUP BY user`` over the last 100k rows, ordered by total; its sorter
and temporary b-tree are short spikes over the base).  When ``--rows`` are
in, two indexes are built (``(user, ts)`` and ``(kind, amount)``: each a
fast step up of roughly a third of the table's size, plus the sorter's
scratch while it builds), ``ANALYZE`` runs, and then the dashboard queries
run back to back (uses the indexes) for ``--hold`` seconds before the
database is closed.

Pure Python and SQLite on Debian's /usr/bin/python3 (sqlite 3.40); logs
rows and the cgroup's usage once a second.  With a limit under what the
table and its indexes need, the kernel's OOM killer ends it during the fill
or at the index build.
"""

import argparse
import os
import random
import sqlite3
import string
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _mem import MIB, log, own_memory_cgroup, read_int, sleep_until  # noqa: E402

KINDS = ["view", "click", "cart", "buy", "refund", "login", "logout", "search",
         "share", "rate", "follow", "report"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=2_000_000)
    p.add_argument("--rate", type=int, default=40_000, help="rows a second (a target)")
    p.add_argument("--batch", type=int, default=2000, help="rows a transaction")
    p.add_argument("--payload", type=int, default=120, help="characters of payload text a row")
    p.add_argument("--query-every", type=float, default=5.0)
    p.add_argument("--hold", type=float, default=20.0, help="seconds of queries after indexing")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    rnd = random.Random(args.seed)
    cg = os.path.join(own_memory_cgroup(), "memory.usage_in_bytes")
    letters = string.ascii_letters
    # a pool of payload texts to slice from: random, so pages do not compress or dedupe
    pool = "".join(rnd.choices(letters, k=1 << 20))

    db = sqlite3.connect(":memory:")
    db.execute("PRAGMA cache_size = -2000000")  # in-memory: pages stay in the heap anyway
    db.execute("CREATE TABLE events(id INTEGER PRIMARY KEY, user TEXT, ts INTEGER, "
               "kind TEXT, amount REAL, payload TEXT)")
    dashboard = ("SELECT user, count(*), sum(amount) FROM events WHERE id > ? "
                 "GROUP BY user ORDER BY 3 DESC LIMIT 20")
    start = time.monotonic()
    next_log = start + 1.0
    next_query = start + args.query_every
    done = 0
    ts = 1_700_000_000_000
    while done < args.rows:
        n = min(args.batch, args.rows - done)
        rows = []
        for i in range(n):
            ts += rnd.randint(1, 40)
            u = int(rnd.paretovariate(1.2)) % 50_000
            off = rnd.randrange(0, len(pool) - args.payload)
            rows.append((done + i + 1, f"user-{u:05d}", ts, rnd.choice(KINDS),
                         round(rnd.random() * 200, 2), pool[off:off + args.payload]))
        with db:
            db.executemany("INSERT INTO events VALUES (?,?,?,?,?,?)", rows)
        done += n
        now = time.monotonic()
        if now >= next_query:
            db.execute(dashboard, (max(0, done - 100_000),)).fetchall()
            next_query += args.query_every
        if now >= next_log:
            log(f"t={now - start:.0f}s rows {done} usage {read_int(cg) / MIB:.0f}MiB")
            next_log += 1.0
        sleep_until(start + done / args.rate)
    log(f"t={time.monotonic() - start:.0f}s filled {done} rows, usage {read_int(cg) / MIB:.0f}MiB; indexing")
    db.execute("CREATE INDEX ev_user_ts ON events(user, ts)")
    log(f"t={time.monotonic() - start:.0f}s index 1 usage {read_int(cg) / MIB:.0f}MiB")
    db.execute("CREATE INDEX ev_kind_amount ON events(kind, amount)")
    log(f"t={time.monotonic() - start:.0f}s index 2 usage {read_int(cg) / MIB:.0f}MiB")
    db.execute("ANALYZE")
    hold_end = time.monotonic() + args.hold
    queries = 0
    while time.monotonic() < hold_end:
        u = f"user-{int(rnd.paretovariate(1.2)) % 50_000:05d}"
        db.execute("SELECT count(*), sum(amount), max(ts) FROM events WHERE user = ?", (u,)).fetchall()
        db.execute("SELECT kind, count(*), avg(amount) FROM events WHERE kind = ? AND amount > ? "
                   "GROUP BY kind", (rnd.choice(KINDS), rnd.random() * 190)).fetchall()
        db.execute(dashboard, (rnd.randrange(0, done),)).fetchall()
        queries += 3
        now = time.monotonic()
        if now >= next_log:
            log(f"t={now - start:.0f}s queries {queries} usage {read_int(cg) / MIB:.0f}MiB")
            next_log = now + 1.0
    db.close()
    log(f"done: {done} rows, {queries} queries")


if __name__ == "__main__":
    main()
