"The full-size recipe (lesson 13): official-weight checks, presets, Real-ESRGAN LR; scripts/bench.py's gpu and census on CPU."
import argparse
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tadsr.autoencoder import VQConfig
from tadsr.degradation import make_lr
from tadsr.recipe import (OFFICIAL, Recipe, check_weight_file, load_official, load_official_teacher, meta_model,
                          weights_status)
from tadsr.unet import UNetConfig, count_params

ROOT = Path(__file__).resolve().parents[1]


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_official_presets_match_official_counts():
    "Parameter counts of the official classes (Table I: 118.59 + 55.32 M), from meta-device builds; OFFICIAL agrees."
    for variant, (unet_n, lat_n) in {"realsr": (118_593_583, 55_322_782), "faceir": (118_931_604, 77_009_115)}.items():
        r = Recipe.paper_sr() if variant == "realsr" else Recipe.paper_faces()
        m = meta_model(r.teacher)
        assert (count_params(m.unet), count_params(m.latent)) == (unet_n, lat_n)
        assert [f.params for f in OFFICIAL[variant]] == [unet_n, lat_n]
        assert r.distill.crop % (r.teacher.sf * m.lr_multiple) == 0, "the preset crop must fit the teacher"


def test_load_official_roundtrip_prefixed_and_bare(tmp_path):
    "A DDP-style file (module. prefix, under state_dict) and a bare one both load exactly."
    torch.manual_seed(0)
    src = UNetConfig.fixture_small_a().build()
    torch.save({"state_dict": {"module." + k: v for k, v in src.state_dict().items()}}, tmp_path / "u.pth")
    assert _same(load_official(UNetConfig.fixture_small_a().build(), tmp_path / "u.pth"), src)
    vq = VQConfig.fixture_small().build()
    torch.save(vq.state_dict(), tmp_path / "vq.pth")
    fresh = VQConfig.fixture_small().build()
    assert not _same(fresh, vq)                                  # the load must change something
    assert _same(load_official(fresh, tmp_path / "vq.pth"), vq)


def test_bad_files_fail_clearly(tmp_path):
    torch.manual_seed(0)
    net = UNetConfig.fixture_small_a().build()
    torch.save(net.state_dict(), tmp_path / "u.pth")
    (tmp_path / "cut.pth").write_bytes((tmp_path / "u.pth").read_bytes()[:4096])
    with pytest.raises(ValueError, match="truncated download"):
        load_official(UNetConfig.fixture_small_a().build(), tmp_path / "cut.pth")
    with pytest.raises(FileNotFoundError, match="not found; get it"):
        check_weight_file(tmp_path / "nope.pth", 10, hint="get it")
    torch.save({"state_dict": net.state_dict(), "args": argparse.Namespace(lr=1e-4)}, tmp_path / "pickled.pth")  # a pickled object
    with pytest.raises(ValueError, match=r"weights_only=True\) refused it: .*argparse\.Namespace"):
        load_official(UNetConfig.fixture_small_a().build(), tmp_path / "pickled.pth")
    info = check_weight_file(tmp_path / "u.pth", count_params(net))
    assert 3.9 < info["bytes_per_param"] < 8   # float32 + buffers + container and info["file"] == "u.pth"


def test_missing_official_files_message_and_status(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"resshift_realsrx4_s15_v1\.pth from https://github\.com/zsyOAOA/ResShift"):
        load_official_teacher(tmp_path)
    with pytest.raises(ValueError, match="variant must be one of"):
        load_official_teacher(tmp_path, "bicubic")
    rows = weights_status(tmp_path, "faceir")
    assert [r["file"] for r in rows] == ["resshift_faceir_s4.pth", "ffhq512_vq_f8_dim8_face.pth"]
    assert all("not found" in r["status"] for r in rows)


def test_default_weights_dir_env(tmp_path, monkeypatch):
    from tadsr.recipe import default_weights_dir
    monkeypatch.setenv("TADSR_RESSHIFT_WEIGHTS", str(tmp_path))
    assert default_weights_dir() == tmp_path


