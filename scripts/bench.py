#!/usr/bin/env python
"""Speed and memory of tadsr's networks, one sub-command per question; ratios are measured side by side in one run.

  unet     the CPU-preset Swin-UNet: forward at 64x64 and 128x128 latents, one AdamW training step; peak extra RSS
  teacher  the CPU teacher, 15 steps vs one step (64 -> 256); peak memory of tiled vs untiled one-step upscales
  student  the shipped one-step student vs the 15-step teacher: speed-up, time split, MP/s, channels-last vs NCHW,
           memory of tiled 512 -> 2048 upscales
  distill  where a distillation iteration spends its time: per-phase ms, fresh teacher target vs cached pool vs
           vanilla only
  gpu      the full-size network (lesson 13): one step fp32 / bf16 and its parts, bf16 variants (CUDA graph,
           channels-last), the 15-step teacher, distillation speed, optionally torch.compile; --json
  census   ATen calls and FLOPs of one step and its parts, on any machine; --json (lesson 13 reads nbs/op_census.json)

Times are medians (and minima) of several timed calls after warm-up (`tadsr.metrics.time_it`, CUDA-synchronised).
The machine may be shared: absolute times are indicative, the ratios printed beside them are measured in the same
run. Memory numbers come from fresh `spawn`ed child processes (their peak RSS is their own).

  python scripts/bench.py unet | teacher | student | distill | census --small      (CPU; seconds to minutes)
  python scripts/bench.py gpu --json nbs/gpu_results.json                          (GPU, about 3 minutes)
  python scripts/bench.py census --json nbs/op_census.json                         (full size, about a minute)
  python scripts/bench.py SUB-COMMAND --help
"""
import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))   # run from anywhere without installing tadsr


# ---------------------------------------------------------------------------------------------------- shared helpers
def _maxrss_mib() -> float:
    "This process's high-water resident memory (ru_maxrss is KiB on Linux)."
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _in_child(fn, *args):
    "`fn(*args)` in a fresh spawned process, so that its peak RSS is its own."
    with mp.get_context("spawn").Pool(1) as pool: return pool.apply(fn, args)


def _timed(fn, repeats: int, warmup: int = 1) -> dict:
    "{'median', 'min', 'n'} in ms of `repeats` calls of `fn()` after `warmup` untimed ones."
    from tadsr.metrics import time_it
    r = time_it(fn, repeats=repeats, warmup=warmup)
    return {"median": round(r["median_ms"], 3), "min": round(r["min_ms"], 3), "n": repeats}


def _seeded():
    "A CPU generator seeded with 0 (the same noise for every call)."
    import torch
    return torch.Generator().manual_seed(0)


def _rand_lr(side: int, seed: int = 0):
    "A (1,3,side,side) LR image in [-1,1], fixed by `seed`."
    import torch
    return torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _fmt(r: dict) -> str: return f"{r['median']:9.2f} ms (min {r['min']:.2f}, n={r['n']})"


def _write_json(path, res: dict):
    if not path: return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(res, indent=1) + "\n")


# ------------------------------------------------------------------------------------------------------------ unet
def _unet_forward(side: int, threads: int, repeats: int):
    "CPU-preset UNet, batch 1, no_grad: (params, timing, extra RSS MiB over model+inputs)."
    import torch
    from tadsr.unet import UNetConfig, count_params
    torch.set_num_threads(threads); torch.manual_seed(0)
    model = UNetConfig.cpu().build().eval()
    x, lq, t = torch.randn(1, 48, side, side), torch.rand(1, 3, side, side) * 2 - 1, torch.tensor([7])
    before = _maxrss_mib()
    with torch.no_grad(): r = _timed(lambda: model(x, t, lq), repeats)
    return count_params(model), r, _maxrss_mib() - before


def _unet_train(batch: int, side: int, threads: int, repeats: int):
    "One AdamW step of the x0-prediction MSE at `batch` x `side`²: (timing, extra RSS MiB)."
    import torch
    import torch.nn.functional as F
    from tadsr.unet import UNetConfig
    torch.set_num_threads(threads); torch.manual_seed(0)
    model = UNetConfig.cpu().build().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    z0, xt = torch.randn(batch, 48, side, side), torch.randn(batch, 48, side, side)
    lq, t = torch.rand(batch, 3, side, side) * 2 - 1, torch.randint(0, 15, (batch,))
    def step():
        loss = F.mse_loss(model(xt, t, lq), z0)
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
    before = _maxrss_mib()
    r = _timed(step, repeats)
    return r, _maxrss_mib() - before


def cmd_unet(a):
    "Forward at 64² and 128² latents and one training step of the CPU-preset UNet, each in its own child process."
    print(f"tadsr.unet CPU preset ({a.threads} threads, median of {a.repeats} after 1 warm-up; memory = increase of "
          "the child's peak RSS over model+inputs)")
    fwd = {}
    for side in (64, 128):
        n, r, mem = fwd[side] = _in_child(_unet_forward, side, a.threads, a.repeats)
        print(f"  forward  batch 1, latent {side}x{side} (LR {side} -> HR {4 * side}): {_fmt(r)}, peak extra RSS "
              f"{mem:7.1f} MiB   [{n:,} params]")
    print(f"  ratio 128² / 64² forward: {fwd[128][1]['median'] / fwd[64][1]['median']:.2f}x for 4x the pixels")
    r, mem = _in_child(_unet_train, 8, 32, a.threads, a.repeats)
    print(f"  training batch 8, latent 32x32, AdamW + x0 MSE: {_fmt(r)} per step, peak extra RSS {mem:7.1f} MiB")
    print(f"  ratio training step (8 x 32²) / forward (1 x 64², the same pixels): "
          f"{r['median'] / fwd[64][1]['median']:.2f}x")


