"""A token index of interned strings built from generated text, grown and pruned.

    python3 py_intern.py [--seconds 120] [--docs 800] [--words 60000]
        [--tokens 120] [--rare 25] [--rare-space 3000000]
        [--prune-every 15] [--min-count 2] [--postings-cap 0]

A search/analytics job indexing a stream of documents in pure Python (run
with Debian's /usr/bin/python3).  Paced on CLOCK_MONOTONIC in 100 ms ticks it
"receives" ``--docs`` documents a second.  A document is text generated from
a seeded ``random.Random(5)``: ``--tokens`` words drawn from a Zipf-weighted
vocabulary of ``--words`` made-up words, plus ``--rare`` rare tokens (user
names, ids, typos: a syllable and a number out of ``--rare-space``, so a
rare token comes back now and then, more often as the run goes on).  The
text is lower-cased and split, every token ``sys.intern``-ed and indexed in
a dict: token -> [count, last doc, postings list of doc ids] (one posting
per document a token occurs in; ``--postings-cap`` > 0 caps a list).

Every ``--prune-every`` seconds the index is pruned: every token seen fewer
than ``--min-count`` times is deleted (the rare tokens seen once, most of
the index's entries).  The freed strings and lists go back to CPython's
small-object allocator, which returns an arena to the kernel only when all
of it is free; the survivors (frequent words and rare tokens seen twice)
and the postings keep growing.  The curve: a climb between prunes, what a
prune gives back (little: pymalloc arenas are shared with survivors), the
freed room being reused, and a climbing trend as survivors accumulate.
"""

import argparse
import itertools
import random
import sys
import time

SYLL = ["ka", "lo", "mi", "re", "tu", "sa", "ne", "po", "vi", "da", "gor", "fen",
        "ul", "ber", "xi", "qua", "zo", "th", "an", "es"]


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=120.0)
    p.add_argument("--docs", type=float, default=800.0, help="documents a second")
    p.add_argument("--words", type=int, default=60000)
    p.add_argument("--tokens", type=int, default=120)
    p.add_argument("--rare", type=int, default=25)
    p.add_argument("--rare-space", type=int, default=3_000_000)
    p.add_argument("--prune-every", type=float, default=15.0)
    p.add_argument("--min-count", type=int, default=2)
    p.add_argument("--postings-cap", type=int, default=0)
    a = p.parse_args()
    rng = random.Random(5)
    vocab = sorted({"".join(rng.choice(SYLL) for _ in range(rng.randint(2, 5)))
                    for _ in range(a.words * 2)})[: a.words]
    rng.shuffle(vocab)
    cum = list(itertools.accumulate(1.0 / (r + 1) for r in range(len(vocab))))
    index = {}
    intern = sys.intern
    cap = a.postings_cap or (1 << 62)
    t0 = time.monotonic()
    next_prune = t0 + a.prune_every
    doc_id = 0
    owed = 0.0
    tick = 0
    while True:
        due = t0 + tick * 0.1
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        if due - t0 >= a.seconds:
            break
        owed += a.docs * 0.1
        while owed >= 1.0:
            words = rng.choices(vocab, cum_weights=cum, k=a.tokens)
            for _ in range(a.rare):
                words.insert(rng.randrange(len(words)),
                             f"{rng.choice(SYLL).capitalize()}{rng.randrange(a.rare_space)}")
            text = " ".join(words)
            for tok in text.lower().split():
                tok = intern(tok)
                e = index.get(tok)
                if e is None:
                    index[tok] = [1, doc_id, [doc_id]]
                else:
                    e[0] += 1
                    if e[1] != doc_id:
                        e[1] = doc_id
                        if len(e[2]) < cap:
                            e[2].append(doc_id)
            doc_id += 1
            owed -= 1.0
        tick += 1
        if time.monotonic() >= next_prune:
            before = len(index)
            ts = time.monotonic()
            for tok in [t for t, e in index.items() if e[0] < a.min_count]:
                del index[tok]
            print(f"{ts - t0:.1f}s doc {doc_id}: pruned {before - len(index)} of {before} "
                  f"tokens in {time.monotonic() - ts:.2f}s, {len(index)} kept", flush=True)
            next_prune += a.prune_every
        elif tick % 50 == 0:
            print(f"{due - t0:.0f}s doc {doc_id}: {len(index)} tokens, "
                  f"behind {time.monotonic() - due:.2f}s", flush=True)
    postings = sum(len(e[2]) for e in index.values())
    print(f"done: {doc_id} docs, {len(index)} tokens, {postings} postings", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
