#!/usr/bin/env python
"""Count what one super-resolution step asks of the hardware: ATen calls and FLOPs per part, on any machine.

With `tadsr.recipe.one_step_census` (lesson 13), for the full-size architecture (`TeacherConfig.official_realsr_v1()`,
random weights: the counts do not depend on the values) it runs, on the CPU, 64x64 -> 256x256 in one step and its three parts (VQ encode of the bicubic-upsampled LR,
one UNet call, VQ decode) under two counters:
  * a `TorchDispatchMode` that counts every ATen call (each is at least one host-side dispatch; the non-view ones are
    GPU kernel launches in eager mode), split into view-like calls (no kernel) and the rest;
  * `torch.utils.flop_counter.FlopCounterMode` (matmuls and convolutions; element-wise work is not counted).
Why it matters (lesson 13): a part whose time is far above FLOPs / device throughput, and that makes many calls, is
bound by per-call host overhead, which a CUDA graph or torch.compile removes; a part with many FLOPs is bound by
arithmetic, which lower precision and better memory layout speed up.

Usage: python scripts/op_census.py --json nbs/op_census.json      (full size, about a minute on 2 CPU cores)
       python scripts/op_census.py --small                          (the CPU preset, a few seconds)
"""
import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="the reduced CPU preset instead of the full-size network")
    ap.add_argument("--lr-side", type=int, default=64, help="LR side (default 64: the paper's 64 -> 256)")
    ap.add_argument("--json", default=None, help="write the counts here")
    args = ap.parse_args(argv)
    import torch
    from tadsr.recipe import one_step_census
    from tadsr.teacher import DiffusionSR, TeacherConfig
    torch.manual_seed(0)
    cfg = TeacherConfig.cpu() if args.small else TeacherConfig.official_realsr_v1()
    net = DiffusionSR(cfg).eval()
    lr = torch.rand(1, 3, args.lr_side, args.lr_side, generator=torch.Generator().manual_seed(0)) * 2 - 1
    t0 = time.perf_counter()
    res = {"schema": 1, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "preset": "small" if args.small else "official_realsr_v1", "latent": type(net.latent).__name__,
           "lr_side": args.lr_side, "hr_side": args.lr_side * cfg.sf, "torch": torch.__version__}
    res["parts"] = one_step_census(net, lr)
    for name, r in res["parts"].items():
        print(f"{name:9s} {r['aten_calls']:5d} ATen calls ({r['kernel_calls']:5d} not view-like) {r['gflop']:8.1f} GFLOP")
    res["seconds"] = round(time.perf_counter() - t0, 1)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
        print(f"written: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
