"""A training loop that listens to memguard: memguard.client halves its batch.

    halving_trainer.py STEPS MIB_PER_SAMPLE

Each step it holds a batch of `batch` samples of MIB_PER_SAMPLE MiB (all
touched) and grows the batch by one, as a run whose activations grow would.
When memguard warns (memguard.client on_warning) it halves the batch, as a
training script would, frees the memory and goes on at that size. Prints
``registered JOB`` at start, ``halved BATCH`` when told, ``done`` and exits
0 after STEPS steps.
"""

import sys
import time

from memguard import client

steps, mib = int(sys.argv[1]), int(sys.argv[2])
batch = 1
growing = True
told = []
reg = client.register("trainer", on_warning=lambda event: told.append(event))
print(f"registered {reg.job}", flush=True)
held = []
for step in range(steps):
    if told:
        told.clear()
        batch = max(1, batch // 2)
        growing = False
        held = held[:batch]
        print(f"halved {batch}", flush=True)
    while len(held) < batch:
        sample = bytearray(mib << 20)
        for i in range(0, len(sample), 4096):
            sample[i] = 1
        held.append(sample)
    batch += growing
    time.sleep(0.25)
reg.close()
print("done", flush=True)
