"""A torch DataLoader whose dataset caches the samples it materialises,
with 2-4 worker processes, each filling a cache of its own.

    /tmp/torchvenv/bin/python loader_cache.py [--workers 4] [--items 6000]
        [--size 64] [--batch 32] [--epochs 3] [--persistent]
        [--sample-ms 2] [--seconds 600]

The dataset "decodes" item i into a float tensor of 3 x size x size (48 KiB
with the defaults: a seeded random image plus some arithmetic, about
``--sample-ms`` of CPU each) and keeps it in a dict so the next epoch is
cheaper: the common pattern that looks like a leak.  DataLoader forks
``--workers`` processes, each with its own copy of the (empty) cache; each
caches the items it is handed.  In one epoch the workers together cache
one copy of the decoded data; as the order is shuffled, in the next epoch
each worker is mostly handed items another worker cached, so over the
epochs every worker tends to a full copy of its own.  The main process
trains a tiny linear model on the batches.  Measured here, a cached item
costs ~60 KiB of the cgroup's memory, not 48 (the batches in flight and
allocator overhead come with it); the base with 2-4 workers is ~450 MiB.

With ``--persistent`` the workers live across epochs: memory climbs at a
nearly constant rate (the CPU goes to the misses; cached items cost next
to nothing) to ``--workers`` copies and then stays flat, with a short bend
where the last misses are found (a leak that stops, if the limit holds
that many copies: with 3 workers and 6000 items
it did not hold in 1.5 GiB, a worker was killed in epoch 10).  Without it
the workers are forked anew each epoch and their caches die with them: a
sawtooth of one epoch's period, one copy high.  When the limit is too
small a worker is OOM-killed and the DataLoader raises in the main process
(exit status 1).  Logs the cgroup's usage every 20 batches.
"""

import argparse
import os
import sys
import time
import warnings

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
import torch  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _mem import MIB, own_memory_cgroup, read_int  # noqa: E402


class CachingImages(Dataset):
    def __init__(self, items: int, size: int, sample_ms: float) -> None:
        self.items, self.size, self.sample_ms = items, size, sample_ms
        self.cache: dict = {}

    def __len__(self) -> int:
        return self.items

    def __getitem__(self, i: int):
        if i not in self.cache:
            g = torch.Generator().manual_seed(i)
            img = torch.rand(3, self.size, self.size, generator=g)
            until = time.monotonic() + self.sample_ms / 1000
            while time.monotonic() < until:   # stands for JPEG decoding and augmentation
                img = (img * 0.999 + 0.0005).clamp_(0, 1)
            self.cache[i] = (img, i % 10)
        return self.cache[i]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--items", type=int, default=6000)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--persistent", action="store_true")
    p.add_argument("--sample-ms", type=float, default=2.0)
    p.add_argument("--seconds", type=float, default=600.0)
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    ds = CachingImages(args.items, args.size, args.sample_ms)
    loader = DataLoader(ds, batch_size=args.batch, shuffle=True, num_workers=args.workers,
                        persistent_workers=args.persistent, prefetch_factor=2)
    model = torch.nn.Linear(3 * args.size * args.size, 10)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    cg = os.path.join(own_memory_cgroup(), "memory.usage_in_bytes")
    start = time.monotonic()
    for epoch in range(args.epochs):
        for n, (x, y) in enumerate(loader):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x.flatten(1)), y)
            loss.backward()
            opt.step()
            if n % 20 == 0:
                print(f"epoch {epoch} batch {n} t={time.monotonic() - start:.1f}s "
                      f"usage {read_int(cg) / MIB:.0f}MiB", flush=True)
            if time.monotonic() - start > args.seconds:
                return
        print(f"epoch {epoch} done t={time.monotonic() - start:.1f}s usage {read_int(cg) / MIB:.0f}MiB",
              flush=True)


if __name__ == "__main__":
    main()