def test_paper_hyperparameters():
    "The released TAD-SR configs (TAD-SR.yaml for SR, TAD-faceir.yaml for faces)."
    sr, faces = Recipe.paper_sr().distill, Recipe.paper_faces().distill
    assert (sr.steps, sr.batch_size, sr.crop, sr.lr, sr.lr_d, sr.warmup) == (30000, 8, 256, 5e-5, 5e-5, 5000)
    assert (sr.lambda1, sr.lambda2, sr.ema, sr.grad_clip) == (1.0, 0.02, 0.999, 0.0)
    assert (faces.lambda1, faces.lambda2, faces.batch_size, faces.crop) == (0.1, 0.2, 7, 512)
    assert Recipe.paper_sr().chop == (512, 64) and Recipe.paper_sr(steps=5).distill.steps == 5


def _script(name: str):
    "Import scripts/NAME.py as a module (the scripts are not a package)."
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_recipe_make_lr_is_lesson_02s():
    "Recipe.make_lr is make_lr with the recipe's degradation: seeded per image (realesrgan), bicubic, no gfpgan."
    g = torch.Generator().manual_seed(0)
    hr = torch.rand(2, 3, 128, 128, generator=g) * 2 - 1
    a = Recipe.paper_sr().make_lr(hr, seeds=[3, 4])
    assert a.shape == (2, 3, 32, 32) and torch.equal(a, make_lr(hr, 4, "realesrgan", seeds=[3, 4]))
    assert torch.equal(a[1:], Recipe.paper_sr().make_lr(hr[1:], seeds=[4]))          # per image, not per batch
    assert not torch.equal(a[:1], Recipe.paper_sr().make_lr(hr[:1], seeds=[5]))
    assert torch.equal(Recipe.cpu().make_lr(hr), make_lr(hr))
    assert Recipe.paper_sr().distill.degradation == Recipe.paper_sr().degradation == "realesrgan"
    with pytest.raises(NotImplementedError, match="gfpgan"):
        Recipe.paper_faces().make_lr(torch.zeros(1, 3, 512, 512))


def test_cpu_recipe_is_the_shipped_teacher():
    from tadsr.core import load_pretrained, registry
    if "teacher" not in registry(): pytest.skip("no shipped teacher")
    assert load_pretrained("teacher").cfg == Recipe.cpu().teacher


