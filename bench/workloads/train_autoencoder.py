"""A convolutional autoencoder trained on random images on CPU: steady, or
keeping a "gallery" of reconstructions that is really whole batches.

    /tmp/torchvenv/bin/python train_autoencoder.py [--seconds 330] [--steps N]
        [--batch 64] [--size 64] [--width 32] [--latent 128]
        [--gallery-every 0] [--gallery-keep 4]

Encoder: three stride-2 3x3 convs (3 -> W -> 2W -> 4W channels) and a
linear layer to a ``--latent`` code; decoder: a linear layer and three
transposed convs back to 3 x size x size, sigmoid; MSE loss, Adam.  The
inputs are smooth random images (a fixed pool of 8 batches of
low-resolution noise, upsampled, plus fresh noise each step, as a loader
would give).  Each step's activations are allocated in the forward pass
and freed after backward: the cgroup sees a per-step sawtooth over the
weights, Adam state and the mapped libtorch.

``--gallery-every N`` adds a slow leak, a common one: every N steps the
first ``--gallery-keep`` reconstructions are appended to a list "to show
how training progresses", as ``recon[:k]`` -- a view, not detached and not
copied -- so each kept entry holds the storage of the whole output batch
(batch x 3 x size x size x 4 bytes: 3 MiB with the defaults) instead of
k images, and memory climbs under the sawtooth until the OOM killer ends
the run.  Runs for ``--seconds`` (or ``--steps``), on 2 threads,
``torch.manual_seed(0)``, and logs the cgroup's usage every step.
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
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--latent", type=int, default=128)
    p.add_argument("--gallery-every", type=int, default=0, help="0: no leak")
    p.add_argument("--gallery-keep", type=int, default=4)
    args = p.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    nn = torch.nn
    w, s = args.width, args.size
    s8 = s // 8
    encoder = nn.Sequential(
        nn.Conv2d(3, w, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(4 * w * s8 * s8, args.latent))
    decoder = nn.Sequential(
        nn.Linear(args.latent, 4 * w * s8 * s8), nn.ReLU(),
        nn.Unflatten(1, (4 * w, s8, s8)),
        nn.ConvTranspose2d(4 * w, 2 * w, 4, stride=2, padding=1), nn.ReLU(),
        nn.ConvTranspose2d(2 * w, w, 4, stride=2, padding=1), nn.ReLU(),
        nn.ConvTranspose2d(w, 3, 4, stride=2, padding=1), nn.Sigmoid())
    params = list(encoder.parameters()) + list(decoder.parameters())
    opt = torch.optim.Adam(params, lr=1e-3)
    pool = [torch.sigmoid(nn.functional.interpolate(torch.randn(args.batch, 3, s // 4, s // 4),
                                                    size=(s, s), mode="bilinear"))
            for _ in range(8)]
    cg = os.path.join(own_memory_cgroup(), "memory.usage_in_bytes")
    gallery = []
    start = time.monotonic()
    step = 0
    while step < args.steps and time.monotonic() - start < args.seconds:
        x = (pool[step % len(pool)] + 0.02 * torch.randn_like(pool[0])).clamp_(0, 1)
        opt.zero_grad()
        recon = decoder(encoder(x))
        loss = nn.functional.mse_loss(recon, x)
        loss.backward()
        opt.step()
        if args.gallery_every and step % args.gallery_every == 0:
            gallery.append(recon[:args.gallery_keep])   # the bug: a view of the whole batch
        print(f"step {step} t={time.monotonic() - start:.1f}s loss {loss.item():.4f} "
              f"gallery {len(gallery)} usage {read_int(cg) / MIB:.0f}MiB", flush=True)
        step += 1


if __name__ == "__main__":
    main()
