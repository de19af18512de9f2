"""The Table V ablation at the CPU scale: distil five students from the shipped teacher with the same budget, score
them with lesson 03's yardstick on held-out images, and write the JSON table that lesson 12 loads.

Rows: vanilla only (eq. 6), SDS + GAN, SDS + t-GAN, HSD + GAN, HSD + t-GAN (each also keeps eq. 6, as the paper).

  python scripts/run_ablation.py train --data PHOTOS/train --out runs/ablation --steps 3000 [--minutes M]
  python scripts/run_ablation.py eval --out runs/ablation --json tadsr/weights/ablation.json [--val-hr PHOTOS/val]

`train` runs the rows side by side, one process each (`tadsr.distill.train_student`), so they share the machine
equally. Every `DistillConfig` setting is an option (`train --help`); five defaults are the shipped ablation's, not
the library's: lr 1e-4, warm-up 100, a checkpoint every 100 steps, no validation, fp32 (`--amp` for bf16 on CUDA).
`--minutes` stops every row at the same wall-clock budget: the rows are terminated, each keeps its last checkpoint
(written atomically every `--ckpt-every` steps, so up to that many steps are lost) and the table records the step
each row reached. With `--val-every N` each row validates on the held-out photos (`tadsr.model.validate`, one step)
every N steps; the results are in the checkpoint's history.

`eval` exports every row's EMA weights and scores bicubic, the teacher (1 and 15 steps) and each row with
`tadsr.evaluate.score`: PSNR-Y and SSIM-Y (border 4, 8-bit), LPIPS (AlexNet; None with the reason when its weights are
absent), grain, texture, detail correlation, LR consistency and HF energy. Images: the held-out crops
(`tadsr.evaluate.heldout_pairs`) and, with `--val-hr DIR`, up to four 256 px grid crops of every photo in a
folder (`tadsr.evaluate.crop_pairs`, LR = bicubic x4, as `tadsr eval --crops 256`). Per-image scores and the mean
and sample std per method go into the JSON: the held-out crops' table is `rows`, the folder's is `val_hr.rows`
(lesson 12's `load_ablation` shows `val_hr` when present).
"""
import argparse, json, os, statistics, subprocess, sys, time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))   # run from anywhere without installing tadsr

from tadsr.cli import add_config_args, config_from_args          # noqa: E402
from tadsr.distill import DistillConfig                          # noqa: E402
from tadsr.training import setting                               # noqa: E402

ROWS = {"vanilla": ("none", "none"), "SDS + GAN": ("sds", "plain"), "SDS + t-GAN": ("sds", "time"),
        "HSD + GAN": ("hsd", "plain"), "HSD + t-GAN": ("hsd", "time")}


@dataclass(frozen=True)
class AblationDefaults(DistillConfig):
    "DistillConfig with the defaults of the shipped ablation run (only used to build the `train` options)."
    lr: float = setting(1e-4, "student AdamW learning rate after warm-up")
    warmup: int = setting(100, "steps of linear learning-rate warm-up")
    ckpt_every: int = setting(100, "write the checkpoint every N steps (a multiple of log_every)")
    val_every: int = setting(0, "validate every N iterations on the held-out photos (0: never)")
    amp: bool = setting(False, "bf16 autocast on CUDA (off: fp32 keeps HSD's small score differences exact)")


def slug(name): return name.lower().replace(" + ", "_").replace("-", "").replace(" ", "_")


def train(a):
    "Start one `_row` process per ablation row with the same settings; stop them all after --minutes."
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    base = config_from_args(DistillConfig, a)                       # distill / disc are set per row
    rows = [r for r in ROWS if a.rows is None or r in a.rows.split(",")]
    procs = []
    for name in rows:
        distill, disc = ROWS[name]
        cfg = replace(base, distill=distill, disc=disc)
        cmd = [sys.executable, __file__, "_row", "--name", name, "--teacher", a.teacher, "--out", str(out / slug(name)),
               "--config", json.dumps(asdict(cfg))] + (["--no-bundled"] if a.no_bundled else [])
        for d in a.data: cmd += ["--data", d]
        log = open(out / f"{slug(name)}.log", "a")
        procs.append((name, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)))
        print("started", name, flush=True)
    t0, limit = time.time(), (a.minutes * 60 if a.minutes else None)
    while any(p.poll() is None for _, p in procs):
        if limit and time.time() - t0 > limit:
            for _, p in procs:
                if p.poll() is None: p.terminate()                   # the last checkpoint stays (atomic writes)
            break
        time.sleep(2)
    for name, p in procs: print(name, "exit", p.wait(), flush=True)
    print(f"wall {time.time() - t0:.0f} s")


def row(a):
    "One row's training run (a subprocess of `train`)."
    from tadsr.core import load_image
    from tadsr.data import bundled_photos, heldout_photos
    from tadsr.distill import train_student
    from tadsr.model import validate
    cfg = DistillConfig(**json.loads(a.config))
    sources = ([] if a.no_bundled else list(bundled_photos().values())) + [Path(d) for d in a.data]
    hook = None
    if cfg.val_every:
        photos = {k: load_image(v) for k, v in heldout_photos().items()}
        hook = lambda model: validate(model, photos, steps=(1,), seed=cfg.seed)
    train_student(a.teacher, cfg, sources, a.out, validate=hook, progress=False, log=lambda s: print(s, flush=True))


def mean_std(per: dict) -> tuple[dict, dict]:
    "Mean and sample std over images of each score in {image: {score: value}} (None when a value is missing)."
    keys, out_m, out_s = next(iter(per.values())).keys(), {}, {}
    for k in keys:
        vals = [v[k] for v in per.values()]
        ok = vals and all(x is not None for x in vals)
        out_m[k] = statistics.fmean(vals) if ok else None
        out_s[k] = statistics.stdev(vals) if ok and len(vals) > 1 else None
    return out_m, out_s


