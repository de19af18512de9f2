#!/usr/bin/env python
"""GPU benchmark of the full-size TAD-SR networks (lesson 13): latency and distillation speed, as JSON.

Measures, with the device name printed first:
  1. one-step x4 super-resolution 64x64 -> 256x256 of the full-size architecture
     (`TeacherConfig.official_realsr_v1()`: 118.6 M Swin-UNet + 55.3 M VQ-f4, RANDOM weights: time does not depend on
     the values) through `tadsr.teacher.super_resolve` (VQ encode of the bicubic-upsampled LR, one UNet call, VQ
     decode), in fp32 and in bf16 autocast; plus the bf16 encode / UNet / decode parts on their own;
  2. the 15-step teacher on the same input (fp32, bf16);
  3. a few iterations of `tadsr.distill.train_student` (Algorithm 1: 15-step teacher target, HSD, time-aware
     discriminator, student update) at batch 8 on 256x256 crops of the bundled photos, bf16 autocast, reading the
     per-phase clock `history["time_ms"]` (the first iteration is warm-up and left out when there are more);
  4. with --compile, section 1 again with `torch.compile` on the UNet, the VQ encoder and decoder, in a child process
     killed after --compile-timeout seconds (compilation is slow: more than 60 s for the full-size UNet on an H100;
     a failure or time-out is recorded, never fatal). Off by default to keep a run inside ~3 minutes.

Timing: `tadsr.metrics.time_it` (CUDA-synchronised wall clock), --warmup untimed calls, median (and min) of
--repeats timed calls, batch 1, fixed input and noise, cuDNN benchmark mode on. TF32 stays off (PyTorch's default), so
"fp32" is strict fp32.
The JSON (--json PATH) is written after every section, so a run cut short still leaves what it measured; the lead
copies it to nbs/gpu_results.json, which lesson 13 renders.

Usage (GPU, about 2-3 minutes):  python scripts/bench_gpu.py --json nbs/gpu_results.json
       torch.compile on its own (about 5 minutes): ... --compile --distill-steps 0 --teacher-repeats 1 --json other.json
       (CPU, the reduced CPU preset, to check the script): python scripts/bench_gpu.py --small --json /tmp/b.json
Target (issue): full-size one step 64 -> 256 <= 20 ms on an H100; the paper reports 0.058 s on an A100 (Table I).
"""
import argparse
import json
import os
import platform
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


def _lpips_shim():
    "tadsr.metrics imports `lpips` at import time; the GPU image may lack it. Nothing here uses LPIPS."
    try:
        import lpips  # noqa: F401
    except ModuleNotFoundError:
        import types
        sys.modules["lpips"] = types.ModuleType("lpips")
        print("note: the lpips package is missing here; a placeholder module stands in (no LPIPS is computed)")


def _preset(small: bool):
    "(TeacherConfig, label) of the measured architecture."
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


def _time(fn, repeats: int, warmup: int) -> dict:
    from tadsr.metrics import time_it
    r = time_it(fn, repeats=repeats, warmup=warmup)
    return {"median": round(r["median_ms"], 3), "min": round(r["min_ms"], 3), "n": repeats}


def latency(net, device, steps: int, bf16: bool, repeats: int, warmup: int, side: int = 64) -> dict:
    "Median/min ms of `super_resolve(net, lr, steps)` for a side x side LR (default 64x64), batch 1."
    import torch
    from tadsr.model import super_resolve
    lr, noise = _inputs(net, device, side)
    def run():
        with torch.no_grad(), _amp(device, bf16): return super_resolve(net, lr, steps, noise=noise)
    return _time(run, repeats, warmup)


