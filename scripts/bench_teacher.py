#!/usr/bin/env python
"""Benchmark the CPU teacher (`tadsr.teacher.TeacherConfig.cpu()`) through `tadsr.inference` (issue #3 acceptance).

Prints, in one run:
  * time of the 15-step teacher vs ONE network forward (the one-step model) for a 64x64 -> 256x256 upscale
    (`upscale_tensor`, untiled; median of --repeats timed runs after one warm-up each), side by side, and their ratio;
  * peak memory of a tiled 1024x1024 -> 4096x4096 one-step upscale (`upscale(img, tile=...)`, the CLI path: PIL in,
    PIL out; the default 512 px tiles and 256 px tiles) next to an untiled 256x256 -> 1024x1024 one-step upscale.

Weights: the shipped 'teacher' from tadsr/weights/registry.json when there is one, else the CPU preset with random
weights (the printout says which). Time and memory do not depend on the weight values.

Memory method (as scripts/bench_unet.py): every measurement runs in a fresh `spawn`ed child. The child builds the
model and the input image, reads its high-water RSS (`resource.getrusage(RUSAGE_SELF).ru_maxrss`, KiB on Linux),
runs the upscale, and reads it again. Printed: the child's peak RSS (everything: Python, torch, model, image,
upscale) and its increase over model+input (what the upscale itself needed: noise, tiles, activations, blending
accumulators, the output image).

Usage: python scripts/bench_teacher.py [--threads 2] [--repeats 3]
No assertions: the machine may be shared, numbers are indicative.
"""
import argparse
import multiprocessing as mp
import resource
import statistics
import time


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _model(threads: int):
    "(DiffusionSR in eval mode, a line saying which weights)."
    import torch
    torch.set_num_threads(threads)
    from tadsr.core import load_pretrained, registry
    from tadsr.model import DiffusionSR, TeacherConfig
    if "teacher" in registry():
        return load_pretrained("teacher").eval(), "shipped 'teacher' weights (tadsr/weights)"
    torch.manual_seed(0)
    return DiffusionSR(TeacherConfig.cpu()).eval(), "CPU preset with RANDOM weights (no 'teacher' in the registry yet)"


def _photo(side: int):
    "scikit-image's astronaut resized to side x side (RGB PIL image)."
    from PIL import Image
    from skimage.data import astronaut
    return Image.fromarray(astronaut()).resize((side, side), Image.BICUBIC)


def _timing(threads: int, repeats: int):
    from tadsr.core import load_image
    from tadsr.inference import upscale_tensor
    from tadsr.unet import count_params
    net, which = _model(threads)
    lr = load_image(_photo(64))                                         # (1,3,64,64) in [-1,1]
    out = {}
    for steps in (net.T, 1):
        times = []
        for _ in range(repeats + 1):
            t0 = time.perf_counter(); y = upscale_tensor(net, lr, steps, tile=None, seed=0)
            times.append(time.perf_counter() - t0)
        assert tuple(y.shape) == (1, 3, 256, 256)
        out[steps] = (statistics.median(times[1:]), min(times[1:]))
    return which, count_params(net.unet), net.T, out


def _memory(side: int, tile, threads: int):
    import gc

    from tadsr.inference import upscale
    net, _ = _model(threads)
    img = _photo(side)
    gc.collect()
    before = _maxrss_mib()
    t0 = time.perf_counter()
    res = upscale(img, net, steps=1, tile=tile, seed=0)
    dt = time.perf_counter() - t0
    after = _maxrss_mib()
    return res.size, dt, after, after - before


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    ctx = mp.get_context("spawn")
    print(f"tadsr CPU teacher benchmark ({a.threads} torch threads; times: median of {a.repeats} after 1 warm-up)")
    with ctx.Pool(1) as pool:
        which, n, T, t = pool.apply(_timing, (a.threads, a.repeats))
    print(f"  weights: {which}; UNet {n:,} parameters")
    print(f"  64x64 -> 256x256, untiled:  teacher {T} steps: median {t[T][0]:7.3f} s (min {t[T][1]:.3f})   |   "
          f"one forward (1 step): median {t[1][0]:7.3f} s (min {t[1][1]:.3f})   |   ratio {t[T][0] / t[1][0]:.1f}x")
    for side, tile in ((256, None), (1024, 512), (1024, 256)):   # 512: the CLI's default tile
        with ctx.Pool(1) as pool:
            size, dt, peak, extra = pool.apply(_memory, (side, tile, a.threads))
        how = f"tiled (tile {tile}, overlap {tile // 4})" if tile else "untiled"
        print(f"  {side}x{side} -> {size[0]}x{size[1]}, 1 step, {how:28s}: peak RSS {peak:7.0f} MiB "
              f"(+{extra:6.0f} MiB over model+input), {dt:6.1f} s")


if __name__ == "__main__":
    main()
