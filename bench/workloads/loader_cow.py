"""The DataLoader "memory leak" that is copy-on-write: workers read a big
list of python objects built by the parent, and every read writes.

    /tmp/torchvenv/bin/python loader_cow.py [--workers 4] [--records 1500000]
        [--batch 64] [--epochs 1] [--sample-us 0] [--seconds 600]

The main process builds the dataset index in memory as a python list of
``--records`` small dicts (id, path string, label, box list: ~400 bytes
each, ~600 MiB with the defaults), then iterates a shuffled DataLoader with
``--workers`` forked workers.  Each ``__getitem__`` only reads a record and
makes a tiny tensor from it, but reading a python object updates its
reference count, so each page a worker reads from is copied into that
worker (copy-on-write): every worker's private memory climbs towards a full
copy of the index.  With 4 workers the cgroup would need ~5x the index;
under a limit below that the climb, fast at first and slower as fewer pages
are left uncopied, ends in an OOM kill: here (2 GiB, 4 workers) of the main
process, whose RSS counts the whole index, which takes the workers with it
(a killed worker would instead make the DataLoader raise in the main
process).  ``--sample-us`` busy-waits in each
``__getitem__`` to slow the climb.  Logs the cgroup's usage every 50 batches.
See pytorch/pytorch#13246.
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


class Index(Dataset):
    def __init__(self, records: int, sample_us: float) -> None:
        self.sample_us = sample_us
        self.records = [{"id": i, "path": f"/data/train/{i // 1000:04d}/img_{i:08d}.jpg",
                         "label": i % 1000, "box": [i % 7, i % 11, 32 + i % 13, 32 + i % 17]}
                        for i in range(records)]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        r = self.records[i]
        if self.sample_us:
            until = time.monotonic() + self.sample_us / 1e6
            while time.monotonic() < until:
                pass
        return torch.tensor(r["box"], dtype=torch.float32) + len(r["path"]), r["label"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--records", type=int, default=1_500_000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--sample-us", type=float, default=0.0)
    p.add_argument("--seconds", type=float, default=600.0)
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cg = os.path.join(own_memory_cgroup(), "memory.usage_in_bytes")
    start = time.monotonic()
    ds = Index(args.records, args.sample_us)
    print(f"index of {len(ds)} records built t={time.monotonic() - start:.1f}s "
          f"usage {read_int(cg) / MIB:.0f}MiB", flush=True)
    loader = DataLoader(ds, batch_size=args.batch, shuffle=True, num_workers=args.workers)
    model = torch.nn.Linear(4, 1000)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for epoch in range(args.epochs):
        for n, (x, y) in enumerate(loader):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            if n % 50 == 0:
                print(f"epoch {epoch} batch {n} t={time.monotonic() - start:.1f}s "
                      f"usage {read_int(cg) / MIB:.0f}MiB", flush=True)
            if time.monotonic() - start > args.seconds:
                return


if __name__ == "__main__":
    main()