# --------------------------------------------------------------------------------------------------------- teacher
def _teacher(threads: int):
    "(the CPU teacher ready for inference, a line saying which weights)."
    import torch
    torch.set_num_threads(threads)
    from tadsr.core import registry
    from tadsr.inference import for_inference, load_model
    from tadsr.model import DiffusionSR, TeacherConfig
    if "teacher" in registry(): return load_model("teacher")[0], "shipped 'teacher' weights (tadsr/weights)"
    torch.manual_seed(0)
    return for_inference(DiffusionSR(TeacherConfig.cpu())), "CPU preset with RANDOM weights (no 'teacher' shipped)"


def _photo(side: int):
    "scikit-image's astronaut resized to side x side (RGB PIL image)."
    from PIL import Image
    from skimage.data import astronaut
    return Image.fromarray(astronaut()).resize((side, side), Image.BICUBIC)


def _teacher_timing(threads: int, repeats: int):
    "15 steps vs 1 step, 64 -> 256, untiled, through `upscale_tensor` (the CLI path)."
    from tadsr.core import load_image
    from tadsr.inference import upscale_tensor
    from tadsr.unet import count_params
    net, which = _teacher(threads)
    lr = load_image(_photo(64))
    out = {s: _timed(lambda s=s: upscale_tensor(net, lr, s, tile=None, seed=0), repeats) for s in (net.T, 1)}
    return which, count_params(net.unet), net.T, out


def _teacher_memory(side: int, tile, threads: int):
    "One-step `upscale` (PIL in, PIL out) of a side² photo: (output size, s, peak RSS MiB, extra over model+input)."
    import gc
    from tadsr.inference import upscale
    net, _ = _teacher(threads)
    img = _photo(side)
    gc.collect()
    before = _maxrss_mib()
    t0 = time.perf_counter()
    res = upscale(img, net, steps=1, tile=tile, seed=0)
    dt, after = time.perf_counter() - t0, _maxrss_mib()
    return res.size, dt, after, after - before


def cmd_teacher(a):
    "The 15-step teacher against one network forward, and the memory of tiled and untiled upscales."
    print(f"tadsr CPU teacher ({a.threads} threads; times: median of {a.repeats} after 1 warm-up)")
    which, n, T, t = _in_child(_teacher_timing, a.threads, a.repeats)
    print(f"  weights: {which}; UNet {n:,} parameters")
    print(f"  64x64 -> 256x256, untiled: {T} steps {_fmt(t[T])} | 1 step {_fmt(t[1])} | "
          f"ratio {t[T]['median'] / t[1]['median']:.1f}x (about {T}x expected: the same network {T} times vs once)")
    for side, tile in ((256, None), (1024, 512), (1024, 256)):   # 512: the CLI's default tile
        size, dt, peak, extra = _in_child(_teacher_memory, side, tile, a.threads)
        how = f"tiled (tile {tile}, overlap {tile // 4})" if tile else "untiled"
        print(f"  {side}x{side} -> {size[0]}x{size[1]}, 1 step, {how:28s}: peak RSS {peak:7.0f} MiB "
              f"(+{extra:6.0f} MiB over model+input), {dt:6.1f} s")


# --------------------------------------------------------------------------------------------------------- student
def _student_tiled(tile: int, threads: int) -> dict:
    "512 -> 2048 through `upscale_tensor` with `tile` (the CLI path): seconds, MP/s, peak RSS (this child's)."
    import torch
    torch.set_num_threads(threads)
    from tadsr.inference import load_model, upscale_tensor
    student = load_model("student")[0]                          # as `tadsr upscale` loads it
    huge = _rand_lr(512, seed=1)
    base = _maxrss_mib()
    t0 = time.perf_counter(); upscale_tensor(student, huge, 1, tile=tile, seed=0); dt = time.perf_counter() - t0
    return {"s": dt, "mp_per_s": 2048 * 2048 / 1e6 / dt, "peak": _maxrss_mib(), "extra": _maxrss_mib() - base}


