"""An LSTM language model trained with truncated backpropagation through
time on random tokens on CPU, validated every few steps: correct, or
keeping every validation's autograd graph.

    /tmp/torchvenv/bin/python train_lstm.py [--seconds 120] [--steps N]
        [--batch 32] [--bptt 35] [--hidden 512] [--layers 2] [--vocab 8000]
        [--val-every 8] [--val-batches 3] [--val-batch 10] [--leak-val-history]

Embedding, a ``--layers`` LSTM of ``--hidden`` units, a linear decoder over
``--vocab``; SGD with gradient clipping; the hidden state is carried from
one batch of ``--bptt`` tokens to the next and detached (one long random
token stream, as in the classic word-level language model example).
Every ``--val-every`` steps a validation pass runs ``--val-batches``
batches of ``--val-batch`` sequences under ``torch.no_grad()``.  The memory
is a per-step sawtooth over a flat base, with a smaller bump per validation.

``--leak-val-history`` is the classic bug: validation runs without
``torch.no_grad()`` and its mean loss is appended, as a tensor, to a
history list (for early stopping and the plot) instead of ``.item()``.
Each kept loss holds its whole forward graph with the saved activations
(the log-softmax of the logits is the biggest: val-batch x bptt x vocab
floats), so memory climbs one stair per validation (~40 MiB with the
defaults) until the OOM killer ends the run.  Runs on 2 threads; logs the
cgroup's usage every step.
"""

import argparse
import contextlib
import os
import sys
import time
import warnings

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _mem import MIB, own_memory_cgroup, read_int  # noqa: E402

nn = torch.nn


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=120.0)
    p.add_argument("--steps", type=int, default=10**9)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--bptt", type=int, default=35)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--val-every", type=int, default=8)
    p.add_argument("--val-batches", type=int, default=3)
    p.add_argument("--val-batch", type=int, default=10)
    p.add_argument("--leak-val-history", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    emb = nn.Embedding(args.vocab, args.hidden)
    lstm = nn.LSTM(args.hidden, args.hidden, args.layers, batch_first=True)
    dec = nn.Linear(args.hidden, args.vocab)
    params = list(emb.parameters()) + list(lstm.parameters()) + list(dec.parameters())
    opt = torch.optim.SGD(params, lr=0.5)

    def lm_loss(tokens, state):
        out, state = lstm(emb(tokens[:, :-1]), state)
        return nn.functional.cross_entropy(dec(out).reshape(-1, args.vocab), tokens[:, 1:].reshape(-1)), state

    def validate():
        ctx = contextlib.nullcontext() if args.leak_val_history else torch.no_grad()
        with ctx:
            state, total = None, 0.0
            for _ in range(args.val_batches):
                loss, state = lm_loss(torch.randint(0, args.vocab, (args.val_batch, args.bptt + 1)), state)
                total = total + loss
            return total / args.val_batches

    history = []
    state = None
    cg = os.path.join(own_memory_cgroup(), "memory.usage_in_bytes")
    tokens = torch.randint(0, args.vocab, (args.batch, args.bptt + 1))
    start = time.monotonic()
    step = 0
    while step < args.steps and time.monotonic() - start < args.seconds:
        tokens = torch.cat([tokens[:, -1:], torch.randint(0, args.vocab, (args.batch, args.bptt))], dim=1)
        if state is not None:
            state = tuple(s.detach() for s in state)
        opt.zero_grad()
        loss, state = lm_loss(tokens, state)
        loss.backward()
        nn.utils.clip_grad_norm_(params, 0.25)
        opt.step()
        if step % args.val_every == args.val_every - 1:
            history.append(validate())   # the bug (with --leak-val-history): should be validate().item()
        print(f"step {step} t={time.monotonic() - start:.1f}s loss {loss.item():.3f} "
              f"vals {len(history)} usage {read_int(cg) / MIB:.0f}MiB", flush=True)
        step += 1


if __name__ == "__main__":
    main()
