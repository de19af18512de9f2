#!/usr/bin/env python
"""Session-4 probe of the teacher's low-t defect (DEVELOPING.md): can a *linear* denoiser do what the UNet does not?

1. **Linear oracle** (`oracle`): at teacher-forced steps t, fit by least squares a map from the KxK neighbourhood of the
   noisy residual z_t - z_y (plus z_y and a constant) to z0 - z_y, on the 6 training photos (2 noise draws each), and
   compare its error and its share of kept noise with the shipped teacher's, on held-out and training photos.
2. **Linear skip** (`skip`): keep the UNet frozen and add a per-step linear correction A_t(u) (KxK, u the noisy
   residual of the precond head) fitted in closed form to the teacher's remaining error at every t; then the 1- and
   15-step PSNR-Y gain over bicubic with and without it (seed 0, the deterministic sampler).

Measured in session 4 (2 CPU cores, K=3; held-out photos centre-cropped to 512², training photos to 256²):
  oracle, t=0 (input rms 0.0200): the teacher keeps 86-88 % of the noise, the linear map 63-64 %. Teacher vs linear
  rms: china 0.0214 vs 0.0196, flower 0.0184 vs 0.0191, training photos 0.0180-0.0198 vs 0.0149-0.0172.
  skip: the 15-step gain *falls* on every photo (china -0.07 -> -0.14, flower +0.24 -> +0.01 dB; training photos by
  0.15-0.34 dB); one step moves by at most 0.11 dB. A per-step least-squares linear fix does not help the sampler.

Usage: python scripts/linear_denoiser_probe.py oracle [--k 3] [--ts 0 2 5]
       python scripts/linear_denoiser_probe.py skip [--k 3] [--draws 3]       (about a minute)
"""
import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))

from tadsr.core import load_image, load_pretrained          # noqa: E402
from tadsr.data import bundled_photos, validation_photos    # noqa: E402
from tadsr.degradation import bicubic_resize                # noqa: E402
from tadsr.diffusion import extract, q_sample               # noqa: E402
from tadsr.metrics import psnr_y                            # noqa: E402
from tadsr.teacher import DiffusionSR, center_crop_multiple, make_lr, super_resolve  # noqa: E402


def crop(im, side: int = 256):
    "Square centre crop, side a multiple of 128 (the CPU teacher's LR multiple times 4) and at most `side`."
    x = load_image(im)
    return center_crop_multiple(x, 128, min(*x.shape[-2:], side))