def cmd_student(a):
    "The one-step student next to the 15-step teacher, its parts, throughput and layouts."
    import torch
    torch.set_num_threads(a.threads)
    from tadsr.core import load_pretrained
    from tadsr.diffusion import prior_sample
    from tadsr.inference import DEFAULT_TILE, load_model
    from tadsr.model import super_resolve
    teacher, student = load_pretrained("teacher").eval(), load_pretrained("student").eval()   # NCHW weights
    fast = load_model("student")[0]                                  # the CLI's channels-last copy (for_inference)
    sr = lambda net, x, k: super_resolve(net, x, k, generator=_seeded())
    few = max(1, a.repeats // 2)
    lr = _rand_lr(64)
    print(f"torch {torch.__version__}, {a.threads} threads; median of {a.repeats} ({few} for the slow ones) after 1 warm-up")
    with torch.inference_mode():
        t15, t1 = _timed(lambda: sr(teacher, lr, 15), few), _timed(lambda: sr(student, lr, 1), a.repeats)
        print(f"64 -> 256: teacher 15 steps {_fmt(t15)} | student 1 step {_fmt(t1)} | speed-up "
              f"{t15['median'] / t1['median']:.1f}x (about 15x expected: the same network 15 times vs once)")
        _, zy = student.encode_pair(None, lr)
        zT, t = prior_sample(zy, student.sched, noise=torch.zeros_like(zy)), torch.full((1,), student.T - 1)
        parts = {"z_y = E(up(LR))": lambda: student.encode_pair(None, lr),
                 "network": lambda: student.x0_fn(zy, lr)(zT, t),
                 "decode": lambda: student.latent.decode(zy).clamp(-1, 1)}
        split = {k: _timed(fn, a.repeats)["median"] for k, fn in parts.items()}
        print("  student split: " + ", ".join(f"{k} {v:.1f} ms ({v / t1['median']:.0%})" for k, v in split.items()))
        print(f"  student output: {256 * 256 / 1e3 / t1['median']:.2f} MP/s")
        big = _rand_lr(256)
        tb = _timed(lambda: sr(student, big, 1), few)["median"]
        print(f"256 -> 1024 one pass: {tb / 1e3:.2f} s = {1024 * 1024 / 1e3 / tb:.2f} MP/s "
              f"({(1024 * 1024 / tb) / (256 * 256 / t1['median']):.2f}x the 64 px rate)")
        for n in (64, 256):                                          # the CLI layout against the default one
            x, r = _rand_lr(n), {}
            for _ in range(2):                                       # interleaved: a load change hits both
                for name, net in (("NCHW", student), ("channels_last", fast)):
                    r.setdefault(name, []).append(_timed(lambda: sr(net, x, 1), few)["median"])
            t0, tc = min(r["NCHW"]), min(r["channels_last"])
            print(f"{n} -> {4 * n}: NCHW {t0:.0f} ms vs channels_last (CLI) {tc:.0f} ms = {t0 / tc:.2f}x, "
                  f"{(4 * n) ** 2 / 1e3 / tc:.2f} MP/s")
    res = {tile: _in_child(_student_tiled, tile, a.threads) for tile in (DEFAULT_TILE, 256)}
    for tile, r in res.items():
        how = "one pass" if tile >= 512 else f"{tile} px tiles, synced GroupNorm"
        print(f"512 -> 2048, tile={tile} ({how}): {r['s']:.2f} s = {r['mp_per_s']:.2f} MP/s, peak RSS {r['peak']:.0f} "
              f"MiB ({r['extra']:.0f} MiB above the loaded model)")
    print(f"  256 px tiles vs one pass: {res[256]['s'] / res[DEFAULT_TILE]['s']:.1f}x the time, "
          f"{res[256]['extra'] / max(res[DEFAULT_TILE]['extra'], 1):.2f}x the extra memory")


# --------------------------------------------------------------------------------------------------------- distill
DISTILL_PHASES = ("data", "student", "disc", "teacher", "g_step")   # the trainer's clock (tadsr.distill.train_student)


def timed_rows(hist: dict, steps: int) -> tuple[list, str]:
    "The trainer's per-iteration phase rows (log_every=1) after the warm-up one, and a warning when some are missing."
    rows, warn = hist["time_ms"], ""
    if len(rows) < steps:
        warn = (f"WARNING: train_student logged phase times for {len(rows)} of {steps} iterations (its clock must be "
                "the one TrainRun logs and resets); the numbers below include the warm-up iteration")
    return (rows[1:] if len(rows) > 1 else rows), warn


def phase_ms(teacher, photos, device, **kw) -> tuple[dict, str]:
    "Mean ms per phase of `train_student` iterations with DistillConfig(**kw), the first (warm-up) one left out."
    from tadsr.distill import DistillConfig, train_student
    d = tempfile.mkdtemp(prefix="tadsr_bench_distill_")
    try:
        cfg = DistillConfig(**{**dict(log_every=1, ckpt_every=10**6, val_every=0, warmup=1), **kw})
        _, h = train_student(teacher, cfg, photos, d, progress=False, device=device, log=lambda s: None)
    finally: shutil.rmtree(d, ignore_errors=True)
    rows, warn = timed_rows(h, cfg.steps)
    return {k: sum(r.get(k, 0.0) for r in rows) / len(rows) for k in DISTILL_PHASES}, warn


def cmd_distill(a):
    "Per-phase ms of a distillation iteration for three configurations, side by side, with the shipped teacher."
    import torch
    torch.set_num_threads(a.threads)
    from tadsr.core import load_pretrained
    from tadsr.data import bundled_photos
    teacher, photos = load_pretrained(a.teacher), list(bundled_photos().values())
    base = dict(steps=a.steps + 1, batch_size=a.batch_size, crop=a.crop, degradation=a.degradation)
    configs = {"HSD + t-GAN, fresh target": {}, "HSD + t-GAN, cached pool": {"target_pool": a.batch_size},
               "vanilla only, fresh target": {"distill": "none", "disc": "none"}}
    res, warns = {}, set()
    for name, kw in configs.items():
        res[name], w = phase_ms(teacher, photos, a.device, **base, **kw)
        if w: warns.add(w)
    dev = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name() if dev.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; batch {a.batch_size}, crop {a.crop}, {a.degradation} LR, mean of {a.steps} iterations "
          "after one warm-up")
    for w in warns: print(w)
    print("| configuration | " + " | ".join(DISTILL_PHASES) + " | total ms | it/s | time vs first row |")
    print("|---|" + "---|" * (len(DISTILL_PHASES) + 3))
    first = None
    for k, r in res.items():
        tot = sum(r.values()); first = first or tot
        print(f"| {k} | " + " | ".join(f"{r[p]:.0f}" for p in DISTILL_PHASES) + f" | {tot:.0f} | {1e3 / tot:.2f} | "
              f"{tot / first:.2f}x |")


