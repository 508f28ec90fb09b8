"""A PyTorch CPU training loop: steady, or leaking a tensor per step.

    /tmp/torchvenv/bin/python train.py [--steps 40] [--leak] [--leak-every 2]
        [--batch 1024] [--hidden 2048]

An MLP (4 hidden layers of --hidden, SGD with momentum) trained on random
data.  Every step allocates the activations in the forward pass and frees
them after backward: the cgroup's memory is a sawtooth (~130 MiB per step
with the defaults) on top of the weights, gradients and momentum (~200 MiB)
and the mapped libtorch (~260 MiB of page cache).

--leak adds the classic bug: every --leak-every steps the penultimate
layer's output is kept "for logging embeddings" without ``.detach()`` (an
8 MiB tensor, with its autograd node), so memory climbs until the OOM killer
ends the run (~74 s in under 1 GiB, after ~15 s pinned at the limit while
the kernel evicts libtorch's page cache).  It climbs faster than 4 MiB per
step: the kept tensors pin glibc heap around them, so some freed
activations cannot go back to the kernel (with --leak-every 1 it climbs
~25 MiB/s and is killed ~25 s in).  Needs torch (2.13.0 CPU in a venv of its
own); runs on 2 threads.
"""

import argparse
import time
import warnings

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
import torch  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=40, help="steps to run (the leak stops earlier)")
    p.add_argument("--leak", action="store_true")
    p.add_argument("--leak-every", type=int, default=2, help="keep a tensor every N steps")
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--hidden", type=int, default=2048)
    args = p.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    h = args.hidden
    body = torch.nn.Sequential(*[m for _ in range(4) for m in (torch.nn.Linear(h, h), torch.nn.ReLU())])
    head = torch.nn.Linear(h, 10)
    params = list(body.parameters()) + list(head.parameters())
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    x = torch.randn(args.batch, h)
    y = torch.randint(0, 10, (args.batch,))
    embeddings = []
    start = time.monotonic()
    for step in range(args.steps):
        opt.zero_grad()
        feats = body(x)
        loss = torch.nn.functional.cross_entropy(head(feats), y)
        loss.backward()
        opt.step()
        if args.leak and step % args.leak_every == 0:
            embeddings.append(feats)  # the bug: should be feats.detach().cpu() or not kept at all
        print(f"step {step} t={time.monotonic() - start:.1f}s loss {loss.item():.4f} "
              f"kept {len(embeddings)}", flush=True)


if __name__ == "__main__":
    main()
