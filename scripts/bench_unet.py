#!/usr/bin/env python
"""Benchmark the CPU preset of the ResShift Swin-UNet (`tadsr.unet.UNetConfig.cpu()`).

Prints, in one run:
  * forward time (median of several timed runs after one warm-up, batch 1, no_grad) and peak memory at 64x64 and
    128x128 latents;
  * the AdamW training-step time (forward + x0-prediction MSE + backward + step) at batch 8 on 32x32 latents.

Memory method: every measurement runs in a fresh `spawn`ed child process. The child builds the model and the
inputs, reads its high-water RSS (`resource.getrusage(RUSAGE_SELF).ru_maxrss`, KiB on Linux), runs the measured
work, and reads it again; the reported number is the increase of that high-water mark, i.e. the extra resident
memory the forward / training step needed on top of the model and inputs (activations, autograd buffers, AdamW
state, attention masks, allocator overhead). tracemalloc would not see torch's CPU allocations.

Usage: python scripts/bench_unet.py [--threads 2] [--repeats 5]
No assertions on time: the machine is shared, numbers are indicative.
"""
import argparse
import multiprocessing as mp
import resource
import statistics
import time


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _forward(side: int, threads: int, repeats: int):
    import torch
    from tadsr.unet import UNetConfig, count_params
    torch.set_num_threads(threads); torch.manual_seed(0)
    model = UNetConfig.cpu().build().eval()
    x, lq, t = torch.randn(1, 48, side, side), torch.rand(1, 3, side, side) * 2 - 1, torch.tensor([7])
    before = _maxrss_mib()
    times = []
    with torch.no_grad():
        for _ in range(repeats + 1):
            t0 = time.perf_counter(); model(x, t, lq); times.append(time.perf_counter() - t0)
    return count_params(model), statistics.median(times[1:]), min(times[1:]), _maxrss_mib() - before


def _train(batch: int, side: int, threads: int, repeats: int):
    import torch
    import torch.nn.functional as F
    from tadsr.unet import UNetConfig
    torch.set_num_threads(threads); torch.manual_seed(0)
    model = UNetConfig.cpu().build().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    z0, xt = torch.randn(batch, 48, side, side), torch.randn(batch, 48, side, side)
    lq, t = torch.rand(batch, 3, side, side) * 2 - 1, torch.randint(0, 15, (batch,))
    before = _maxrss_mib()
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        loss = F.mse_loss(model(xt, t, lq), z0)          # x0-prediction objective
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:]), min(times[1:]), _maxrss_mib() - before


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    ctx = mp.get_context("spawn")
    print(f"tadsr.unet CPU preset benchmark ({a.threads} threads, median of {a.repeats} after 1 warm-up; "
          "memory = increase of the child's peak RSS over model+inputs)")
    for side in (64, 128):
        with ctx.Pool(1) as pool:
            n, med, best, mem = pool.apply(_forward, (side, a.threads, a.repeats))
        print(f"  forward  batch 1, latent {side}x{side} (LR {side}x{side} -> HR {4 * side}x{4 * side}): "
              f"median {med * 1e3:7.1f} ms (min {best * 1e3:.1f}), peak extra RSS {mem:7.1f} MiB   [{n:,} params]")
    with ctx.Pool(1) as pool:
        med, best, mem = pool.apply(_train, (8, 32, a.threads, a.repeats))
    print(f"  training batch 8, latent 32x32, AdamW + x0 MSE: median {med * 1e3:7.1f} ms/step (min {best * 1e3:.1f}), "
          f"peak extra RSS {mem:7.1f} MiB")


if __name__ == "__main__":
    main()
