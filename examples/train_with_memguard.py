"""A PyTorch training loop that acts on memguard's warnings.

    python examples/train_with_memguard.py [--cache-batches] [--device cuda] [--epochs N] ...

It trains a small MLP on a synthetic classification task (the labels come
from a fixed random linear "teacher", so the loss falls and the accuracy
climbs) and registers with memguardd through ``memguard.client.register``.
When a rule warns of the memory it lives in (the host, its cgroup, its GPU)
it does, between two steps:

1. free what it can: its own cache of batches (``--cache-batches``) and, on
   CUDA, the caching allocator's unused blocks (``torch.cuda.empty_cache``);
2. halve its batch, accumulating twice as many micro-batches per step, so
   the optimizer still sees the same batch and the run's results do not
   change; only its peak memory does;
3. checkpoint: model, optimizer, where it was and the halved batch, written
   atomically (``--resume`` starts from it);

and carries on.  At critical it stops caching altogether, halves again and
checkpoints.  A CUDA out-of-memory error is reported to memguardd (an
incident that shows the allocator's figures) and raised.  Without
memguardd, or without memguard installed, it trains all the same.

Each event is one line (``warned:``, ``freed:``, ``checkpointed:``,
``batch now N``); the run ends with a ``done:`` line.  examples/README.md
shows how to run it inside a memory-limited cgroup and what it prints.
"""

from __future__ import annotations

import argparse
import gc
import os
import queue
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

try:
    from memguard import client
except ModuleNotFoundError as e:     # memguard is optional for the script too: it just hears nothing
    if e.name != "memguard":
        raise                        # installed but broken: say so, not "not installed"
    client = None

MIB = 1 << 20


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--epochs", type=int, default=3, help="passes over the synthetic data set")
    p.add_argument("--steps-per-epoch", type=int, default=100,
                   help="optimizer steps in an epoch, whatever the micro-batch")
    p.add_argument("--batch-size", type=int, default=256,
                   help="samples per optimizer step; a warning halves the micro-batch, not this")
    p.add_argument("--features", type=int, default=256, help="inputs per sample, 4 bytes each")
    p.add_argument("--hidden", type=int, default=512, help="width of the two hidden layers")
    p.add_argument("--classes", type=int, default=10, help="classes to tell apart")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate")
    p.add_argument("--cache-batches", action="store_true",
                   help="keep every batch on the device for the next epochs, as a dataset cache does: "
                        "memory grows by --batch-size x --features x 4 bytes a step during the first epoch")
    p.add_argument("--step-delay", type=float, default=0.0,
                   help="seconds to sleep after each step, standing in for a slower model or data pipeline")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--checkpoint", type=Path, default=Path("checkpoint.pt"), help="the checkpoint file, written when warned")
    p.add_argument("--resume", action="store_true", help="start from --checkpoint when it exists")
    p.add_argument("--job", default="train", help="the job's name in memguard")
    p.add_argument("--seed", type=int, default=0, help="seeds the model and the data")
    return p.parse_args(argv)


def build_model(features: int, hidden: int, classes: int) -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(features, hidden), torch.nn.ReLU(),
                               torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
                               torch.nn.Linear(hidden, classes))


