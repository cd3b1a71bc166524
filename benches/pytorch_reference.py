#!/usr/bin/env python3
"""PyTorch reference for `cudaenc bench --step`: the same model, the same training step,
the same synthetic batches, timed the same way (median wall-clock ms per step, device
synchronized). Needs only torch and numpy.

The model (docs/design.md): token embedding (no positional encoding), dropout, L pre-LN
blocks (bidirectional multi-head attention with a key padding mask through
F.scaled_dot_product_attention and a boolean mask; GELU-tanh FFN; dropout on each residual
branch), final LayerNorm, masked mean pooling, a linear head: CE over 2 logits or BCE on 1.
The step: zero grads, forward, loss, backward, clip the global grad norm to 1.0, AdamW
(lr 1e-4, betas 0.9/0.999, eps 1e-8, weight decay 0.1 on 2-D tensors only; fused on CUDA).

Batches as `cudaenc::bench::step_batch`: review i has T - (i * 7919) mod (3T/4) valid
tokens, ids Zipf-Mandelbrot p(r) ~ 1/(r + 2.7) over the vocabulary (same distribution,
different draws), padding id 0, labels alternating; four batches in turn, copied from the
host each step (as cudaenc uploads them).

Configurations `mode-precision`: mode eager or compile (torch.compile); precision
"fp32" (FP32 matmuls in full precision: torch.set_float32_matmul_precision("highest")),
"tf32" (TF32 allowed: "high") or "bf16" (forward and loss under
torch.autocast(dtype=torch.bfloat16), TF32 allowed for what autocast leaves in FP32;
parameters, gradients and AdamW stay FP32). Default: eager-fp32, eager-tf32, eager-bf16,
compile-bf16. cudaenc's kernels are plain FP32, so fp32 is the like-for-like comparison.
Runs on CUDA if available, else on the CPU (there, unless shapes are given, a small
shape so it finishes). Prints a table, then one line `TORCHJSON [...]`.

    python3 benches/pytorch_reference.py                      # gpu + nanogpt, T 256 and 512
    python3 benches/pytorch_reference.py --smoke               # tiny model, seconds on a CPU
    python3 benches/pytorch_reference.py --budget-s 150        # skip what does not fit
"""
import argparse
import json
import math
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# (width C, layers L, heads NH, FFN width, dropout) as src/cli/setup.rs's presets
PRESETS = {
    "gpu": (256, 2, 4, 1024, 0.3),
    "nanogpt": (384, 6, 6, 1536, 0.2),
    "tiny": (32, 1, 2, 64, 0.1),  # --smoke
}
VOCAB = 100_277


class Block(nn.Module):
    def __init__(self, c, nh, f, p):
        super().__init__()
        self.nh = nh
        self.ln1 = nn.LayerNorm(c, eps=1e-5)
        self.qkv = nn.Linear(c, 3 * c)
        self.attn_proj = nn.Linear(c, c)
        self.ln2 = nn.LayerNorm(c, eps=1e-5)
        self.fc = nn.Linear(c, f)
        self.fc_proj = nn.Linear(f, c)
        self.drop = nn.Dropout(p)

    def forward(self, x, key_mask):
        b, t, c = x.shape
        hs = c // self.nh
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.nh, hs).transpose(1, 2) for z in (q, k, v))
        # key_mask (B, 1, 1, T), True = a valid key: bidirectional, padded keys masked out
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)
        y = y.transpose(1, 2).reshape(b, t, c)
        x = x + self.drop(self.attn_proj(y))
        x = x + self.drop(self.fc_proj(F.gelu(self.fc(self.ln2(x)), approximate="tanh")))
        return x


