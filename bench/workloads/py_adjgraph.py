"""A social-graph loader that ingests edge batches and runs periodic BFS reports.

    python3 py_adjgraph.py SECONDS EDGES_PER_S REPORT_EVERY
    e.g. /usr/bin/python3 bench/workloads/py_adjgraph.py 60 60000 12

Paced on the monotonic clock in 0.1 s ticks, the loader receives
EDGES_PER_S "follows" edges a second between user ids (the follower is a
new or recent user, the followee skewed towards early, popular users; from
random.Random(31): the same edges every run) and stores them in an
adjacency dict (user id -> list of followee ids) and, for the reverse
direction, a dict of sets (followee -> followers).  New users join at a
rate that grows with the graph, so the dicts grow steadily, with glibc and
dict resizes adding small steps.  Every REPORT_EVERY seconds a report does
a breadth-first search from user 0 over the followers sets (a visited set
and a deque of the whole reachable graph: a temporary spike above the
line, freed after) and prints the reach.  Nothing is written to disk.
"""
import collections
import random
import sys
import time


def main():
    seconds, rate, every = float(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    rng = random.Random(31)
    follows = {}
    followers = collections.defaultdict(set)
    users = 1000
    t0 = time.monotonic()
    tick = 0
    made = 0
    next_report = every
    while True:
        due = t0 + tick * 0.1
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        t = due - t0
        if t >= seconds:
            break
        want = int(rate * (t + 0.1))
        while made < want:
            if rng.random() < 0.05:
                users += 1
            a = users - 1 - int(rng.random() ** 3 * users)
            b = int(rng.random() ** 4 * users)
            follows.setdefault(a, []).append(b)
            followers[b].add(a)
            made += 1
        if t >= next_report:
            seen = {0}
            queue = collections.deque([0])
            order = []
            while queue:
                u = queue.popleft()
                order.append(u)
                for v in followers.get(u, ()):
                    if v not in seen:
                        seen.add(v)
                        queue.append(v)
            print(f"t={t:.1f} edges={made} users={users} reach={len(order)}", flush=True)
            del seen, queue, order
            next_report += every
        tick += 1
    print(f"done edges={made} users={users}", flush=True)


if __name__ == "__main__":
    main()
