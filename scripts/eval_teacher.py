"""Measure a super-resolution model on the held-out photos (scikit-learn's china and flower): PSNR-Y, SSIM-Y
(border 4, 8-bit) and HF energy of bicubic, 1 step and T steps, plus time per image. Prints a markdown table.

Usage: python scripts/eval_teacher.py [WEIGHTS (default: registry 'teacher')] [--steps 1 15] [--seed 0] [--temperature 1]
"""
import argparse, time

import torch

from tadsr.core import load_image, load_pretrained
from tadsr.data import validation_photos
from tadsr.degradation import bicubic_resize
from tadsr.metrics import psnr_y, ssim_y, hf_energy
from tadsr.teacher import make_lr, center_crop_multiple, super_resolve


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("weights", nargs="?", default="teacher")
    ap.add_argument("--steps", type=int, nargs="+", default=[1, 15])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--temperature", type=float, default=1.0, help="scale of the prior noise (1: the paper's sampler)")
    a = ap.parse_args()
    net = load_pretrained(a.weights)
    rows, sums = [], {}
    for name, pil in validation_photos().items():
        hr = center_crop_multiple(load_image(pil), net.cfg.sf * net.lr_multiple)
        lr = make_lr(hr, net.cfg.sf)
        outs = {"bicubic": (bicubic_resize(lr, scale=net.cfg.sf).clamp(-1, 1), 0.0)}
        for s in a.steps:
            t0 = time.perf_counter()
            sr = super_resolve(net, lr, s, generator=torch.Generator().manual_seed(a.seed), temperature=a.temperature)
            outs[f"{s} step" + ("s" if s > 1 else "")] = (sr, time.perf_counter() - t0)
        outs["HR"] = (hr, 0.0)
        for k, (x, dt) in outs.items():
            p = psnr_y(x, hr).item() if k != "HR" else float("inf")
            s_ = ssim_y(x, hr).item() if k != "HR" else 1.0
            e = hf_energy(x).item()
            rows.append(f"| {name} ({hr.shape[-1]}x{hr.shape[-2]}) | {k} | {p:.2f} | {s_:.4f} | {e:.4f} | {dt:.2f} |")
            acc = sums.setdefault(k, [0, 0, 0, 0]); acc[0] += p; acc[1] += s_; acc[2] += e; acc[3] += 1
    print("| photo (HR size) | method | PSNR-Y (dB) | SSIM-Y | HF energy | time (s) |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    for k, (p, s_, e, n) in sums.items():
        if k != "HR": print(f"| **mean** | {k} | {p / n:.2f} | {s_ / n:.4f} | {e / n:.4f} | |")


if __name__ == "__main__":
    main()