def score_set(methods, pairs, lpips_fn, seed: int, info: dict) -> list[dict]:
    "One row per method: its per-image `tadsr.evaluate.score` results, their mean and sample std."
    import torch
    from tadsr.evaluate import score
    rows = []
    for m in methods:
        per = {}
        for p in pairs:
            with torch.no_grad(): per[p.name] = score(m.run(p.lr, seed), p.hr, p.lr, lpips_fn)
        mean, std = mean_std(per)
        rows.append({"name": m.name, **info.get(m.name, {"distill": None, "disc": None, "steps": None}),
                     "mean": mean, "std": std, "per_photo": per})
        print(f"  {m.name:18s} " + "  ".join(f"{k} {'n/c' if v is None else f'{v:.4f}'}" for k, v in mean.items()), flush=True)
    return rows


def image_set(pairs, rows, **extra) -> dict:
    "The JSON record of one image set: sizes, the HR images' HF energy, the rows."
    from tadsr.metrics import hf_energy
    return {**extra, "photos": {p.name: list(p.hr.shape[-2:]) for p in pairs},
            "hr_hf_energy": {p.name: hf_energy(p.hr).item() for p in pairs}, "rows": rows}


def evaluate(a):
    "Export each row's EMA student, then score every method on the held-out crops (and --val-hr); write the JSON."
    import torch
    from tadsr.core import atomic_write
    from tadsr.distill import export_student
    from tadsr.evaluate import bicubic_method, crop_pairs, heldout_pairs, lpips_setup, model_method
    from tadsr.inference import load_model
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    out = Path(a.out)
    teacher = load_model(a.teacher)[0]
    methods = [bicubic_method(), model_method(teacher, 1, "teacher, 1 step"), model_method(teacher, 15, "teacher, 15 steps")]
    info = {}
    for name in ROWS:
        ck = out / slug(name) / "checkpoint.safetensors"
        if not ck.exists(): print("missing", ck); continue
        cfg = export_student(ck, out / f"{slug(name)}.safetensors")
        methods.append(model_method(load_model(str(out / f"{slug(name)}.safetensors"))[0], 1, name))
        info[name] = {"distill": cfg["distill"]["distill"], "disc": cfg["distill"]["disc"], "steps": cfg["step"],
                      "batch_size": cfg["distill"]["batch_size"]}
    lpips_fn, reason = lpips_setup(False if a.no_lpips else None)   # the same LPIPS as `tadsr eval`
    crops = heldout_pairs(a.side, a.per_photo)
    print(f"held-out crops ({len(crops)} of {a.side}x{a.side})")
    doc = {"what": "Table V analogue at the CPU scale (scripts/run_ablation.py)", "seed": a.seed, "teacher": a.teacher,
           "scores": "tadsr.evaluate.score: psnr_y, ssim_y, grain, texture, detail_corr, lr_consistency, hf_energy, "
                     "lpips; 'mean' and sample 'std' over the images",
           "lpips_reason": reason or None, "command": a.command or None,
           **image_set(crops, score_set(methods, crops, lpips_fn, a.seed, info), images="tadsr.evaluate.heldout_pairs"
                       f"(side={a.side}, per_photo={a.per_photo})")}
    if a.val_hr:
        pairs = crop_pairs(a.val_hr, a.side)
        print(f"{a.val_hr} ({len(pairs)} crops of {a.side} px, up to 4 per photo; LR = bicubic x4)")
        doc["val_hr"] = image_set(pairs, score_set(methods, pairs, lpips_fn, a.seed, info), folder=str(a.val_hr),
                                  images=f"tadsr.evaluate.crop_pairs(side={a.side})")
    with atomic_write(a.json) as f: f.write(json.dumps(doc, indent=1).encode())
    print("wrote", a.json)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="{train,eval}")
    t = sub.add_parser("train", help="distil the rows side by side")
    add_config_args(t, AblationDefaults, skip=("distill", "disc"))
    t.add_argument("--minutes", type=float, default=None, help="stop every row after this wall-clock budget")
    t.add_argument("--rows", default=None, help=f"comma-separated subset of {list(ROWS)}")
    r = sub.add_parser("_row")                                       # internal: one row, started by `train`
    r.add_argument("--name", required=True); r.add_argument("--config", required=True, help="DistillConfig as JSON")
    for p in (t, r):
        p.add_argument("--data", action="append", default=[], help="folder of training photos (repeatable)")
        p.add_argument("--no-bundled", action="store_true", help="do not add the scikit-image training photos")
        p.add_argument("--out", default="runs/ablation", help="one sub-folder per row")
        p.add_argument("--teacher", default="teacher", help="registry name or .safetensors file")
    e = sub.add_parser("eval", help="export and score every row")
    e.add_argument("--out", default="runs/ablation"); e.add_argument("--teacher", default="teacher")
    e.add_argument("--json", default="tadsr/weights/ablation.json"); e.add_argument("--seed", type=int, default=0)
    e.add_argument("--side", type=int, default=256, help="side of the held-out crops (default 256)")
    e.add_argument("--per-photo", type=int, default=2, help="held-out crops per photo (default 2)")
    e.add_argument("--val-hr", default=None, help="also score on grid crops (tadsr.evaluate.crop_pairs) of this folder of held-out photos")
    e.add_argument("--no-lpips", action="store_true", help="skip LPIPS even when its weights are installed")
    e.add_argument("--command", default="", help="the train command, recorded in the JSON")
    return ap


def main(argv=None):
    a = build_parser().parse_args(argv)
    {"train": train, "_row": row, "eval": evaluate}[a.cmd](a)


if __name__ == "__main__":
    main()
