"""Where a distillation iteration spends its time: per-phase milliseconds (data, student forward, discriminator
step, teacher target, HSD, student update) for the plain recipe and for the cached-target pool, measured side by
side in one process with the shipped teacher.

  python scripts/bench_distill.py [--steps 3] [--batch-size 8] [--crop 128] [--device cpu|cuda] [--teacher teacher]

The first iteration of each configuration is a warm-up and is not counted. With `target_pool = batch size` every
iteration after the first reuses cached teacher targets, which is the steady state of a pool run.
"""
import argparse, tempfile, time

import torch

from tadsr.core import load_pretrained
from tadsr.data import bundled_photos
from tadsr.distill import DistillConfig, train_student


def run(teacher, photos, device, **kw):
    d = tempfile.mkdtemp(prefix="bench_distill_")
    dcfg = DistillConfig(log_every=1, ckpt_every=10**6, val_every=0, warmup=1, **kw)
    t0 = time.perf_counter()
    _, h = train_student(teacher, dcfg, photos, d, progress=False, device=device)
    wall = time.perf_counter() - t0
    rows = h["time_ms"][1:] or h["time_ms"]
    phases = sorted({k for r in rows for k in r if k != "step"})
    return {k: sum(r.get(k, 0.0) for r in rows) / len(rows) for k in phases}, wall


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=3); ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--crop", type=int, default=128); ap.add_argument("--device", default=None)
    ap.add_argument("--teacher", default="teacher")
    a = ap.parse_args()
    teacher = load_pretrained(a.teacher)
    photos = bundled_photos()
    n = a.steps + 1
    base = dict(steps=n, batch_size=a.batch_size, crop=a.crop)
    configs = {"HSD + t-GAN, fresh target": {}, "HSD + t-GAN, cached pool": {"target_pool": a.batch_size},
               "vanilla only, fresh target": {"distill": "none", "disc": "none"}}
    res = {}
    for name, kw in configs.items():
        res[name], _ = run(teacher, photos, a.device, **base, **kw)
    phases = ["data", "student", "disc", "teacher", "hsd", "g_step"]
    dev = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name() if dev.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; batch {a.batch_size}, crop {a.crop}, mean of {a.steps} iterations after one warm-up")
    print("| configuration | " + " | ".join(phases) + " | total ms | it/s |")
    print("|---|" + "---|" * (len(phases) + 2))
    for k, r in res.items():
        tot = sum(r.get(p, 0.0) for p in phases)
        print(f"| {k} | " + " | ".join(f"{r.get(p, 0.0):.0f}" for p in phases) + f" | {tot:.0f} | {1e3 / tot:.2f} |")


if __name__ == "__main__":
    main()