# ---------------------------------------------------------------------------------------------------------- census
_VIEW_LIKE = {"aten.view", "aten._unsafe_view", "aten.reshape", "aten.expand", "aten.permute", "aten.transpose",
              "aten.unsqueeze", "aten.squeeze", "aten.slice", "aten.select", "aten.t", "aten.detach", "aten.alias",
              "aten.as_strided", "aten.split", "aten.unbind", "aten.split_with_sizes"}


def op_census(fn) -> dict:
    """ATen calls of one `fn()` (all, view-like, the rest), its counted GFLOPs and its most frequent calls.

    Two counters, one run each: a `TorchDispatchMode` sees every ATen call (each is at least one host-side dispatch;
    the non-view ones launch a GPU kernel each in eager mode), and `FlopCounterMode` counts matmul and convolution
    FLOPs (element-wise work is not counted). `TorchDispatchMode` lives in a private torch module
    (`torch.utils._python_dispatch`): that is why this stays a script and not library code."""
    from collections import Counter
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import FlopCounterMode

    class _Count(TorchDispatchMode):
        def __init__(self):
            super().__init__(); self.calls = Counter()
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.calls[str(func.overloadpacket)] += 1
            return func(*args, **(kwargs or {}))

    with torch.no_grad():
        with _Count() as c: fn()
        flops = FlopCounterMode(display=False)
        with flops: fn()
    total = sum(c.calls.values())
    views = sum(n for k, n in c.calls.items() if k in _VIEW_LIKE)
    return {"aten_calls": total, "view_like": views, "kernel_calls": total - views,
            "gflop": round(flops.get_total_flops() / 1e9, 2), "top": dict(c.calls.most_common(8))}


def one_step_census(net, lr) -> dict:
    "`op_census` of one x4 step of `net` on `lr` (B,3,h,w) and of its parts: encode, one UNet call, decode."
    import torch
    from tadsr.model import super_resolve
    with torch.no_grad():
        _, zy = net.encode_pair(None, lr)
        t = torch.full((lr.shape[0],), net.T - 1, dtype=torch.long, device=lr.device)
        x0_fn = net.x0_fn(zy, lr)
        z0 = x0_fn(zy, t)
    parts = {"encode": lambda: net.encode_pair(None, lr), "unet": lambda: x0_fn(zy, t),
             "decode": lambda: net.latent.decode(z0),
             "one_step": lambda: super_resolve(net, lr, 1, noise=torch.zeros_like(zy))}
    return {name: op_census(fn) for name, fn in parts.items()}


def cmd_census(a):
    "ATen calls and FLOPs of one step of the full-size (or --small) network on the CPU; optionally as JSON."
    import torch
    torch.set_num_threads(a.threads)
    from tadsr.model import DiffusionSR, TeacherConfig
    torch.manual_seed(0)
    cfg = TeacherConfig.cpu() if a.small else TeacherConfig.official_realsr_v1()
    net = DiffusionSR(cfg).eval()                     # random weights: the counts do not depend on the values
    t0 = time.perf_counter()
    res = {"schema": 1, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "preset": "small" if a.small else "official_realsr_v1", "latent": type(net.latent).__name__,
           "lr_side": a.lr_side, "hr_side": a.lr_side * cfg.sf, "torch": torch.__version__}
    res["parts"] = parts = one_step_census(net, _rand_lr(a.lr_side))
    step = parts["one_step"]
    for name, r in parts.items():
        print(f"{name:9s} {r['aten_calls']:5d} ATen calls ({r['kernel_calls']:5d} not view-like) {r['gflop']:8.1f} GFLOP"
              + ("" if name == "one_step" else f"   = {r['kernel_calls'] / step['kernel_calls']:4.0%} of the step's "
                 f"kernel calls, {r['gflop'] / max(step['gflop'], 1e-9):4.0%} of its FLOPs"))
    res["seconds"] = round(time.perf_counter() - t0, 1)
    _write_json(a.json, res)
    if a.json: print(f"written: {a.json}")


# ------------------------------------------------------------------------------------------------------------- gpu
def _preset(small: bool):
    "(ModelConfig, label) of the measured architecture."
    from tadsr.model import TeacherConfig
    if small: return TeacherConfig.cpu(), "cpu (--small: the reduced CPU preset, NOT the paper's architecture)"
    return TeacherConfig.official_realsr_v1(), "official_realsr_v1 (118.6 M UNet + 55.3 M VQ-f4, random weights)"


