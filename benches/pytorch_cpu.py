"""PyTorch on the CPU, the same model and training step as `cudaenc train --device cpu
--preset cpu` (docs/design.md): token embedding (no positions), dropout, pre-LN encoder
blocks (bidirectional attention with a key padding mask, GELU tanh FFN), final LN, mean
pool over valid tokens, BCE head; global-norm clip 1.0, AdamW (decay on 2-D tensors only).

It times the batches that `examples/cpu_bench.rs --dump FILE` wrote (real IMDB batches),
so both sides do identical work:

    cargo run --release --example cpu_bench -- DATA 40 --dump /tmp/batches.bin
    python benches/pytorch_cpu.py /tmp/batches.bin [--repeats 3]

Prints valid tokens per second per repeat (after two warm-up steps) and the median.
"""

import argparse
import struct
import time

import numpy as np
import torch

# the model is pytorch_reference.py's (same folder), here at the cpu preset's shape
from pytorch_reference import Classifier

V, C, L, NH, FF, P = 100_277, 64, 1, 4, 256, 0.1


def read_batches(path):
    raw = open(path, "rb").read()
    (n,), off = struct.unpack_from("<I", raw, 0), 4
    out = []
    for _ in range(n):
        b, t = struct.unpack_from("<II", raw, off)
        off += 8
        ids = np.frombuffer(raw, np.uint32, b * t, off).reshape(b, t).astype(np.int64)
        off += 4 * b * t
        lens = np.frombuffer(raw, np.uint32, b, off).astype(np.int64)
        off += 4 * b
        labels = np.frombuffer(raw, np.uint8, b, off).astype(np.float32)
        off += b
        out.append((torch.from_numpy(ids), torch.from_numpy(lens), torch.from_numpy(labels)))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("batches")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    batches = read_batches(a.batches)
    tokens = sum(int(l.sum()) for _, l, _ in batches)
    model = Classifier(V, C, L, NH, FF, P, "bce")
    decay = [p for p in model.parameters() if p.dim() == 2]
    no_decay = [p for p in model.parameters() if p.dim() != 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}], lr=1e-3)
    model.train()

    def step(ids, lens, y):
        loss = model(ids, lens, y)
        opt.zero_grad(set_to_none=False)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss.item()

    for ids, lens, y in batches[:2]:
        step(ids, lens, y)
    rates = []
    for r in range(a.repeats):
        t0 = time.perf_counter()
        for ids, lens, y in batches:
            loss = step(ids, lens, y)
        secs = time.perf_counter() - t0
        rates.append(tokens / secs)
        print(f"repeat {r}: {secs:.2f}s, {tokens / secs:.0f} tok/s (last loss {loss:.4f})")
    rates.sort()
    print(f"pytorch {torch.__version__}: median {rates[len(rates) // 2]:.0f} tok/s over {a.repeats} repeats "
          f"({len(batches)} batches, {tokens} tokens, threads {torch.get_num_threads()})")


if __name__ == "__main__":
    main()