def test_bench_gpu_small_on_cpu(tmp_path):
    "scripts/bench.py gpu --small runs on CPU and writes JSON with every section (the lesson renders that JSON)."
    out = tmp_path / "b.json"
    cmd = [sys.executable, str(ROOT / "scripts" / "bench.py"), "gpu", "--small", "--device", "cpu", "--json", str(out),
           "--lr-side", "32", "--repeats", "1", "--warmup", "0", "--teacher-repeats", "1", "--distill-steps", "1",
           "--threads", "1"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.startswith("device: CPU") and "x one step" in r.stdout
    res = json.loads(out.read_text())
    assert res["preset"] == "small" and res["lr_side"] == 32 and res["hr_side"] == 128
    assert res["one_step"]["fp32_ms"]["median"] > 0 and "bf16_ms" not in res["one_step"]   # no bf16 on CPU
    assert set(res["one_step"]["fp32_parts_ms"]) == {"encode", "unet", "decode"}
    assert res["teacher_15"]["fp32_ms"]["median"] > res["one_step"]["fp32_ms"]["min"]
    d = res["distill"]
    assert d["status"] == "ok", d
    assert d["batch"] == 2 and d["degradation"] == "realesrgan" and d["iterations_per_s"] > 0 and d["loss_finite"]
    assert set(d["phase_ms"]) == {"data", "student", "disc", "teacher", "g_step"}           # the trainer's clock
    assert res["one_step"]["compiled"]["status"].startswith("not run")


def test_one_step_variants_on_cpu():
    "bench gpu's bf16 variants: eager and channels-last run anywhere (same output to bf16 precision); graphs say why not."
    bench = _script("bench")
    cfg, _ = bench._preset(True)
    net = bench._build(cfg, torch.device("cpu"))
    v = bench.one_step_variants(net, torch.device("cpu"), repeats=1, warmup=0, side=32)
    assert set(v) == {"eager", "graph", "channels_last", "graph_channels_last"}
    assert v["eager"]["median"] > 0 and v["eager"]["max_abs_diff_vs_eager"] == 0.0
    assert 0 <= v["channels_last"]["max_abs_diff_vs_eager"] < 0.05          # bf16 rounding, other summation order
    assert v["graph"]["status"].startswith("skipped") and "CUDA" in v["graph"]["status"]
    assert all(p.is_contiguous() for p in net.parameters())                  # layout restored


def test_op_census_counts_kernel_calls_and_flops():
    "bench census: a known case exactly, the CPU preset's one step part by part, and the committed full-size JSON."
    bench = _script("bench")
    lin, x = torch.nn.Linear(16, 8), torch.zeros(4, 16)
    c = bench.op_census(lambda: lin(x).relu())
    assert c["gflop"] == round(2 * 4 * 16 * 8 / 1e9, 2) and c["kernel_calls"] >= 2 and c["aten_calls"] >= c["kernel_calls"]
    conv, xc = torch.nn.Conv2d(8, 16, 3, padding=1), torch.zeros(1, 8, 32, 32)
    c = bench.op_census(lambda: conv(xc))
    assert c["gflop"] == round(2 * 32 * 32 * 16 * 8 * 9 / 1e9, 2) and c["kernel_calls"] == 1
    from tadsr.model import DiffusionSR, TeacherConfig
    small = bench.one_step_census(DiffusionSR(TeacherConfig.cpu()).eval(), torch.zeros(1, 3, 32, 32))
    assert set(small) == {"encode", "unet", "decode", "one_step"}
    assert small["one_step"]["kernel_calls"] >= small["unet"]["kernel_calls"] > 100
    assert small["unet"]["gflop"] > 0 and small["encode"]["gflop"] == 0                     # space-to-depth: no FLOPs
    census = json.loads((ROOT / "nbs" / "op_census.json").read_text())
    assert census["preset"] == "official_realsr_v1" and census["parts"]["unet"]["kernel_calls"] > 500
    assert all(p["aten_calls"] == p["view_like"] + p["kernel_calls"] for p in census["parts"].values())


def test_bench_timed_rows_warns_when_phases_are_missing():
    bench = _script("bench")
    rows, warn = bench.timed_rows({"time_ms": [{"step": 1, "data": 9.0}, {"step": 2, "data": 1.0}]}, 2)
    assert rows == [{"step": 2, "data": 1.0}] and warn == ""
    rows, warn = bench.timed_rows({"time_ms": [{"step": 1, "data": 9.0}]}, 3)
    assert rows == [{"step": 1, "data": 9.0}] and "1 of 3 iterations" in warn


def test_run_ablation_options_and_mean_std():
    "run_ablation: every DistillConfig setting is a train option (ablation defaults), and the JSON's mean / sample std."
    abl = _script("run_ablation")
    a = abl.build_parser().parse_args(["train", "--steps", "7", "--degradation", "realesrgan"])
    cfg = abl.config_from_args(abl.DistillConfig, a)
    assert (cfg.steps, cfg.degradation, cfg.lr, cfg.warmup, cfg.amp, cfg.val_every) == (7, "realesrgan", 1e-4, 100, False, 0)
    assert type(cfg) is abl.DistillConfig
    mean, std = abl.mean_std({"a": {"psnr_y": 1.0, "lpips": None}, "b": {"psnr_y": 3.0, "lpips": None}})
    assert mean == {"psnr_y": 2.0, "lpips": None} and std["psnr_y"] == pytest.approx(2 ** 0.5) and std["lpips"] is None