def _build(cfg, device, seed: int = 0):
    "A `DiffusionSR` with random weights on `device` (built there directly when possible: fast on a GPU)."
    import torch
    from tadsr.model import DiffusionSR
    torch.manual_seed(seed)
    try:
        with torch.device(device): net = DiffusionSR(cfg)
    except Exception:                                           # any op that refuses the device context: build on CPU
        net = DiffusionSR(cfg)
    return net.to(device).eval()


def _inputs(net, device, side: int = 64):
    "LR image (1,3,side,side) in [-1,1] and the prior noise, fixed (seed 0)."
    import torch
    g = torch.Generator().manual_seed(0)
    lr = (torch.rand(1, 3, side, side, generator=g) * 2 - 1).to(device)
    h = side * net.cfg.sf // net.latent.factor
    return lr, torch.randn(1, net.latent.channels, h, h, generator=g).to(device)


def _amp(device, on: bool):
    import torch
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=on)


def latency(net, device, steps: int, bf16: bool, repeats: int, warmup: int, side: int = 64) -> dict:
    "Median/min ms of `super_resolve(net, lr, steps)` for a side x side LR (default 64x64), batch 1."
    import torch
    from tadsr.model import super_resolve
    lr, noise = _inputs(net, device, side)
    def run():
        with torch.no_grad(), _amp(device, bf16): return super_resolve(net, lr, steps, noise=noise)
    return _timed(run, repeats, warmup)


def parts(net, device, bf16: bool, repeats: int, warmup: int, side: int = 64) -> dict:
    "ms of the three parts of one step: VQ encode of up(LR), one UNet call (x0 prediction), VQ decode."
    import torch
    from tadsr.diffusion import prior_sample
    lr, noise = _inputs(net, device, side)
    with torch.no_grad(), _amp(device, bf16):
        _, zy = net.encode_pair(None, lr)
        zT = prior_sample(zy, net.sched, noise=noise)
        t = torch.full((1,), net.T - 1, dtype=torch.long, device=device)
        x0_fn = net.x0_fn(zy, lr)
        z0 = x0_fn(zT, t)
    out = {}
    for name, fn in (("encode", lambda: net.encode_pair(None, lr)), ("unet", lambda: x0_fn(zT, t)),
                     ("decode", lambda: net.latent.decode(z0))):
        def run(fn=fn):
            with torch.no_grad(), _amp(device, bf16): return fn()
        out[name] = _timed(run, repeats, warmup)
    return out


def graphed(fn):
    """`fn` (no arguments, fixed input tensors inside) captured once in a CUDA graph; returns a replay callable.

    Warm-up runs on a side stream first (cuDNN algorithm search, the Swin mask and schedule caches fill there), as a
    CUDA graph needs. Replays reuse the same output tensor; no host work is left but one launch."""
    import torch
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3): fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g): out = fn()
    def replay():
        g.replay(); return out
    return replay


def one_step_variants(net, device, repeats: int, warmup: int, side: int = 64) -> dict:
    """bf16 one step, side by side: eager autocast, channels-last weights, and a CUDA graph of each (graphs: CUDA only).

    The graph removes the per-operation host cost (about 1,450 ATen calls per UNet call, 1,670 per one step; see the
    `census` sub-command). Autocast's weight cache is off: a cached cast made during capture would be reused outside
    its graph. Each variant's max |difference| to eager autocast is recorded; a failure is recorded, never fatal."""
    import torch
    from tadsr.model import super_resolve
    lr, noise = _inputs(net, device, side)
    def run():
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False):
            return super_resolve(net, lr, 1, noise=noise)
    ref = run().float().clone()
    out = {}
    for name, cl, graph in (("eager", False, False), ("graph", False, True),
                            ("channels_last", True, False), ("graph_channels_last", True, True)):
        if graph and device.type != "cuda":
            out[name] = {"status": "skipped: CUDA graphs need a CUDA device"}; continue
        try:
            if cl: net.to(memory_format=torch.channels_last)
            fn = graphed(run) if graph else run
            r = _timed(fn, repeats, warmup)
            r["max_abs_diff_vs_eager"] = float((fn().float() - ref).abs().max())
            out[name] = r
        except Exception as e:                                     # report, keep going
            out[name] = {"status": f"error: {type(e).__name__}: {str(e)[:300]}"}
        if device.type == "cuda": torch.cuda.synchronize()
    net.to(memory_format=torch.contiguous_format)
    return out


def _photos():
    "The bundled photos (tadsr.data), or smooth random images if scikit-image's data is missing here."
    try:
        from tadsr.data import bundled_photos
        return list(bundled_photos().values()), "tadsr.data.bundled_photos()"
    except Exception as e:                                     # keep the benchmark alive; say so in the output
        import numpy as np
        from PIL import Image
        rng = np.random.default_rng(0)
        ims = [Image.fromarray((rng.random((48, 48, 3)) * 255).astype(np.uint8)).resize((512, 512), Image.BICUBIC)
               for _ in range(4)]
        return ims, f"random smooth images (bundled photos unavailable: {type(e).__name__})"


