"The full-size recipe (lesson 13): official-weight checks, presets, Real-ESRGAN LR, and scripts/bench_gpu.py on CPU."
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tadsr.autoencoder import VQConfig
from tadsr.recipe import (OFFICIAL, Recipe, check_weight_file, gpu_results_table, load_gpu_results, load_official,
                          load_official_teacher, meta_model, realesrgan_lr, weights_status)
from tadsr.unet import UNetConfig, count_params

ROOT = Path(__file__).resolve().parents[1]


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_official_presets_match_spec_counts():
    "RESSHIFT.md §0 parameter counts, from meta-device builds (no memory); OFFICIAL lists the same numbers."
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
    "Spec TADSR §7.2 (released configs)."
    sr, faces = Recipe.paper_sr().distill, Recipe.paper_faces().distill
    assert (sr.steps, sr.batch_size, sr.crop, sr.lr, sr.lr_d, sr.warmup) == (30000, 8, 256, 5e-5, 5e-5, 5000)
    assert (sr.lambda1, sr.lambda2, sr.ema, sr.grad_clip) == (1.0, 0.02, 0.999, 0.0)
    assert (faces.lambda1, faces.lambda2, faces.batch_size, faces.crop) == (0.1, 0.2, 7, 512)
    assert Recipe.paper_sr().chop == (512, 64) and Recipe.paper_sr(steps=5).distill.steps == 5


def test_realesrgan_lr_and_recipe_make_lr():
    g = torch.Generator().manual_seed(0)
    hr = torch.rand(2, 3, 128, 128, generator=g) * 2 - 1
    a, b, c = realesrgan_lr(hr, seed=3), realesrgan_lr(hr, seed=3), realesrgan_lr(hr, seed=4)
    assert a.shape == (2, 3, 32, 32) and torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(Recipe.paper_sr().make_lr(hr, seed=3), a)
    assert Recipe.cpu().make_lr(hr).shape == (2, 3, 32, 32)
    with pytest.raises(NotImplementedError, match="gfpgan"):
        Recipe.paper_faces().make_lr(torch.zeros(1, 3, 512, 512))


def test_gpu_results_table_missing(tmp_path):
    assert load_gpu_results(tmp_path / "none.json") is None
    assert "not measured yet" in gpu_results_table(None)


def test_bench_gpu_small_on_cpu(tmp_path):
    "scripts/bench_gpu.py --small runs on CPU, writes JSON with every section, and lesson 13 renders it."
    out = tmp_path / "b.json"
    cmd = [sys.executable, str(ROOT / "scripts" / "bench_gpu.py"), "--small", "--device", "cpu", "--json", str(out),
           "--lr-side", "32", "--repeats", "1", "--warmup", "0", "--teacher-repeats", "1", "--distill-steps", "1",
           "--threads", "1"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.startswith("device: CPU") or "\ndevice: CPU" in r.stdout
    res = json.loads(out.read_text())
    assert res["preset"] == "small" and res["lr_side"] == 32 and res["hr_side"] == 128
    assert res["one_step"]["fp32_ms"]["median"] > 0 and "bf16_ms" not in res["one_step"]   # no bf16 on CPU
    assert res["teacher_15"]["fp32_ms"]["median"] > res["one_step"]["fp32_ms"]["min"]
    d = res["distill"]
    assert d["status"] == "ok", d
    assert d["batch"] == 2 and d["iterations_per_s"] > 0 and d["loss_finite"]
    assert {"student", "teacher", "disc", "hsd"} <= set(d["phase_ms"])
    table = gpu_results_table(load_gpu_results(out))
    assert res["device"] in table and "one step 32->128, fp32" in table and "target" not in table   # not the full size


def test_one_step_variants_on_cpu():
    "bench_gpu's bf16 variants: eager and channels-last run anywhere (same output to bf16 precision); graphs say why not."
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import bench_gpu
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    cfg, _ = bench_gpu._preset(True)
    net = bench_gpu._build(cfg, torch.device("cpu"))
    v = bench_gpu.one_step_variants(net, torch.device("cpu"), repeats=1, warmup=0, side=32)
    assert set(v) == {"eager", "graph", "channels_last", "graph_channels_last"}
    assert v["eager"]["median"] > 0 and v["eager"]["max_abs_diff_vs_eager"] == 0.0
    assert 0 <= v["channels_last"]["max_abs_diff_vs_eager"] < 0.05          # bf16 rounding, other summation order
    assert v["graph"]["status"].startswith("skipped") and "CUDA" in v["graph"]["status"]
    assert all(p.is_contiguous() for p in net.parameters())                  # layout restored


def test_gpu_results_table_variants_and_target():
    "Variant rows appear, and the target line takes the best median over every measured variant."
    ms = lambda m: {"median": m, "min": m, "n": 1}
    res = {"device": "GPU X", "device_type": "cuda", "preset": "official_realsr_v1", "target_one_step_ms": 20.0,
           "one_step": {"fp32_ms": ms(50.0), "bf16_ms": ms(51.0),
                        "bf16_variants_ms": {"graph": ms(18.5), "graph_channels_last": {"status": "error: X"}}},
           "teacher_15": {}, "distill": {"status": "skipped"}}
    table = gpu_results_table(res)
    assert "bf16 graph | 18.5 ms" in table and "bf16 graph channels last | error: X |" in table
    assert "met (best median 18.5 ms)" in table
    res["one_step"]["bf16_variants_ms"]["graph"] = ms(25.0)
    assert "not met (best median 25.0 ms)" in gpu_results_table(res)


def test_op_census_counts_and_time_budget():
    from tadsr.recipe import op_census, time_budget_table
    lin, x = torch.nn.Linear(16, 8), torch.zeros(4, 16)
    c = op_census(lambda: lin(x).relu())
    assert c["gflop"] == round(2 * 4 * 16 * 8 / 1e9, 2) and c["kernel_calls"] >= 2 and c["aten_calls"] >= c["kernel_calls"]
    from tadsr.recipe import one_step_census
    from tadsr.model import DiffusionSR, TeacherConfig
    small = one_step_census(DiffusionSR(TeacherConfig.cpu()).eval(), torch.zeros(1, 3, 32, 32))
    assert set(small) == {"encode", "unet", "decode", "one_step"}
    assert small["one_step"]["kernel_calls"] >= small["unet"]["kernel_calls"] > 100
    census = json.loads((ROOT / "nbs" / "op_census.json").read_text())
    assert census["preset"] == "official_realsr_v1" and census["parts"]["unet"]["kernel_calls"] > 500
    table = time_budget_table(census, None)
    assert "| unet |" in table and "not measured" in table