def neighbourhood(u, k: int, extra=None):
    "(1, C*k*k [+ extra channels] + 1, h, w): the kxk neighbourhood of every latent pixel, extra maps, a constant."
    C = u.shape[1]
    parts = [F.unfold(u, k, padding=k // 2).view(1, C * k * k, *u.shape[-2:])] + ([extra] if extra is not None else [])
    return torch.cat(parts + [torch.ones_like(u[:, :1])], 1)


def solve(XtX, XtY):
    "Ridge-regularised least squares (relative ridge 1e-3)."
    lam = 1e-3 * XtX.diagonal().mean()
    return torch.linalg.solve(XtX + lam * torch.eye(XtX.shape[0], dtype=XtX.dtype), XtY)


def draw(net, hr, t: int, seed: int):
    "Teacher-forced sample at step t: (z_t, z_y, z0, lr, eps)."
    lr = make_lr(hr, net.cfg.sf); z0, zy = net.encode_pair(hr, lr)
    eps = torch.randn(z0.shape, generator=torch.Generator().manual_seed(seed))
    return q_sample(z0, zy, torch.full((1,), t, dtype=torch.long), net.sched, noise=eps), zy, z0, lr, eps


def oracle(net, train, test, ts, k: int):
    for t in ts:
        XtX = XtY = 0
        for i, hr in enumerate(train.values()):
            for d in range(2):
                zt, zy, z0, _, _ = draw(net, hr, t, 100 * i + d)
                X = neighbourhood(zt - zy, k, zy)[0].flatten(1).T.double()
                XtX = XtX + X.T @ X; XtY = XtY + X.T @ (z0 - zy)[0].flatten(1).T.double()
        W, std = solve(XtX, XtY), net.sched.kappa_times_sqrt_etas[t].item()
        for name, hr in test.items():
            zt, zy, z0, lr, eps = draw(net, hr, t, 7)
            x0 = net.predict_x0(zt, torch.full((1,), t, dtype=torch.long), zy, lr)
            lin = zy + (neighbourhood(zt - zy, k, zy)[0].flatten(1).T.double() @ W).T.reshape(z0.shape).float()
            def stat(p):
                e = p - z0
                return f"rms {e.pow(2).mean().sqrt():.4f} kept {((e * eps).mean() / (std * eps.pow(2).mean())):.2f}"
            print(f"t={t} {name:22s} input rms {(zt - z0).pow(2).mean().sqrt():.4f} | teacher {stat(x0)} | "
                  f"linear {k}x{k} {stat(lin)}")


def skip(net, train, test, k: int, draws: int):
    orig, A = DiffusionSR.predict_x0, {}
    def residual(self, zt, t, zy):
        return (zt - zy) / (1 - extract(self.sched.etas, t, zt))
    for t in range(net.T):
        tt, XtX, XtY = torch.full((1,), t, dtype=torch.long), 0, 0
        for i, hr in enumerate(train.values()):
            for d in range(draws):
                zt, zy, z0, lr, _ = draw(net, hr, t, 1000 * t + 10 * i + d)
                X = neighbourhood(residual(net, zt, tt, zy), k)[0].flatten(1).T.double()
                XtX = XtX + X.T @ X; XtY = XtY + X.T @ (z0 - orig(net, zt, tt, zy, lr))[0].flatten(1).T.double()
        A[t] = solve(XtX, XtY)
    def patched(self, zt, t, zy, lq):
        f = neighbourhood(residual(self, zt, t, zy), k)
        return orig(self, zt, t, zy, lq) + torch.einsum("bfhw,fc->bchw", f.double(), A[int(t[0])]).float()
    try:
        for name, hr in test.items():
            lr = make_lr(hr, net.cfg.sf); b = psnr_y(bicubic_resize(lr, scale=net.cfg.sf).clamp(-1, 1), hr).item()
            g = {}
            for label, fn in (("before", orig), ("with A_t", patched)):
                DiffusionSR.predict_x0 = fn
                for s in (1, 15):
                    sr = super_resolve(net, lr, s, generator=torch.Generator().manual_seed(0))
                    g[label, s] = psnr_y(sr, hr).item() - b
            print(f"{name:22s} bicubic {b:.2f} dB | gain before: 1 step {g['before', 1]:+.2f}, 15 steps "
                  f"{g['before', 15]:+.2f} | with A_t: 1 step {g['with A_t', 1]:+.2f}, 15 steps {g['with A_t', 15]:+.2f}")
    finally:
        DiffusionSR.predict_x0 = orig


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["oracle", "skip"])
    ap.add_argument("--k", type=int, default=3, help="neighbourhood side of the linear map (odd)")
    ap.add_argument("--ts", type=int, nargs="+", default=[0, 2, 5], help="steps probed by the oracle")
    ap.add_argument("--draws", type=int, default=3, help="noise draws per training photo and step (skip)")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    net = load_pretrained("teacher").eval()
    train = {n: crop(im) for n, im in bundled_photos().items()}
    test = {**{f"held-out:{n}": crop(im, 512) for n, im in validation_photos().items()},
            **{f"train:{n}": hr for n, hr in train.items()}}
    with torch.no_grad():
        oracle(net, train, test, a.ts, a.k) if a.what == "oracle" else skip(net, train, test, a.k, a.draws)
    return 0


if __name__ == "__main__":
    sys.exit(main())