def distill_speed(net, device, steps: int, batch: int, crop: int, amp: bool, degradation: str) -> dict:
    "Per-phase ms of `train_student` iterations with the in-memory teacher `net` (first iteration left out if possible)."
    import torch
    from tadsr.distill import DistillConfig, train_student
    photos, src = _photos()
    dcfg = DistillConfig.paper_sr(steps=steps, batch_size=batch, crop=crop, log_every=1, ckpt_every=steps,
                                  val_every=0, amp=amp, max_side=None, degradation=degradation)
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    out_dir = tempfile.mkdtemp(prefix="tadsr_bench_", dir=base)
    if device.type == "cuda": torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    try:
        _, hist = train_student(net, dcfg, photos, out_dir, resume=False, device=device, progress=False, log=lambda s: None)
    finally: shutil.rmtree(out_dir, ignore_errors=True)
    wall = time.perf_counter() - t0
    rows, warn = timed_rows(hist, steps)
    first = round(sum(v for k, v in hist["time_ms"][0].items() if k != "step"), 1)
    phases = [k for k in rows[0] if k != "step"]
    per = {k: round(statistics.median(r[k] for r in rows), 2) for k in phases}
    ms = round(sum(per.values()), 2)
    res = {"batch": batch, "crop": crop, "iterations": steps, "timed_iterations": len(rows), "degradation": degradation,
           "amp": "bf16" if amp and device.type == "cuda" else "fp32", "photos": src,
           "ms_per_iteration": ms, "iterations_per_s": round(1e3 / ms, 3), "phase_ms": per, "first_iteration_ms": first,
           "wall_s_incl_setup_and_checkpoint": round(wall, 1),
           "loss_finite": all(all(v == v for k, v in h.items() if k != "step") for h in hist["loss"])}
    if warn: res["warning"] = warn
    if device.type == "cuda": res["peak_mem_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return res


def compiled_child(a) -> dict:
    "In a child process: one-step latency (bf16 on GPUs, fp32 on CPUs) with torch.compile on unet, VQ encoder, decoder."
    import torch
    device = torch.device(a.device)
    net = _build(_preset(a.small)[0], device)
    for owner, name in ((net, "unet"), (net.latent, "encoder"), (net.latent, "decoder")):
        if hasattr(owner, name): setattr(owner, name, torch.compile(getattr(owner, name), mode=a.compile_mode))
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    t0 = time.perf_counter()
    latency(net, device, 1, bf16, repeats=1, warmup=0, side=a.lr_side)    # triggers compilation
    first = time.perf_counter() - t0
    res = latency(net, device, 1, bf16, a.repeats, a.warmup, a.lr_side)
    return {"status": "ok", "mode": a.compile_mode, "precision": "bf16" if bf16 else "fp32",
            "first_call_s": round(first, 1), "ms": res}


def run_compiled(a, limit_s: float) -> dict:
    "Run `compiled_child` in a fresh process, killed after `limit_s` seconds."
    if limit_s < 10: return {"status": f"skipped: {limit_s:.0f} s left of the budget"}
    cmd = [sys.executable, __file__, "gpu", "--_compile-child", "--device", a.device, "--repeats", str(a.repeats),
           "--warmup", str(a.warmup), "--lr-side", str(a.lr_side), "--compile-mode", a.compile_mode] + (["--small"] if a.small else [])
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = p.communicate(timeout=limit_s)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL); p.communicate()          # the child and its compile workers
        return {"status": f"timeout after {limit_s:.0f} s (compilation not finished)"}
    for line in reversed(out.splitlines()):
        if line.startswith("COMPILED_JSON "): return json.loads(line[len("COMPILED_JSON "):])
    lines = (err or out).strip().splitlines()
    errs = [ln.strip() for ln in lines if "Error" in ln or "error" in ln] or lines[-3:]
    return {"status": f"error (exit {p.returncode}): " + " | ".join(errs[-3:])[-600:]}


def _env(device) -> dict:
    import torch
    env = {"device": platform.processor() or platform.machine(), "device_type": device.type,
           "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
           "cudnn_benchmark": bool(torch.backends.cudnn.benchmark), "tf32": bool(torch.backends.cuda.matmul.allow_tf32)}
    if device.type == "cuda":
        env["device"] = torch.cuda.get_device_name(device)
        env["bf16_supported"] = torch.cuda.is_bf16_supported()
    else:
        env["device"] = f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"
    return env