def parts(net, device, bf16: bool, repeats: int, warmup: int, side: int = 64) -> dict:
    "ms of the three parts of one step: VQ encode of up(LR), one UNet call (x0 prediction), VQ decode."
    import torch
    from tadsr.diffusion import prior_sample
    lr, noise = _inputs(net, device, side)
    with torch.no_grad(), _amp(device, bf16):
        _, zy = net.encode_pair(None, lr)
        zT = prior_sample(zy, net.sched, noise=noise)
        t = torch.full((1,), net.T - 1, dtype=torch.long, device=device)
        z0 = net.predict_x0(zT, t, zy, lr)
    out = {}
    for name, fn in (("encode", lambda: net.encode_pair(None, lr)), ("unet", lambda: net.predict_x0(zT, t, zy, lr)),
                     ("decode", lambda: net.latent.decode(z0))):
        def run(fn=fn):
            with torch.no_grad(), _amp(device, bf16): return fn()
        out[name] = _time(run, repeats, warmup)
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

    The graph removes the per-operation host cost (about 1,450 ATen calls per UNet call, 1,670 per one step; see
    `scripts/op_census.py`). Autocast's weight cache is off: a cached cast made during capture would be reused
    outside its graph. Each variant's max |difference| to eager autocast is recorded; a failure is recorded, never fatal."""
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
            r = _time(fn, repeats, warmup)
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
        return bundled_photos(), "tadsr.data.bundled_photos()"
    except Exception as e:                                     # keep the benchmark alive; say so in the output
        import numpy as np
        from PIL import Image
        rng = np.random.default_rng(0)
        ims = [Image.fromarray((rng.random((48, 48, 3)) * 255).astype(np.uint8)).resize((512, 512), Image.BICUBIC)
               for _ in range(4)]
        return ims, f"random smooth images (bundled photos unavailable: {type(e).__name__})"


