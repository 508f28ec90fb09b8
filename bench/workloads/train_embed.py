"""An embedding-heavy recommender trained on random ids on CPU: steady, or
with a per-id feature cache that fills up to a maximum size.

    /tmp/torchvenv/bin/python train_embed.py [--seconds 150] [--steps N]
        [--tables 4] [--rows 250000] [--dim 48] [--batch 4096]
        [--cache-max 0] [--cache-dim 256] [--cache-per-step 512] [--users 10000000]

``--tables`` ``nn.EmbeddingBag`` tables of ``--rows`` x ``--dim`` (dense
gradients), summed bags of 8 random ids per table, then a 2-layer MLP and
a click logit, Adam.  With the defaults the tables are 183 MiB, Adam's two
moments another 366 MiB, and every backward allocates a dense gradient as
large as the tables (freed by ``zero_grad(set_to_none=True)``): a tall
per-step sawtooth on a high flat base.

``--cache-max N`` adds a memoising cache: after each step the user-tower
output of the first ``--cache-per-step`` rows of the batch (a
``--cache-dim`` float vector, ~1.6 KiB with its tensor object) is stored in
an ``OrderedDict`` keyed by a user id drawn from ``--users`` ids, and the
least recently used entry is evicted once it holds N entries.  Memory
climbs while the cache fills (about linearly: almost every id is new) and
then stays flat: a leak that stops below the limit.  Runs on 2 threads; logs the cgroup's usage every step.
"""

import argparse
import collections
import os
import sys
import time
import warnings

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _mem import MIB, own_memory_cgroup, read_int  # noqa: E402

nn = torch.nn
BAG = 8


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=150.0)
    p.add_argument("--steps", type=int, default=10**9)
    p.add_argument("--tables", type=int, default=4)
    p.add_argument("--rows", type=int, default=250_000)
    p.add_argument("--dim", type=int, default=48)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--cache-max", type=int, default=0, help="0: no cache")
    p.add_argument("--cache-dim", type=int, default=256)
    p.add_argument("--cache-per-step", type=int, default=512)
    p.add_argument("--users", type=int, default=10_000_000)
    args = p.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    tables = nn.ModuleList(nn.EmbeddingBag(args.rows, args.dim, mode="sum") for _ in range(args.tables))
    tower = nn.Sequential(nn.Linear(args.tables * args.dim, args.cache_dim), nn.ReLU())
    head = nn.Sequential(nn.Linear(args.cache_dim, 64), nn.ReLU(), nn.Linear(64, 1))
    params = list(tables.parameters()) + list(tower.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=1e-3)
    cg = os.path.join(own_memory_cgroup(), "memory.usage_in_bytes")
    cache: collections.OrderedDict = collections.OrderedDict()
    hits = 0
    start = time.monotonic()
    step = 0
    while step < args.steps and time.monotonic() - start < args.seconds:
        ids = [torch.randint(0, args.rows, (args.batch, BAG)) for _ in range(args.tables)]
        y = torch.randint(0, 2, (args.batch, 1)).float()
        opt.zero_grad(set_to_none=True)
        user = tower(torch.cat([t(i) for t, i in zip(tables, ids)], dim=1))
        loss = nn.functional.binary_cross_entropy_with_logits(head(user), y)
        loss.backward()
        opt.step()
        if args.cache_max:
            feats = user.detach()
            users = torch.randint(0, args.users, (args.cache_per_step,)).tolist()
            for row, key in enumerate(users):
                if key in cache:
                    cache.move_to_end(key)
                    hits += 1
                    continue
                cache[key] = feats[row].clone()
                if len(cache) > args.cache_max:
                    cache.popitem(last=False)
        print(f"step {step} t={time.monotonic() - start:.1f}s loss {loss.item():.3f} "
              f"cache {len(cache)} hits {hits} usage {read_int(cg) / MIB:.0f}MiB", flush=True)
        step += 1


if __name__ == "__main__":
    main()
