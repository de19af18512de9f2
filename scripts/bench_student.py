#!/usr/bin/env python
"""Speed of the shipped one-step student next to the 15-step teacher, side by side in one process (issue #4).

Prints: median wall time of a 64x64 -> 256x256 super-resolution by the 15-step teacher and by the one-step student
(`tadsr.teacher.super_resolve`, after one warm-up each), their ratio (the limit is 15x: the student runs the same
network once), the student's time split (z_y = E(bicubic_up(LR)), the UNet, decoding), and the student's output
megapixels per second on larger inputs (256 -> 1024 in one pass; 512 -> 2048 through `upscale_tensor`, the CLI path,
with the default 512 px tile = one pass and with 256 px tiles, each with its peak RSS), and the CLI's channels-last
weights (`tadsr.inference.for_inference`) against the default layout at 64 and 256 px.

Usage: python scripts/bench_student.py [--threads 2] [--repeats 5]
No assertions: the machine may be shared; the ratio is measured side by side, the absolute times are indicative.
"""
import argparse
import resource
import subprocess
import sys
import time

import torch


def med(fn, repeats):
    "Median seconds of `repeats` timed calls after one warm-up (tadsr.metrics.time_it)."
    from tadsr.metrics import time_it
    return time_it(fn, repeats=repeats, warmup=1)["median_ms"] / 1e3


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2); ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--one-upscale", type=int, default=None, help=argparse.SUPPRESS)   # internal: the child process
    a = ap.parse_args()
    if a.one_upscale is not None: return one_upscale(a.one_upscale, a.threads)
    torch.set_num_threads(a.threads)
    from tadsr.core import load_pretrained
    from tadsr.inference import DEFAULT_TILE, for_inference
    from tadsr.model import super_resolve
    teacher, student = load_pretrained("teacher").eval(), load_pretrained("student").eval()
    g = torch.Generator().manual_seed(0)
    lr = torch.rand(1, 3, 64, 64, generator=g) * 2 - 1
    with torch.inference_mode():
        t15 = med(lambda: super_resolve(teacher, lr, 15, generator=torch.Generator().manual_seed(0)), max(1, a.repeats // 2))
        t1 = med(lambda: super_resolve(student, lr, 1, generator=torch.Generator().manual_seed(0)), a.repeats)
        _, zy = student.encode_pair(None, lr)
        t_enc = med(lambda: student.encode_pair(None, lr), a.repeats)
        t_net = med(lambda: student.predict_x0(zy, torch.full((1,), student.T - 1), zy, lr), a.repeats)
        t_dec = med(lambda: student.latent.decode(zy).clamp(-1, 1), a.repeats)
        print(f"torch {torch.__version__}, {a.threads} threads")
        print(f"64 -> 256: teacher 15 steps {t15 * 1e3:.0f} ms | student 1 step {t1 * 1e3:.1f} ms | speed-up {t15 / t1:.1f}x")
        print(f"  student split: z_y {t_enc * 1e3:.1f} ms, network {t_net * 1e3:.1f} ms, decode {t_dec * 1e3:.1f} ms")
        print(f"  student output: {256 * 256 / 1e6 / t1:.2f} MP/s")
        big = torch.rand(1, 3, 256, 256, generator=g) * 2 - 1
        tb = med(lambda: super_resolve(student, big, 1, generator=torch.Generator().manual_seed(0)), max(1, a.repeats // 2))
        print(f"256 -> 1024 one pass: {tb:.2f} s = {1024 * 1024 / 1e6 / tb:.2f} MP/s")
        # the layout `tadsr.inference.for_inference` gives the CLI's models on the CPU, side by side with the default
        fast = for_inference(load_pretrained("student"))
        for n in (64, 256):
            x = torch.rand(1, 3, n, n, generator=g) * 2 - 1
            r = {}
            for _ in range(2):        # interleaved, so that a load change on the machine hits both
                for name, net in (("NCHW", student), ("channels_last", fast)):
                    r.setdefault(name, []).append(med(lambda: super_resolve(net, x, 1, generator=torch.Generator().manual_seed(0)),
                                                      max(1, a.repeats // 2)))
            t0, t1 = min(r["NCHW"]), min(r["channels_last"])
            print(f"{n} -> {4 * n}: NCHW {t0 * 1e3:.0f} ms vs channels_last (CLI) {t1 * 1e3:.0f} ms = {t0 / t1:.2f}x, "
                  f"{(4 * n) ** 2 / 1e6 / t1:.2f} MP/s")
    for tile in (DEFAULT_TILE, 256):   # each in a fresh process, so that its peak RSS is its own
        r = subprocess.run([sys.executable, __file__, "--threads", str(a.threads), "--one-upscale", str(tile)],
                           capture_output=True, text=True, check=True)
        print(r.stdout.strip())


def one_upscale(tile: int, threads: int):
    "512 -> 2048 through `upscale_tensor` (the CLI path) with `tile`; prints time, MP/s and this process's peak RSS."
    torch.set_num_threads(threads)
    from tadsr.core import load_pretrained
    from tadsr.inference import for_inference, upscale_tensor
    student = for_inference(load_pretrained("student"))     # as `tadsr upscale` loads it
    huge = torch.rand(1, 3, 512, 512, generator=torch.Generator().manual_seed(1)) * 2 - 1
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with torch.inference_mode():
        t0 = time.perf_counter(); upscale_tensor(student, huge, 1, tile=tile, seed=0); dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    how = "one pass" if tile >= 512 else f"{tile} px tiles, synced GroupNorm"
    print(f"512 -> 2048, tile={tile} ({how}): {dt:.2f} s = {2048 * 2048 / 1e6 / dt:.2f} MP/s, "
          f"peak RSS {peak:.0f} MB ({peak - base:.0f} MB above the loaded model)")


if __name__ == "__main__":
    main()
