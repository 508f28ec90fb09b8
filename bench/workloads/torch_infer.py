"""Batched CNN inference on CPU, a serving process under growing load: the
batch size steps up every few seconds.

    /tmp/torchvenv/bin/python torch_infer.py [--batches 8,16,24,32]
        [--stage-seconds 20] [--size 96] [--width 48] [--queue 4]

A ResNet-like image classifier (a stem conv, three stages of two residual
3x3 conv blocks with batch norm, W -> 2W -> 4W channels, stride 2 between
stages, global pooling, linear head; random weights, ``eval()``), served
under ``torch.inference_mode()``.  Requests arrive as ``--size`` x
``--size`` RGB images; the server batches them, and as the load grows the
dynamic batcher's batch grows: ``--batches`` lists the batch size of each
stage, each held for ``--stage-seconds``.  The server keeps the last
``--queue`` input batches (a request queue / replay buffer for retries),
so the base grows with the batch size too.

No autograd: in each forward pass only a few activations are alive at a
time (the block input, the residual and the output), freed as soon as the
next layer has run, so the cgroup sees a fast sawtooth (one forward pass
takes ~0.2 s at batch 8 to ~4 s at batch 64 here) over a base that steps
up with each stage: a staircase.  Under a limit that holds the last stage
it is a load step that fits; with one stage more the first batches of the
new stage are OOM-killed.  The height of the stairs varies from run to run
by some 10 % (recorded here under an 800 MiB limit: one run passed batch 40
at 636 MiB; another, ~50-80 MiB higher at every stage, was killed on the
step to batch 40; a third passed batch 64 at 680 MiB).  2 threads,
``torch.manual_seed(0)``; logs the batch size, throughput and the cgroup's
usage once a second.
"""

import argparse
import os
import sys
import time
import warnings

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _mem import MIB, log, own_memory_cgroup, read_int  # noqa: E402

nn = torch.nn


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.skip = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
                     if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x):
        y = torch.relu(self.b1(self.c1(x)))
        return torch.relu(self.b2(self.c2(y)) + self.skip(x))


def model(w: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(),
        Block(w, w, 1), Block(w, w, 1),
        Block(w, 2 * w, 2), Block(2 * w, 2 * w, 1),
        Block(2 * w, 4 * w, 2), Block(4 * w, 4 * w, 1),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, 1000))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", default="8,16,24,32", help="batch size of each stage")
    p.add_argument("--stage-seconds", type=float, default=20.0)
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--width", type=int, default=48)
    p.add_argument("--queue", type=int, default=4, help="input batches kept")
    args = p.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    net = model(args.width).eval()
    cg = os.path.join(own_memory_cgroup(), "memory.usage_in_bytes")
    queue: list = []
    served = 0
    start = time.monotonic()
    next_log = start + 1.0
    for stage, batch in enumerate(int(b) for b in args.batches.split(",")):
        stage_end = start + (stage + 1) * args.stage_seconds
        log(f"stage {stage}: batch {batch}")
        while time.monotonic() < stage_end:
            x = torch.rand(batch, 3, args.size, args.size)
            queue.append(x)
            del queue[:-args.queue]
            with torch.inference_mode():
                out = net(x)
                top = out.argmax(1)
            served += batch
            del out, top, x
            now = time.monotonic()
            if now >= next_log:
                log(f"t={now - start:.0f}s stage {stage} batch {batch} served {served} "
                    f"({served / (now - start):.0f}/s) usage {read_int(cg) / MIB:.0f}MiB")
                next_log += 1.0
    log(f"done: served {served}")


if __name__ == "__main__":
    main()