class SyntheticTask:
    """Batch *step* of every epoch is the same: random inputs drawn from a
    generator seeded by the step, labelled by a fixed random linear map."""

    def __init__(self, features: int, classes: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.teacher = torch.randn(features, classes, generator=g)
        self.seed = seed

    def batch(self, step: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step + 1)
        x = torch.randn(size, self.teacher.shape[0], generator=g)
        return x, (x @ self.teacher).argmax(dim=1)


class BatchCache:
    """Batches by step, up to *budget* bytes (None: no bound, 0: off)."""

    def __init__(self, budget: int | None) -> None:
        self.budget = budget
        self.batches: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.nbytes = 0

    def get(self, step: int):
        return self.batches.get(step)

    def put(self, step: int, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        size = sum(t.numel() * t.element_size() for t in batch)
        if self.budget is None or self.nbytes + size <= self.budget:
            self.batches[step] = batch
            self.nbytes += size

    def drop(self, budget: int) -> tuple[int, int]:
        """Empty the cache and bound it to *budget* bytes from now on:
        (batches, bytes) it held."""
        held = len(self.batches), self.nbytes
        self.batches.clear()
        self.nbytes, self.budget = 0, budget
        return held


class Trainer:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.device = torch.device(args.device)
        if self.device.type == "cuda" and self.device.index is not None:
            torch.cuda.set_device(self.device)     # the GPU whose allocator figures memguard hears about
        torch.manual_seed(args.seed)
        self.task = SyntheticTask(args.features, args.classes, args.seed)
        self.model = build_model(args.features, args.hidden, args.classes).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=args.lr)
        self.cache = BatchCache(None if args.cache_batches else 0)
        self.micro_batch = args.batch_size
        self.epoch, self.step, self.global_step = 0, 0, 0   # where the run is: the next step to take
        self.events: queue.SimpleQueue = queue.SimpleQueue()
        self.counts = {"warning": 0, "critical": 0, "checkpoint": 0}

    # memguard's callbacks run in its client's thread: they only queue the
    # event, and the loop acts on it between two steps (the model, the
    # optimizer and the cache are the loop's alone).
    def on_event(self, event: dict) -> None:
        self.events.put(event)

    def handle_events(self) -> None:
        """Act on what memguard said since the last step: free memory and
        halve the batch for each event, then checkpoint once, with the halved
        batch (a run resumed from it does not come back at the size that ran
        out of memory)."""
        heard = False
        while not self.events.empty():
            event = self.events.get()
            which = event.get("event", "warning")
            self.counts[which] = self.counts.get(which, 0) + 1
            print(f"{'warned' if which == 'warning' else which}: {describe(event)}", flush=True)
            self.free_memory(stop_caching=which != "warning")
            self.halve_batch()
            heard = True
        if heard:
            self.checkpoint()

    def free_memory(self, stop_caching: bool) -> None:
        batches, nbytes = self.cache.drop(0 if stop_caching else self.cache.nbytes // 2)
        gc.collect()                          # tensors held by cycles go now, not at the next collection
        if self.device.type == "cuda":
            torch.cuda.empty_cache()          # hand the allocator's unused blocks back to the driver
        bound = "caching off" if not self.cache.budget else f"cache now holds at most {self.cache.budget / MIB:.1f} MiB"
        print(f"freed: cache of {batches} batches ({nbytes / MIB:.1f} MiB); {bound}", flush=True)

    def checkpoint(self) -> None:
        """torch.save to a temporary file beside the checkpoint, then rename:
        a kill in the middle leaves the previous checkpoint whole."""
        path = self.args.checkpoint
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "epoch": self.epoch, "step": self.step, "global_step": self.global_step,
                 "micro_batch": self.micro_batch, "batch_size": self.args.batch_size,
                 "shape": [self.args.features, self.args.hidden, self.args.classes]}
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        self.counts["checkpoint"] += 1
        print(f"checkpointed: {path} (epoch {self.epoch + 1}, step {self.step}, batch {self.micro_batch})", flush=True)

    def halve_batch(self) -> None:
        self.micro_batch = max(1, self.micro_batch // 2)
        parts = -(-self.args.batch_size // self.micro_batch)
        print(f"batch now {self.micro_batch} ({parts} micro-batches per step of {self.args.batch_size})", flush=True)

    def resume(self) -> None:
        state = torch.load(self.args.checkpoint, map_location=self.device, weights_only=True)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch, self.step, self.global_step = state["epoch"], state["step"], state["global_step"]
        self.micro_batch = state["micro_batch"]
        print(f"resumed: {self.args.checkpoint} (epoch {self.epoch + 1}, step {self.step}, "
              f"batch {self.micro_batch})", flush=True)

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, int]:
        """One optimizer step over the batch, in micro-batches whose losses
        are weighted so the gradient is the whole batch's: (loss, correct)."""
        self.optimizer.zero_grad(set_to_none=True)
        total, correct = 0.0, 0
        for xs, ys in zip(x.split(self.micro_batch), y.split(self.micro_batch)):
            logits = self.model(xs)
            loss = F.cross_entropy(logits, ys) * (len(xs) / len(x))
            loss.backward()
            total += loss.item()
            correct += (logits.argmax(dim=1) == ys).sum().item()
        self.optimizer.step()
        return total, correct

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        cached = self.cache.get(step)
        if cached is not None:
            return cached
        x, y = self.task.batch(step, self.args.batch_size)
        batch = x.to(self.device), y.to(self.device)
        self.cache.put(step, batch)
        return batch

    def run_epoch(self) -> tuple[float, float]:
        """Train from self.step to the epoch's end: (mean loss, accuracy)."""
        losses, correct, seen = 0.0, 0, 0
        while self.step < self.args.steps_per_epoch:
            self.handle_events()
            x, y = self.batch(self.step)
            loss, right = self.train_step(x, y)
            losses, correct, seen = losses + loss * len(x), correct + right, seen + len(x)
            self.step += 1
            self.global_step += 1
            if self.args.step_delay:
                time.sleep(self.args.step_delay)
        return losses / max(seen, 1), correct / max(seen, 1)

    def train(self) -> tuple[float, float]:
        loss = accuracy = float("nan")
        while self.epoch < self.args.epochs:
            started = time.monotonic()
            loss, accuracy = self.run_epoch()
            print(f"epoch {self.epoch + 1}/{self.args.epochs}: loss {loss:.3f} accuracy {accuracy:.1%} "
                  f"batch {self.micro_batch} cache {self.cache.nbytes / MIB:.1f} MiB "
                  f"{time.monotonic() - started:.1f} s", flush=True)
            self.epoch, self.step = self.epoch + 1, 0
        self.handle_events()
        return loss, accuracy


def describe(event: dict) -> str:
    """One line for a memguard event: the rule, the domain, the prediction."""
    tto, confidence = event.get("tto_seconds"), event.get("confidence")
    when = "time to OOM unknown" if tto is None else f"{tto:.0f} s to OOM"
    if tto is not None and confidence is not None:
        when += f" (confidence {confidence:.2f})"
    return f"{event.get('rule')} on {event.get('domain')}, {when}"


def register(trainer: Trainer):
    """Register with memguardd: the registration, or None when memguard is
    not installed, no memguardd answered, or it refused (training goes on)."""
    if client is None:
        print("memguard: not installed; training unregistered", flush=True)
        return None
    every = 10 if trainer.device.type == "cuda" else None    # the CUDA allocator's figures every 10 s
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)   # we say it ourselves, below
            reg = client.register(trainer.args.job, on_warning=trainer.on_event, on_critical=trainer.on_event,
                                  gpu_stats_every=every)
    except ValueError as e:               # a bad job name, or memguardd refused
        print(f"memguard: {e}; training unregistered", flush=True)
        return None
    if not reg.active:
        print("memguard: no memguardd answered; training unregistered (no warnings will come)", flush=True)
        return None
    print(f"memguard: registered as job {reg.job}", flush=True)
    return reg


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        what = "is a CPU build" if torch.version.cuda is None else "sees no CUDA GPU"
        raise SystemExit(f"--device {args.device}: this PyTorch ({torch.__version__}) {what}; "
                         "install a CUDA build of PyTorch or use --device cpu")
    started = time.monotonic()
    trainer = Trainer(args)
    if args.resume and args.checkpoint.exists():
        trainer.resume()
    reg = register(trainer)
    try:
        loss, accuracy = trainer.train()
    except torch.cuda.OutOfMemoryError as e:
        if client is not None and trainer.device.type == "cuda":
            device = trainer.device.index if trainer.device.index is not None else torch.cuda.current_device()
            incident = client.report_gpu_oom(e, device=device)      # None when no memguardd answered
            if incident is not None:
                print(f"memguard: CUDA out of memory reported: memguardctl incident show {incident}", flush=True)
        raise
    finally:
        if reg is not None:
            reg.close()
    c = trainer.counts
    print(f"done: {trainer.epoch} epoch(s), {trainer.global_step} step(s), loss {loss:.3f}, accuracy {accuracy:.1%}, "
          f"batch {trainer.micro_batch}, {c['warning']} warning(s), {c['critical']} critical(s), "
          f"{c['checkpoint']} checkpoint(s), job {reg.job if reg else 'none'}, {time.monotonic() - started:.1f} s",
          flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