def _gpu_one_step(res, net, device, a, precisions, gpu: bool, save):
    "Section 1: one step per precision, the parts of the last one, the bf16 variants; prints ratios."
    one = res["one_step"] = {}
    for name, bf16 in precisions:
        one[f"{name}_ms"] = latency(net, device, 1, bf16, a.repeats, a.warmup, a.lr_side)
        print(f"[1] one step {res['lr_side']}->{res['hr_side']}, {name}: {_fmt(one[f'{name}_ms'])}"); save()
    if "bf16_ms" in one: print(f"    fp32 / bf16: {one['fp32_ms']['median'] / one['bf16_ms']['median']:.2f}x")
    name, bf16 = precisions[-1]
    p = one[f"{name}_parts_ms"] = parts(net, device, bf16, a.repeats, a.warmup, a.lr_side)
    tot = sum(v["median"] for v in p.values())
    print(f"    {name} parts: " + ", ".join(f"{k} {v['median']:.2f} ms ({v['median'] / tot:.0%})" for k, v in p.items())); save()
    if bf16:
        one["bf16_variants_ms"] = v = one_step_variants(net, device, a.repeats, a.warmup, a.lr_side)
        eager = v.get("eager", {}).get("median")
        print("    bf16 variants: " + ", ".join(
            f"{k} " + (f"{r['median']:.2f} ms ({eager / r['median']:.2f}x eager, diff {r['max_abs_diff_vs_eager']:.1e})"
                       if "median" in r and eager else r.get("status", "")) for k, r in v.items())); save()
    best = min([one[f"{n}_ms"]["median"] for n, _ in precisions]
               + [r["median"] for r in one.get("bf16_variants_ms", {}).values() if isinstance(r, dict) and "median" in r])
    print(f"    target <= {res['target_one_step_ms']:.0f} ms (best median {best:.2f} ms): "
          f"{'met' if best <= res['target_one_step_ms'] else 'NOT met'}"
          + ("" if gpu and not a.small else " (not meaningful: not the full-size network on a GPU)"))


def _gpu_distill(res, net, device, a, gpu: bool):
    "Section 3: distillation iterations (a failure is recorded, never fatal)."
    steps = a.distill_steps if a.distill_steps is not None else (4 if gpu else 2)
    batch, crop = a.batch or (8 if gpu else 2), a.crop or (256 if gpu else 128)
    if steps <= 0: res["distill"] = {"status": "skipped (--distill-steps 0)"}; return
    try:
        res["distill"] = d = {"status": "ok", **distill_speed(net, device, steps, batch, crop, True, a.degradation)}
        print(f"[3] distillation batch {batch}, {crop}x{crop} crops, {a.degradation} LR, {d['amp']}: "
              f"{d['ms_per_iteration']:.0f} ms/iteration = {d['iterations_per_s']:.2f} it/s (median of "
              f"{d['timed_iterations']}); phases (ms): {d['phase_ms']}"
              + (f"; peak {d['peak_mem_gib']} GiB" if "peak_mem_gib" in d else "") + (f"\n    {d['warning']}" if "warning" in d else ""))
    except Exception as e:                                     # report, keep going
        res["distill"] = {"status": f"error: {type(e).__name__}: {str(e)[:300]}"}
        print(f"[3] distillation: {res['distill']['status']}")


def cmd_gpu(a):
    """Latency and distillation speed of the full-size networks (lesson 13), written as JSON after every section.

    1. one x4 step 64 -> 256 of `TeacherConfig.official_realsr_v1()` (118.6 M Swin-UNet + 55.3 M VQ-f4, RANDOM
       weights: time does not depend on the values) through `tadsr.model.super_resolve`, fp32 and bf16 autocast; the
       encode / UNet / decode parts; bf16 variants (CUDA graph, channels-last) with their difference to eager;
    2. the 15-step teacher on the same input; 3. `train_student` iterations (Algorithm 1) at batch 8 on 256² crops,
    reading the trainer's per-phase clock; 4. with --compile, section 1 with torch.compile, in a child process killed
    after --compile-timeout seconds. cuDNN benchmark on, TF32 off (PyTorch's default): "fp32" is strict fp32.
    Target (issue): one step <= 20 ms on an H100; the paper reports 0.058 s on an A100 (Table I)."""
    t_start = time.perf_counter()
    import torch
    torch.set_num_threads(a.threads)
    a.device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(a.device)
    gpu = device.type == "cuda"
    a.repeats = a.repeats or (20 if gpu else 3)
    a.budget = a.budget or ((170 + (a.compile_timeout if a.compile else 0)) if gpu else 900)
    if gpu: torch.backends.cudnn.benchmark = True
    if a.compile_child:
        print("COMPILED_JSON " + json.dumps(compiled_child(a))); return

    cfg, label = _preset(a.small)
    res = {"schema": 1, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), **_env(device),
           "preset": "small" if a.small else "official_realsr_v1", "preset_label": label,
           "lr_side": a.lr_side, "hr_side": a.lr_side * cfg.sf, "warmup": a.warmup,
           "target_one_step_ms": 20.0, "paper": {"one_step_s_a100": 0.058, "resshift15_s_a100": 0.682, "source": "Table I"}}
    save = lambda: _write_json(a.json, res)
    left = lambda: a.budget - (time.perf_counter() - t_start)
    print(f"device: {res['device']} | torch {res['torch']} (CUDA {res['cuda']}) | preset: {label}")

    t0 = time.perf_counter()
    net = _build(cfg, device)
    from tadsr.unet import count_params
    res["params"] = {"unet": count_params(net.unet), "latent": count_params(net.latent)}
    res["build_s"] = round(time.perf_counter() - t0, 1)
    print(f"built in {res['build_s']} s: UNet {res['params']['unet']:,} + latent {res['params']['latent']:,} parameters")

    # bf16 autocast on GPUs only: on a CPU it is the slow path, and not what the target is about
    precisions = [("fp32", False)] + ([("bf16", True)] if gpu and torch.cuda.is_bf16_supported() else [])
    _gpu_one_step(res, net, device, a, precisions, gpu, save)

    tr, res["teacher_15"] = a.teacher_repeats or (5 if gpu else 1), {}
    for name, bf16 in precisions:
        if left() < 0: res["teacher_15"][f"{name}_ms"] = None; print(f"[2] skipped ({name}): budget spent"); continue
        res["teacher_15"][f"{name}_ms"] = r = latency(net, device, net.T, bf16, tr, min(1, a.warmup), a.lr_side)
        print(f"[2] teacher {net.T} steps {res['lr_side']}->{res['hr_side']}, {name}: {_fmt(r)} = "
              f"{r['median'] / res['one_step'][f'{name}_ms']['median']:.1f}x one step"); save()

    if left() < 0: res["distill"] = {"status": "skipped: budget spent"}; print("[3] distillation: budget spent")
    else: _gpu_distill(res, net, device, a, gpu)
    save()
    del net
    if gpu: torch.cuda.empty_cache()

    if not a.compile: res["one_step"]["compiled"] = {"status": "not run (no --compile)"}
    else:
        res["one_step"]["compiled"] = c = run_compiled(a, min(a.compile_timeout, left()))
        print(f"[4] one step + torch.compile ({a.compile_mode}): "
              + (f"{c['precision']} {_fmt(c['ms'])}, first call {c['first_call_s']} s" if c["status"] == "ok" else c["status"]))
    res["total_s"] = round(time.perf_counter() - t_start, 1)
    save()
    print(f"done in {res['total_s']} s" + (f"; results in {a.json}" if a.json else ""))