class Classifier(nn.Module):
    def __init__(self, vocab, c, n_layer, nh, f, p, loss):
        super().__init__()
        self.loss = loss
        self.wte = nn.Embedding(vocab, c)
        self.drop = nn.Dropout(p)
        self.blocks = nn.ModuleList([Block(c, nh, f, p) for _ in range(n_layer)])
        self.lnf = nn.LayerNorm(c, eps=1e-5)
        self.head = nn.Linear(c, 2 if loss == "ce" else 1)
        # docs/design.md: N(0, 0.02), the two projections N(0, 0.02 / sqrt(2L)), biases 0
        for name, prm in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(prm)
            elif prm.dim() >= 2:
                std = 0.02 / math.sqrt(2 * n_layer) if ("attn_proj" in name or "fc_proj" in name) else 0.02
                nn.init.normal_(prm, 0.0, std)

    def forward(self, ids, lens, labels):
        b, t = ids.shape
        valid = torch.arange(t, device=ids.device)[None, :] < lens[:, None]  # (B, T)
        x = self.drop(self.wte(ids))
        key_mask = valid[:, None, None, :]
        for blk in self.blocks:
            x = blk(x, key_mask)
        x = self.lnf(x)
        m = valid.unsqueeze(-1).to(x.dtype)
        pooled = (x * m).sum(1) / lens.clamp(min=1).to(x.dtype)[:, None]
        logits = self.head(pooled)
        if self.loss == "ce":
            return F.cross_entropy(logits, labels)
        return F.binary_cross_entropy_with_logits(logits[:, 0], labels.to(logits.dtype))


