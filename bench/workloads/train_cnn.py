"""A small CNN trained on random images on CPU: steady, or keeping batches.

    /tmp/torchvenv/bin/python train_cnn.py [--seconds 330] [--steps N]
        [--batch 96] [--size 64] [--width 48] [--keep-batches-every 0]

Four 3x3 conv layers (3 -> W -> 2W -> 4W -> 4W channels, stride 2 after the
first), batch norm, global average pooling and a linear head, Adam, on
random ``--size`` x ``--size`` RGB images and random labels (a fresh batch
each step, drawn from a fixed pool of 8 so the inputs are not all one
tensor).  Each step's activations are allocated in the forward pass and
freed after backward: the cgroup sees a per-step sawtooth over the weights,
Adam state and the mapped libtorch.

``--keep-batches-every N`` adds a slow leak: every N steps the input batch
(and its labels) is appended to a python list "to re-check the worst
samples later" and never dropped, so memory climbs by one batch
(batch x 3 x size x size x 4 bytes: 4.5 MiB with the defaults) every N
steps, under the sawtooth, until the OOM killer ends the run.
Runs for ``--seconds`` (or ``--steps``), on 2 threads, and logs the
cgroup's usage every step.
"""

import argparse
import os
import sys
import time
import warnings

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _mem import MIB, own_memory_cgroup, read_int  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=330.0)
    p.add_argument("--steps", type=int, default=10**9)
    p.add_argument("--batch", type=int, default=96)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--width", type=int, default=48)
    p.add_argument("--keep-batches-every", type=int, default=0, help="0: no leak")
    args = p.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    w = args.width
    nn = torch.nn
    model = nn.Sequential(
        nn.Conv2d(3, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(),
        nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(),
        nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1), nn.BatchNorm2d(4 * w), nn.ReLU(),
        nn.Conv2d(4 * w, 4 * w, 3, padding=1), nn.BatchNorm2d(4 * w), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, 100))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    pool = [(torch.randn(args.batch, 3, args.size, args.size), torch.randint(0, 100, (args.batch,)))
            for _ in range(8)]
    cg = os.path.join(own_memory_cgroup(), "memory.usage_in_bytes")
    kept = []
    start = time.monotonic()
    step = 0
    while step < args.steps and time.monotonic() - start < args.seconds:
        x, y = pool[step % len(pool)]
        x = x + 0.01 * torch.randn_like(x)   # a fresh tensor each step, as a loader would give
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        if args.keep_batches_every and step % args.keep_batches_every == 0:
            kept.append((x, y))   # the bug: kept "for later" and never dropped
        print(f"step {step} t={time.monotonic() - start:.1f}s loss {loss.item():.3f} "
              f"kept {len(kept)} usage {read_int(cg) / MIB:.0f}MiB", flush=True)
        step += 1


if __name__ == "__main__":
    main()