def distill_speed(net, device, steps: int, batch: int, crop: int, amp: bool) -> dict:
    "Per-phase ms of `train_student` iterations with the in-memory teacher `net` (first iteration left out if possible)."
    import torch
    from tadsr.distill import DistillConfig, train_student
    photos, src = _photos()
    dcfg = DistillConfig.paper_sr(steps=steps, batch_size=batch, crop=crop, log_every=1, ckpt_every=steps,
                                  val_every=0, amp=amp, max_side=None)
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    out_dir = tempfile.mkdtemp(prefix="tadsr_bench_", dir=base)
    if device.type == "cuda": torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    try:
        _, hist = train_student(net, dcfg, photos, out_dir, resume=False, device=device, progress=False, log=lambda s: None)
    finally:
        import shutil; shutil.rmtree(out_dir, ignore_errors=True)
    wall = time.perf_counter() - t0
    rows = hist["time_ms"][1:] if len(hist["time_ms"]) > 1 else hist["time_ms"]
    first = round(sum(v for k, v in hist["time_ms"][0].items() if k != "step"), 1)
    phases = [k for k in rows[0] if k != "step"]
    per = {k: round(statistics.median(r[k] for r in rows), 2) for k in phases}
    ms = round(sum(per.values()), 2)
    res = {"batch": batch, "crop": crop, "iterations": steps, "timed_iterations": len(rows),
           "amp": "bf16" if amp and device.type == "cuda" else "fp32", "photos": src,
           "ms_per_iteration": ms, "iterations_per_s": round(1e3 / ms, 3), "phase_ms": per, "first_iteration_ms": first,
           "wall_s_incl_setup_and_checkpoint": round(wall, 1),
           "loss_finite": all(all(v == v for k, v in h.items() if k != "step") for h in hist["loss"])}
    if device.type == "cuda": res["peak_mem_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return res


def compiled_child(args) -> dict:
    "In a child process: one-step latency (bf16 on GPUs, fp32 on CPUs) with torch.compile on unet, VQ encoder, decoder."
    import torch
    device = torch.device(args.device)
    cfg, _ = _preset(args.small)
    net = _build(cfg, device)
    for owner, name in ((net, "unet"), (net.latent, "encoder"), (net.latent, "decoder")):
        if hasattr(owner, name): setattr(owner, name, torch.compile(getattr(owner, name), mode=args.compile_mode))
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    t0 = time.perf_counter()
    latency(net, device, 1, bf16, repeats=1, warmup=0, side=args.lr_side)    # triggers compilation
    first = time.perf_counter() - t0
    res = latency(net, device, 1, bf16, args.repeats, args.warmup, args.lr_side)
    return {"status": "ok", "mode": args.compile_mode, "precision": "bf16" if bf16 else "fp32",
            "first_call_s": round(first, 1), "ms": res}


def run_compiled(args, limit_s: float) -> dict:
    "Run `compiled_child` in a fresh process, killed after `limit_s` seconds."
    if limit_s < 10: return {"status": f"skipped: {limit_s:.0f} s left of the budget"}
    cmd = [sys.executable, __file__, "--_compile-child", "--device", args.device, "--repeats", str(args.repeats),
           "--warmup", str(args.warmup), "--lr-side", str(args.lr_side), "--compile-mode", args.compile_mode] + (["--small"] if args.small else [])
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


def _fmt(r: dict) -> str: return f"{r['median']:9.2f} ms (min {r['min']:.2f}, n={r['n']})"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=None, help="write the results here (also written after every section)")
    ap.add_argument("--small", action="store_true", help="the reduced CPU preset (TeacherConfig.cpu()), for checking the script on CPU")
    ap.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    ap.add_argument("--repeats", type=int, default=None, help="timed calls per measurement (default 20 on GPU, 3 on CPU)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed calls first")
    ap.add_argument("--lr-side", type=int, default=64, help="LR side of the latency input (64: the paper's 64 -> 256)")
    ap.add_argument("--teacher-repeats", type=int, default=None, help="timed 15-step runs (default 5 on GPU, 1 on CPU)")
    ap.add_argument("--distill-steps", type=int, default=None, help="train_student iterations (default 4 GPU, 2 CPU; 0 skips)")
    ap.add_argument("--batch", type=int, default=None, help="distillation batch (default 8 GPU, 2 CPU)")
    ap.add_argument("--crop", type=int, default=None, help="distillation HR crop (default 256 GPU, 128 CPU)")
    ap.add_argument("--compile", action="store_true", help="also measure one step with torch.compile (slow to compile)")
    ap.add_argument("--compile-mode", default="default", help="torch.compile mode (default, reduce-overhead, max-autotune)")
    ap.add_argument("--compile-timeout", type=float, default=240, help="seconds allowed for the compiled measurement")
    ap.add_argument("--budget", type=float, default=None, help="seconds (default GPU 170, plus --compile-timeout with "
                    "--compile; CPU 900): later sections are skipped once this is spent")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (CPU runs)")
    ap.add_argument("--_compile-child", dest="compile_child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    _lpips_shim()
    import torch
    torch.set_num_threads(args.threads)
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    args.repeats = args.repeats or (20 if gpu else 3)
    args.budget = args.budget or ((170 + (args.compile_timeout if args.compile else 0)) if gpu else 900)
    if gpu: torch.backends.cudnn.benchmark = True
    if args.compile_child:
        print("COMPILED_JSON " + json.dumps(compiled_child(args))); return 0

    cfg, label = _preset(args.small)
    res = {"schema": 1, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), **_env(device),
           "preset": "small" if args.small else "official_realsr_v1", "preset_label": label,
           "lr_side": args.lr_side, "hr_side": args.lr_side * cfg.sf, "warmup": args.warmup,
           "target_one_step_ms": 20.0, "paper": {"one_step_s_a100": 0.058, "resshift15_s_a100": 0.682, "source": "Table I"}}
    def save():
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    left = lambda: args.budget - (time.perf_counter() - t_start)
    print(f"device: {res['device']} | torch {res['torch']} (CUDA {res['cuda']}) | preset: {label}")

    t0 = time.perf_counter()
    net = _build(cfg, device)
    from tadsr.unet import count_params
    res["params"] = {"unet": count_params(net.unet), "latent": count_params(net.latent)}
    res["build_s"] = round(time.perf_counter() - t0, 1)
    print(f"built in {res['build_s']} s: UNet {res['params']['unet']:,} + latent {res['params']['latent']:,} parameters")

    # 1. one step (bf16 autocast on GPUs only: on a CPU it is the slow path, and not what the target is about)
    precisions = [("fp32", False)] + ([("bf16", True)] if gpu and torch.cuda.is_bf16_supported() else [])
    one = res["one_step"] = {}
    for name, bf16 in precisions:
        one[f"{name}_ms"] = latency(net, device, 1, bf16, args.repeats, args.warmup, args.lr_side)
        print(f"[1] one step {res['lr_side']}->{res['hr_side']}, {name}: {_fmt(one[f'{name}_ms'])}"); save()
    name, bf16 = precisions[-1]
    one[f"{name}_parts_ms"] = parts(net, device, bf16, args.repeats, args.warmup, args.lr_side)
    print(f"    {name} parts: " + ", ".join(f"{k} {v['median']:.2f} ms" for k, v in one[f"{name}_parts_ms"].items())); save()
    if bf16:
        one["bf16_variants_ms"] = v = one_step_variants(net, device, args.repeats, args.warmup, args.lr_side)
        print("    bf16 variants: " + (v["status"] if "status" in v else ", ".join(
            f"{k} " + (f"{r['median']:.2f} ms (diff {r['max_abs_diff_vs_eager']:.1e})" if "median" in r else r["status"])
            for k, r in v.items()))); save()
    best = min([one[f"{n}_ms"]["median"] for n, _ in precisions]
               + [r["median"] for r in one.get("bf16_variants_ms", {}).values() if isinstance(r, dict) and "median" in r])
    print(f"    target <= {res['target_one_step_ms']:.0f} ms (best median {best:.2f} ms): "
          f"{'met' if best <= res['target_one_step_ms'] else 'NOT met'}"
          + ("" if gpu and not args.small else " (not meaningful: not the full-size network on a GPU)"))

    # 2. the 15-step teacher
    tr = args.teacher_repeats or (5 if gpu else 1)
    res["teacher_15"] = {}
    for name, bf16 in precisions:
        if left() < 0: res["teacher_15"][f"{name}_ms"] = None; print(f"[2] skipped ({name}): budget spent"); continue
        res["teacher_15"][f"{name}_ms"] = r = latency(net, device, net.T, bf16, tr, min(1, args.warmup), args.lr_side)
        print(f"[2] teacher {net.T} steps {res['lr_side']}->{res['hr_side']}, {name}: {_fmt(r)}"); save()

    # 3. distillation iterations
    steps = args.distill_steps if args.distill_steps is not None else (4 if gpu else 2)
    batch, crop = args.batch or (8 if gpu else 2), args.crop or (256 if gpu else 128)
    if steps <= 0: res["distill"] = {"status": "skipped (--distill-steps 0)"}
    elif left() < 0: res["distill"] = {"status": "skipped: budget spent"}
    else:
        try:
            import tadsr.distill  # noqa: F401
        except ImportError as e:
            res["distill"] = {"status": f"skipped: tadsr.distill not importable ({e})"}
        else:
            try:
                res["distill"] = d = {"status": "ok", **distill_speed(net, device, steps, batch, crop, amp=True)}
                print(f"[3] distillation batch {batch}, {crop}x{crop} crops, {d['amp']}: {d['ms_per_iteration']:.0f} ms/iteration "
                      f"= {d['iterations_per_s']:.2f} it/s (median of {d['timed_iterations']}); phases (ms): {d['phase_ms']}"
                      + (f"; peak {d['peak_mem_gib']} GiB" if "peak_mem_gib" in d else ""))
            except Exception as e:                                 # report, keep going
                res["distill"] = {"status": f"error: {type(e).__name__}: {str(e)[:300]}"}
    if res["distill"].get("status") != "ok": print(f"[3] distillation: {res['distill']['status']}")
    save()
    del net
    if gpu: torch.cuda.empty_cache()

    # 4. torch.compile (child process, time-limited)
    if not args.compile: res["one_step"]["compiled"] = {"status": "not run (no --compile)"}
    else:
        res["one_step"]["compiled"] = c = run_compiled(args, min(args.compile_timeout, left()))
        print(f"[4] one step + torch.compile ({args.compile_mode}): "
              + (f"{c['precision']} {_fmt(c['ms'])}, first call {c['first_call_s']} s" if c["status"] == "ok" else c["status"]))
    res["total_s"] = round(time.perf_counter() - t_start, 1)
    save()
    print(f"done in {res['total_s']} s" + (f"; results in {args.json}" if args.json else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
