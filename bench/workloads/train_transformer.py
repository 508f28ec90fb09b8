"""A small transformer language model trained on random tokens on CPU:
steady, or keeping each step's hidden states.

    /tmp/torchvenv/bin/python train_transformer.py [--seconds 150] [--steps N]
        [--batch 16] [--seq 128] [--d-model 256] [--layers 2] [--vocab 8000]
        [--keep-hidden-every 0]

Token embedding, learned positions, ``--layers`` ``nn.TransformerEncoderLayer``
(4 heads, feed-forward 4 x d-model, causal mask) and a tied output
projection over ``--vocab``; AdamW; random token batches.  The logits
(batch x seq x vocab floats: 62 MiB with the defaults) and the attention and
feed-forward activations make a tall per-step sawtooth over a flat base.

``--keep-hidden-every N`` adds the "keep the hidden states for a probe"
bug: every N steps the last layer's output (batch x seq x d-model: 2 MiB)
is appended to a list without ``.detach()``.  Measured here, each kept
tensor costs ~20 MiB, not 2 (what it keeps reachable through its autograd
graph plus the heap it pins; not taken apart further): with N=1 the run is
killed in ~20 s under 1 GiB, with N=10 memory climbs ~2.5 MiB/s under the
sawtooth until the OOM killer ends the run.  Runs on 2 threads; logs the cgroup's usage
every step.
"""

import argparse
import math
import os
import sys
import time
import warnings

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _mem import MIB, own_memory_cgroup, read_int  # noqa: E402

nn = torch.nn


class LM(nn.Module):
    def __init__(self, vocab: int, d: int, layers: int, seq: int) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.zeros(seq, d))
        layer = nn.TransformerEncoderLayer(d, 4, 4 * d, dropout=0.1, batch_first=True)
        self.body = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.scale = math.sqrt(d)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(seq))

    def forward(self, tokens):
        h = self.emb(tokens) * self.scale + self.pos[: tokens.shape[1]]
        h = self.norm(self.body(h, mask=self.mask, is_causal=True))
        return h, h @ self.emb.weight.t()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=150.0)
    p.add_argument("--steps", type=int, default=10**9)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--keep-hidden-every", type=int, default=0, help="0: no leak")
    args = p.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = LM(args.vocab, args.d_model, args.layers, args.seq)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
    cg = os.path.join(own_memory_cgroup(), "memory.usage_in_bytes")
    kept = []
    start = time.monotonic()
    step = 0
    while step < args.steps and time.monotonic() - start < args.seconds:
        tokens = torch.randint(0, args.vocab, (args.batch, args.seq + 1))
        opt.zero_grad()
        hidden, logits = model(tokens[:, :-1])
        loss = nn.functional.cross_entropy(logits.reshape(-1, args.vocab), tokens[:, 1:].reshape(-1))
        loss.backward()
        opt.step()
        if args.keep_hidden_every and step % args.keep_hidden_every == 0:
            kept.append(hidden)   # the bug: should be hidden.detach() (and not kept at all)
        print(f"step {step} t={time.monotonic() - start:.1f}s loss {loss.item():.3f} "
              f"kept {len(kept)} usage {read_int(cg) / MIB:.0f}MiB", flush=True)
        step += 1


if __name__ == "__main__":
    main()