# ------------------------------------------------------------------------------------------------------ the parser
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="SUB-COMMAND")
    def add(name, fn, help_):
        p = sub.add_parser(name, help=help_, description=fn.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(fn=fn)
        p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
        return p
    for name, fn, help_, reps in (("unet", cmd_unet, "the CPU-preset UNet: forward and training step, time and memory", 5),
                                  ("teacher", cmd_teacher, "the CPU teacher: 15 steps vs 1, tiled vs untiled memory", 3),
                                  ("student", cmd_student, "the one-step student vs the teacher; split, MP/s, layouts", 5)):
        add(name, fn, help_).add_argument("--repeats", type=int, default=reps, help=f"timed calls (default {reps})")
    d = add("distill", cmd_distill, "per-phase ms of distillation iterations, three configurations side by side")
    d.add_argument("--steps", type=int, default=3, help="timed iterations after one warm-up (default 3)")
    d.add_argument("--batch-size", type=int, default=8); d.add_argument("--crop", type=int, default=128)
    d.add_argument("--degradation", default="bicubic", choices=("bicubic", "realesrgan"), help="LR synthesis (default bicubic)")
    d.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    d.add_argument("--teacher", default="teacher", help="registry name or .safetensors file (default teacher)")
    c = add("census", cmd_census, "ATen calls and FLOPs of one step and its parts (no GPU needed)")
    c.add_argument("--small", action="store_true", help="the reduced CPU preset instead of the full-size network")
    c.add_argument("--lr-side", type=int, default=64, help="LR side (default 64: the paper's 64 -> 256)")
    c.add_argument("--json", default=None, help="write the counts here (lesson 13 reads nbs/op_census.json)")
    g = add("gpu", cmd_gpu, "full-size one step, 15 steps and distillation speed (GPU; --small checks it on a CPU)")
    g.add_argument("--json", default=None, help="write the results here (also after every section)")
    g.add_argument("--small", action="store_true", help="the reduced CPU preset, for checking the script on a CPU")
    g.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    g.add_argument("--repeats", type=int, default=None, help="timed calls per measurement (default 20 on GPU, 3 on CPU)")
    g.add_argument("--warmup", type=int, default=3, help="untimed calls first")
    g.add_argument("--lr-side", type=int, default=64, help="LR side of the latency input (64: the paper's 64 -> 256)")
    g.add_argument("--teacher-repeats", type=int, default=None, help="timed 15-step runs (default 5 on GPU, 1 on CPU)")
    g.add_argument("--distill-steps", type=int, default=None, help="train_student iterations (default 4 GPU, 2 CPU; 0 skips)")
    g.add_argument("--batch", type=int, default=None, help="distillation batch (default 8 GPU, 2 CPU)")
    g.add_argument("--crop", type=int, default=None, help="distillation HR crop (default 256 GPU, 128 CPU)")
    g.add_argument("--degradation", default="realesrgan", choices=("bicubic", "realesrgan"),
                   help="distillation LR synthesis (default realesrgan, as DistillConfig.paper_sr)")
    g.add_argument("--compile", action="store_true", help="also measure one step with torch.compile (slow to compile)")
    g.add_argument("--compile-mode", default="default", help="torch.compile mode (default, reduce-overhead, max-autotune)")
    g.add_argument("--compile-timeout", type=float, default=240, help="seconds allowed for the compiled measurement")
    g.add_argument("--budget", type=float, default=None, help="seconds (default GPU 170, plus --compile-timeout with "
                   "--compile; CPU 900): later sections are skipped once this is spent")
    g.add_argument("--_compile-child", dest="compile_child", action="store_true", help=argparse.SUPPRESS)
    return ap


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    a.fn(a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