def step_len(i, t):
    return t - (i * 7919) % max(3 * t // 4, 1)


def zipf_cdf(vocab):
    w = 1.0 / (np.arange(vocab, dtype=np.float64) + 2.7)
    return np.cumsum(w)


def make_batch(b, t, vocab, cdf, seed):
    rng = np.random.default_rng(seed)
    draws = np.searchsorted(cdf, rng.random((b, t)) * cdf[-1], side="right").clip(0, vocab - 1)
    lens = np.array([step_len(i, t) for i in range(b)], dtype=np.int64)
    ids = np.where(np.arange(t)[None, :] < lens[:, None], draws, 0).astype(np.int64)
    labels = np.array([i % 2 for i in range(b)], dtype=np.int64)
    return torch.from_numpy(ids), torch.from_numpy(lens), torch.from_numpy(labels)


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def run_config(dev, preset, vocab, b, t, loss, mode, precision, steps, warmup):
    c, n_layer, nh, f, p = PRESETS[preset]
    torch.manual_seed(1)
    if precision not in ("fp32", "tf32", "bf16"):
        raise ValueError(f"unknown precision {precision!r} (fp32, tf32 or bf16)")
    torch.set_float32_matmul_precision("highest" if precision == "fp32" else "high")
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    model = Classifier(vocab, c, n_layer, nh, f, p, loss).to(dev).train()
    n_params = sum(x.numel() for x in model.parameters())
    decay = [x for x in model.parameters() if x.dim() >= 2]
    no_decay = [x for x in model.parameters() if x.dim() < 2]
    opt_kw = dict(lr=1e-4, betas=(0.9, 0.999), eps=1e-8)
    if dev.type == "cuda":
        opt_kw["fused"] = True
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}], **opt_kw)
    fwd = torch.compile(model, dynamic=False) if mode == "compile" else model
    cdf = zipf_cdf(vocab)
    batches = [make_batch(b, t, vocab, cdf, 100 + i) for i in range(4)]
    if dev.type == "cuda":
        batches = [tuple(z.pin_memory() for z in bt) for bt in batches]
    valid = sum(int(bt[1].sum()) for bt in batches) / len(batches)

    def step(i):
        ids, lens, labels = (z.to(dev, non_blocking=True) for z in batches[i % 4])
        opt.zero_grad(set_to_none=True)
        with autocast:
            loss_v = fwd(ids, lens, labels)
        loss_v.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss_v

    t0 = time.perf_counter()
    for i in range(warmup):
        step(i)
    sync(dev)
    warm_s = time.perf_counter() - t0  # includes compilation for torch.compile
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        lv = step(warmup + i)
        sync(dev)
        times.append((time.perf_counter() - t0) * 1e3)
    if not math.isfinite(float(lv.detach())):
        raise RuntimeError(f"loss is not finite: {float(lv.detach())}")
    ms = statistics.median(times)
    del model, opt, fwd
    if mode == "compile":
        torch._dynamo.reset()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return dict(
        preset=preset, loss=loss, b=b, t=t, params=n_params, mode=mode, precision=precision,
        steps=steps, ms_median=ms, ms_min=min(times), tokens_per_s=b * t / (ms * 1e-3),
        valid_tokens_per_s=valid / (ms * 1e-3), warmup_s=warm_s,
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", default=None, help="comma list of nanogpt,gpu (default both; CPU: gpu)")
    ap.add_argument("--seq-lens", default=None, help="comma list (default 256,512; CPU: 64)")
    ap.add_argument("--batch-size", type=int, default=None, help="B (default 64; CPU: 4)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default 20; CPU: 2)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--loss", choices=["ce", "bce"], default="ce")
    ap.add_argument("--vocab", type=int, default=VOCAB)
    ap.add_argument("--configs", default="eager-fp32,eager-tf32,eager-bf16,compile-bf16",
                    help="mode-precision list (mode eager|compile, precision fp32|tf32|bf16), run in this order")
    ap.add_argument("--budget-s", type=float, default=0,
                    help="skip a configuration that would start later than this many seconds minus its reserve (0: no limit)")
    ap.add_argument("--reserve-s", default="eager:10,compile:60",
                    help="seconds a configuration is expected to need, per mode (budget check)")
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    ap.add_argument("--smoke", action="store_true", help="tiny model, B=2, T=16, 1 step: checks the script runs")
    a = ap.parse_args()
    start = time.perf_counter()

    dev = torch.device(a.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cpu = dev.type == "cpu"
    if a.smoke:
        presets, lens, b, steps, vocab, a.warmup = ["tiny"], [16], 2, 1, 1000, 1
    else:
        presets = (a.presets or ("gpu" if cpu else "nanogpt,gpu")).split(",")
        lens = [int(x) for x in (a.seq_lens or ("64" if cpu else "256,512")).split(",")]
        b = a.batch_size or (4 if cpu else 64)
        steps = a.steps or (2 if cpu else 20)
        vocab = a.vocab
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    print(f"pytorch {torch.__version__} on {name}; B={b}, steps {steps} (+{a.warmup} warm-up), loss {a.loss}"
          + (" [CPU: small default shape]" if cpu and not a.smoke and a.seq_lens is None else ""), flush=True)
    configs = [tuple(x.split("-")) for x in a.configs.split(",")]
    reserve = {k: float(v) for k, v in (x.split(":") for x in a.reserve_s.split(","))}
    results, skipped = [], []

    def report():  # after every configuration: a later timeout still leaves the numbers so far
        print("TORCHJSON " + json.dumps(dict(torch=torch.__version__, device=name, results=results, skipped=skipped)), flush=True)
    for mode, prec in configs:
        for preset in presets:
            for t in lens:
                label = f"{preset} T={t} {mode} {prec}"
                if a.budget_s and time.perf_counter() - start + reserve.get(mode, 10) > a.budget_s:
                    skipped.append(label)
                    print(f"skipped (budget {a.budget_s:.0f}s): {label}", flush=True)
                    continue
                try:
                    r = run_config(dev, preset, vocab, b, t, a.loss, mode, prec, steps, a.warmup)
                except Exception as e:  # noqa: BLE001 -- report, go on with the others
                    print(f"FAILED {label}: {type(e).__name__}: {e}", flush=True)
                    skipped.append(label + " (failed)")
                    continue
                print(f"{label}: {r['ms_median']:.2f} ms/step, {r['tokens_per_s']:.0f} tok/s (warm-up {r['warmup_s']:.1f}s)", flush=True)
                results.append(r)
                report()
    print()
    print(f"{'preset':<8} {'T':>4} {'mode':<8} {'prec':<5} {'params':>10} {'ms':>9} {'ms min':>9} {'tok/s':>11} {'valid tok/s':>12} {'warmup s':>9}")
    for r in results:
        print(f"{r['preset']:<8} {r['t']:>4} {r['mode']:<8} {r['precision']:<5} {r['params']:>10} {r['ms_median']:>9.2f} "
              f"{r['ms_min']:>9.2f} {r['tokens_per_s']:>11.0f} {r['valid_tokens_per_s']:>12.0f} {r['warmup_s']:>9.1f}")
    report()
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
