"""The Table V ablation at the CPU scale: distil five students from the shipped teacher with the same budget, then
measure them on the held-out photos and write a JSON table that lesson 12 loads.

Rows: vanilla only (eq. 6), SDS + GAN, SDS + t-GAN, HSD + GAN, HSD + t-GAN (each also keeps eq. 6, as the paper).

  python scripts/run_ablation.py train --data PHOTOS --out runs/ablation --steps 3000 [--batch-size 8] [--minutes M]
  python scripts/run_ablation.py eval --out runs/ablation --json tadsr/weights/ablation.json

`train` runs the rows side by side (one process each) so they share the machine equally; `--minutes` stops every
row at the same wall-clock budget (each keeps its last checkpoint, written every `--ckpt-every` steps) and the table
records the step each row reached. `eval` exports every row's EMA weights and measures PSNR-Y, SSIM-Y (border 4,
8-bit), HF energy and LPIPS (AlexNet; "not computed" with the reason when its weights are absent).
"""
import argparse, json, os, subprocess, sys, time
from pathlib import Path

ROWS = {"vanilla": ("none", "none"), "SDS + GAN": ("sds", "plain"), "SDS + t-GAN": ("sds", "time"),
        "HSD + GAN": ("hsd", "plain"), "HSD + t-GAN": ("hsd", "time")}


def slug(name): return name.lower().replace(" + ", "_").replace("-", "").replace(" ", "_")


def train(a):
    procs, out = [], Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [r for r in ROWS if a.rows is None or r in a.rows.split(",")]
    for name in rows:
        distill, disc = ROWS[name]
        cmd = [sys.executable, __file__, "_row", "--name", name, "--teacher", a.teacher, "--out", str(out / slug(name)),
               "--steps", str(a.steps), "--batch-size", str(a.batch_size), "--crop", str(a.crop), "--lr", str(a.lr),
               "--warmup", str(a.warmup), "--ckpt-every", str(a.ckpt_every), "--log-every", str(a.log_every),
               "--seed", str(a.seed)] + (["--amp"] if a.amp else [])
        for d in a.data: cmd += ["--data", d]
        log = open(out / f"{slug(name)}.log", "a")
        procs.append((name, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)))
        print("started", name, flush=True)
    t0, limit = time.time(), (a.minutes * 60 if a.minutes else None)
    while any(p.poll() is None for _, p in procs):
        if limit and time.time() - t0 > limit:
            for _, p in procs:
                if p.poll() is None: p.terminate()
            break
        time.sleep(2)
    for name, p in procs: print(name, "exit", p.wait(), flush=True)
    print(f"wall {time.time() - t0:.0f} s")


def row(a):
    "One row's training run (a subprocess of `train`)."
    from tadsr.data import bundled_photos
    from tadsr.distill import DistillConfig, train_student
    distill, disc = ROWS[a.name]
    dcfg = DistillConfig(steps=a.steps, batch_size=a.batch_size, crop=a.crop, lr=a.lr, warmup=a.warmup, distill=distill,
                         disc=disc, ckpt_every=a.ckpt_every, log_every=a.log_every, val_every=0, seed=a.seed, amp=a.amp)
    sources = list(bundled_photos().values()) + [Path(d) for d in a.data]
    train_student(a.teacher, dcfg, sources, a.out, progress=False, log=lambda s: print(s, flush=True))


def evaluate(a):
    import torch
    from tadsr.core import atomic_write, load_image, load_pretrained
    from tadsr.data import validation_photos
    from tadsr.degradation import bicubic_resize
    from tadsr.distill import export_student
    from tadsr.evaluate import lpips_setup, score
    from tadsr.metrics import hf_energy
    from tadsr.core import center_crop_multiple
    from tadsr.degradation import make_lr
    from tadsr.model import super_resolve
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    out = Path(a.out)
    lp, reason = lpips_setup()                         # the same metrics as `tadsr eval` (tadsr.evaluate.score)
    reason = reason or None
    teacher = load_pretrained(a.teacher)
    photos = {n: center_crop_multiple(load_image(p), 128, max_side=a.max_side) for n, p in validation_photos().items()}
    methods = {"bicubic": None, "teacher, 1 step": (teacher, 1), "teacher, 15 steps": (teacher, 15)}
    info = {}
    for name in ROWS:
        ck = out / slug(name) / "checkpoint.safetensors"
        if not ck.exists(): print("missing", ck); continue
        cfg = export_student(ck, out / f"{slug(name)}.safetensors")
        methods[name] = (load_pretrained(out / f"{slug(name)}.safetensors"), 1)
        info[name] = {"distill": cfg["distill"]["distill"], "disc": cfg["distill"]["disc"], "steps": cfg["step"],
                      "batch_size": cfg["distill"]["batch_size"]}
    rows = []
    for name, m in methods.items():
        per = {}
        for pn, hr in photos.items():
            lr = make_lr(hr)
            with torch.no_grad():
                sr = (bicubic_resize(lr, scale=4).clamp(-1, 1) if m is None else
                      super_resolve(m[0], lr, m[1], generator=torch.Generator().manual_seed(a.seed)))
                per[pn] = score(sr, hr, lp)
        mean = {k: (None if any(v[k] is None for v in per.values()) else sum(v[k] for v in per.values()) / len(per))
                for k in ("psnr_y", "ssim_y", "hf_energy", "lpips")}
        rows.append({"name": name, **info.get(name, {"distill": None, "disc": None, "steps": None}), "mean": mean,
                     "per_photo": per})
        print(f"{name:18s} " + "  ".join(f"{k} {'n/c' if v is None else f'{v:.4f}'}" for k, v in mean.items()), flush=True)
    hr_hf = {pn: hf_energy(hr).item() for pn, hr in photos.items()}
    doc = {"what": "Table V analogue at the CPU scale (scripts/run_ablation.py)", "photos": {n: list(h.shape[-2:]) for n, h in photos.items()},
           "seed": a.seed, "teacher": a.teacher, "hr_hf_energy": hr_hf, "lpips_reason": reason, "rows": rows,
           "command": a.command or None}
    with atomic_write(a.json) as f: f.write(json.dumps(doc, indent=1).encode())
    print("wrote", a.json)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("train", "_row"):
        t = sub.add_parser(name); t.add_argument("--data", action="append", default=[])
        t.add_argument("--out", default="runs/ablation"); t.add_argument("--teacher", default="teacher")
        t.add_argument("--steps", type=int, default=3000); t.add_argument("--batch-size", type=int, default=8)
        t.add_argument("--crop", type=int, default=128); t.add_argument("--lr", type=float, default=1e-4)
        t.add_argument("--warmup", type=int, default=100); t.add_argument("--ckpt-every", type=int, default=100)
        t.add_argument("--log-every", type=int, default=50); t.add_argument("--seed", type=int, default=0)
        t.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA (off: fp32 keeps HSD's score differences exact)")
        if name == "train":
            t.add_argument("--minutes", type=float, default=None); t.add_argument("--rows", default=None)
        else: t.add_argument("--name", required=True)
    e = sub.add_parser("eval"); e.add_argument("--out", default="runs/ablation"); e.add_argument("--teacher", default="teacher")
    e.add_argument("--json", default="tadsr/weights/ablation.json"); e.add_argument("--seed", type=int, default=0)
    e.add_argument("--max-side", type=int, default=640); e.add_argument("--command", default="")
    a = ap.parse_args()
    {"train": train, "_row": row, "eval": evaluate}[a.cmd](a)


if __name__ == "__main__":
    main()
