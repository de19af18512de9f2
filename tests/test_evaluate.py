"""`tadsr.evaluate` and `tadsr eval` (lesson 12): metrics rows with known answers, test pairs from folders and their
one-line errors, the LPIPS "not computed" path, tables in three formats, the ablation loader, and the command line on
a tiny folder (in-process, plus one subprocess for the real console script).

Models: a tiny random-weight `DiffusionSR` (tests/tiny_model.py) and, in one test, the shipped teacher at one step on
a 128x128 crop. Everything here takes a few seconds on one CPU thread.
"""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_model import files_in, photo, tiny_model

import tadsr.evaluate as ev
from tadsr.cli import main
from tadsr.core import load_image, load_pretrained, registry
from tadsr.degradation import bicubic_resize
from tadsr.evaluate import (Method, Pair, ablation_contrasts, ablation_reading, bicubic_method, default_methods, evaluate,
                            format_ablation, format_contrasts, format_report, paired_difference,
                            format_table, load_ablation, load_pairs, model_method, paper_tables, parse_models, score,
                            summarise, heldout_pairs)
from tadsr.metrics import LPIPS, psnr_y, ssim_y
from tadsr.degradation import make_lr
from tadsr.model import super_resolve

pytestmark = pytest.mark.usefixtures("one_thread")   # fixture in conftest.py
TADSR = Path(sys.executable).parent / "tadsr"


@pytest.fixture(scope="module")
def hr_dir(tmp_path_factory) -> Path:
    "Two small real photos (HR 64x48 and 40x32) as PNG files."
    d = tmp_path_factory.mktemp("hr")
    photo(64, 48, "astronaut").save(d / "astro.png")
    photo(40, 32, "coffee").save(d / "coffee.png")
    return d


@pytest.fixture
def pair() -> Pair:
    hr = load_image(photo(64, 48))
    return Pair("astro", hr, make_lr(hr))


# ----------------------------------------------------------------------------------------------------------------
# metrics with known answers

def test_identical_image_is_inf_db_ssim_one(pair):
    s = score(pair.hr, pair.hr)
    assert s["psnr_y"] == math.inf and abs(s["ssim_y"] - 1) < 1e-12 and s["lpips"] is None
    assert 0 < s["hf_energy"] < 1


def test_bicubic_row_is_psnr_y_directly(pair):
    rows = evaluate([bicubic_method()], [pair], lpips=False, progress=False)
    ref = bicubic_resize(pair.lr, scale=4).clamp(-1, 1)
    assert [r["method"] for r in rows] == ["bicubic", "HR"]
    assert rows[0]["psnr_y"] == pytest.approx(psnr_y(ref, pair.hr).item(), abs=1e-12)
    assert rows[0]["ssim_y"] == pytest.approx(ssim_y(ref, pair.hr).item(), abs=1e-12)
    assert rows[1]["psnr_y"] == math.inf and rows[1]["ssim_y"] == 1.0
    assert rows[0]["ms"] > 0 and rows[0]["mp_per_s"] == pytest.approx(64 * 48 / 1e3 / rows[0]["ms"])


def test_model_row_equals_super_resolve_same_seed(pair):
    net = tiny_model()
    hr = pair.hr[..., :32, :64]; lr = make_lr(hr)                 # LR 16x8: multiples of the tiny model's 8
    outs = {}
    rows = evaluate([model_method(net, 2, "tiny-2")], [Pair("p", hr, lr)], lpips=False, seed=3, progress=False,
                    hr_row=False, outputs=outs)
    ref = super_resolve(net, lr, 2, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(outs[("p", "tiny-2")], ref, atol=1e-5, rtol=0)
    assert rows[0]["psnr_y"] == pytest.approx(psnr_y(ref, hr).item(), abs=1e-3)
    other = evaluate([model_method(net, 2, "tiny-2")], [Pair("p", hr, lr)], lpips=False, seed=4, progress=False)
    assert other[0]["psnr_y"] != rows[0]["psnr_y"]               # the seed reaches the noise


def test_unavailable_method_row_has_note_and_no_numbers(pair):
    rows = evaluate([Method("ghost-1", None, 1, ev.NOT_SHIPPED)], [pair], lpips=False, progress=False)
    assert rows[0]["note"] == ev.NOT_SHIPPED and all(rows[0][k] is None for k in ev.METRICS)
    assert "Not available (not shipped yet): ghost-1" in format_report(rows)


# ----------------------------------------------------------------------------------------------------------------
# LPIPS: never guessed

def test_lpips_not_computed_when_weights_absent(pair, monkeypatch):
    monkeypatch.setattr(ev, "lpips_available", lambda net="alex": False)
    rows = evaluate([bicubic_method()], [pair], progress=False)
    assert all(r["lpips"] is None for r in rows)
    assert "never downloads" in rows[0]["lpips_reason"]
    md = format_report(rows)
    assert "not computed" in md and "LPIPS not computed: the AlexNet backbone file" in md
    assert json.loads(format_report(rows, "json"))["rows"][0]["lpips"] is None


def test_lpips_computed_with_a_metric(pair):
    lp = LPIPS("alex", pnet_rand=True)                            # random backbone: the code path, not a score
    rows = evaluate([bicubic_method()], [pair], lpips=lp, progress=False)
    ref = lp(bicubic_resize(pair.lr, scale=4).clamp(-1, 1), pair.hr).item()
    assert rows[0]["lpips"] == pytest.approx(ref) and rows[0]["lpips"] > 0 and rows[1]["lpips"] == 0.0
    assert rows[0]["lpips_reason"] == "" and "not computed" not in format_report(rows)


# ----------------------------------------------------------------------------------------------------------------
# pairs from folders

def test_hr_only_folder_makes_lr(hr_dir):
    pairs = load_pairs(hr_dir)
    assert [p.name for p in pairs] == ["astro", "coffee"]
    torch.testing.assert_close(pairs[0].lr, make_lr(pairs[0].hr))
    assert tuple(pairs[1].lr.shape) == (1, 3, 8, 10)


def test_lr_folder_pairs_by_name_and_mod_crop(tmp_path):
    (tmp_path / "hr").mkdir(); (tmp_path / "lr").mkdir()
    photo(66, 50).save(tmp_path / "hr" / "a.png")                 # not a multiple of 4: cropped to 64x48
    photo(16, 12).save(tmp_path / "lr" / "a.jpg")                 # other suffix, same name
    (p,) = load_pairs(tmp_path / "hr", tmp_path / "lr")
    assert tuple(p.hr.shape) == (1, 3, 48, 64) and tuple(p.lr.shape) == (1, 3, 12, 16)
    torch.testing.assert_close(p.hr, load_image(tmp_path / "hr" / "a.png")[..., :48, :64])


def _setup(tmp_path, hr=(("a", 64, 48),), lr=(("a", 16, 12),)):
    for sub, items in (("hr", hr), ("lr", lr)):
        (tmp_path / sub).mkdir(exist_ok=True)
        for name, w, h in items: photo(w, h).save(tmp_path / sub / f"{name}.png")
    return tmp_path / "hr", tmp_path / "lr"


@pytest.mark.parametrize("hr,lr,words", [
    ((("a", 64, 48),), (("a", 16, 11),), ["a.png: LR is 16x11 but HR a.png is 64x48", "exactly HR/4 = 16x12"]),
    ((("a", 64, 48),), (("a", 32, 24),), ["LR is 32x24"]),
    ((("a", 64, 48), ("b", 64, 48)), (("a", 16, 12),), ["b.png: no LR image named 'b'"]),
    ((("a", 64, 48),), (("a", 16, 12), ("z", 16, 12)), ["z.png: no HR image named 'z'"]),
    ((("a", 28, 28),), (("a", 7, 7),), ["a.png: LR is 7x7", "at least 8x8"]),
])
def test_pair_errors_name_the_file(tmp_path, hr, lr, words):
    h, l_ = _setup(tmp_path, hr, lr)
    with pytest.raises(ValueError) as e: load_pairs(h, l_)
    for w in words: assert w in str(e.value), str(e.value)
    assert "\n" not in str(e.value)


def test_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="no such folder"): load_pairs(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty: no images"): load_pairs(tmp_path / "empty")
    (tmp_path / "dup").mkdir(); photo(32, 32).save(tmp_path / "dup" / "x.png"); photo(32, 32).save(tmp_path / "dup" / "x.jpg")
    with pytest.raises(ValueError, match="same name as"): load_pairs(tmp_path / "dup")
    (tmp_path / "small").mkdir(); photo(20, 40).save(tmp_path / "small" / "s.png")
    with pytest.raises(ValueError, match="s.png: HR is 20x40; evaluation needs at least 32x32"): load_pairs(tmp_path / "small")


def test_heldout_pairs_are_the_heldout_crops():
    pairs = heldout_pairs(128, per_photo=2)
    assert [p.name for p in pairs] == ["china#0", "china#1", "flower#0", "flower#1", "chelsea#0", "chelsea#1", "coffee#0", "coffee#1"]
    for p in pairs:
        assert tuple(p.hr.shape) == (1, 3, 128, 128)
        torch.testing.assert_close(p.lr, make_lr(p.hr))


# ----------------------------------------------------------------------------------------------------------------
# methods

def test_parse_models(weights):
    ms = parse_models(f"bicubic,teacher:2,{weights}:3,{weights},bicubic", teacher_steps=(15,))
    assert [m.name for m in ms] == ["bicubic", "teacher-2", "tiny-3", "tiny-15"]           # duplicates dropped
    assert [m.steps for m in ms] == [0, 2, 3, 15]
    with pytest.raises(ValueError, match="unknown model 'bicubc'"): parse_models("bicubc")
    if "teacher" in registry():
        with pytest.raises(ValueError, match=r"teacher:16: steps must be in \[1, 15\]"): parse_models("teacher:16")
    with pytest.raises(ValueError, match="at least 1"): parse_models("teacher:0")
    with pytest.raises(ValueError, match="nope.safetensors: no such model file"): parse_models("nope.safetensors")


def test_students_not_shipped_are_listed_not_dropped(monkeypatch):
    monkeypatch.setattr(ev, "registry", lambda: {})
    ms = default_methods(teacher_steps=(15, 1))
    assert [(m.name, m.available, m.note) for m in ms] == [
        ("bicubic", True, "no network"), ("teacher-15", False, ev.NOT_SHIPPED), ("teacher-1", False, ev.NOT_SHIPPED),
        ("vanilla-1", False, ev.NOT_SHIPPED), ("TAD-SR-1", False, ev.NOT_SHIPPED)]


@pytest.mark.skipif("teacher" not in registry(), reason="needs the shipped teacher")
def test_shipped_teacher_one_step_matches_super_resolve():
    pairs = heldout_pairs(128, per_photo=1)
    outs = {}
    rows = evaluate(parse_models("teacher:1"), pairs[:1], lpips=False, progress=False, outputs=outs)
    ref = super_resolve(load_pretrained("teacher"), pairs[0].lr, 1, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(outs[(pairs[0].name, "teacher-1")], ref, atol=1e-5, rtol=0)
    assert rows[0]["psnr_y"] == pytest.approx(psnr_y(ref, pairs[0].hr).item(), abs=1e-3)


# ----------------------------------------------------------------------------------------------------------------
# tables

@pytest.fixture
def rows(pair):
    return evaluate([bicubic_method(), Method("ghost-1", None, 1, ev.NOT_SHIPPED)],
                    [pair, pair._replace(name="b")], lpips=False, progress=False)


def test_summarise_means(rows):
    s = {r["method"]: r for r in summarise(rows)}
    assert list(s) == ["bicubic", "ghost-1", "HR"]
    bic = [r for r in rows if r["method"] == "bicubic"]
    assert s["bicubic"]["psnr_y"] == pytest.approx(sum(r["psnr_y"] for r in bic) / 2)
    mp = 2 * 64 * 48 / 1e6
    assert s["bicubic"]["mp_per_s"] == pytest.approx(mp / (sum(r["ms"] for r in bic) / 1e3))
    assert s["ghost-1"]["psnr_y"] is None and s["HR"]["psnr_y"] == math.inf and s["HR"]["ms"] is None


def test_formats(rows):
    md = format_table(rows)
    assert md.splitlines()[0].startswith("| image |") and "| inf |" in md and "not available" in md
    csv_lines = format_table(rows, "csv").splitlines()
    assert len(csv_lines) == 1 + len(rows) and csv_lines[0].startswith("image,size,method,steps,psnr_y")
    js = json.loads(format_report(rows, "json"))
    assert js["summary"][-1]["psnr_y"] == "inf" and len(js["rows"]) == len(rows) and js["notes"]
    with pytest.raises(ValueError, match="unknown table format"): format_table(rows, "xlsx")


# ----------------------------------------------------------------------------------------------------------------
# the ablation file (Table V analogue) and the paper's tables

def test_load_ablation_tolerates_missing_keys(tmp_path):
    assert load_ablation(tmp_path / "absent.json") is None
    assert "does not exist" in format_ablation(None)
    f = tmp_path / "a.json"
    f.write_text(json.dumps({"rows": [
        {"name": "HSD + t-GAN", "distill": "hsd", "disc": "time", "steps": 300, "mean": {"psnr_y": 27.5, "lpips": None}},
        {"name": "vanilla", "distill": "none", "disc": "none"}, {}, "not a row"],
        "lpips_reason": "weights absent", "hr_hf_energy": {"china": 0.1, "flower": 0.2}}))
    rows = load_ablation(f)
    assert [r["name"] for r in rows] == ["HSD + t-GAN", "vanilla", "? + ?", "HR (reference)"]
    assert rows[0]["paper_row"] == "ours" and rows[0]["psnr_y"] == 27.5 and rows[0]["ssim_y"] is None
    assert rows[0]["lpips_reason"] == "weights absent" and rows[-1]["hf_energy"] == pytest.approx(0.15)
    md = format_ablation(rows)
    # columns: steps, PSNR-Y, SSIM-Y, grain, texture, detail corr., LPIPS (missing numbers as "—")
    assert "| HSD + t-GAN | HSD | t-GAN | 300 | 27.50 | — | — | — | — | not computed |" in md and "65.701 / 67.500" in md
    assert rows[0]["image_set"] == "heldout" and rows[0]["n_images"] == 0        # no val_hr: the top-level rows
    assert ablation_contrasts(rows) == []                                         # no per-image scores: nothing to pair
    f.write_text("[1, 2")
    with pytest.raises(ValueError, match="a.json: not valid JSON"): load_ablation(f)


def test_shipped_ablation_file_loads():
    "Whatever format the shipped file has (old: psnr_y/ssim_y/hf_energy/lpips only), it loads and every table renders."
    rows = load_ablation()
    if rows is None: pytest.skip("no tadsr/weights/ablation.json")
    assert {r["image_set"] for r in rows} <= {"val_hr", "heldout"} and rows[0]["n_images"] > 0
    assert "Images:" in format_ablation(rows) and "| run | distill |" in format_ablation(rows)
    cs = ablation_contrasts(rows)
    assert format_contrasts(cs) and ablation_reading(cs)
    for c in cs: assert c["n"] >= 1 and c["verdict"] in ("clear", "within noise", "no difference", "too few images")


def _abl_row(name, distill, disc, per):
    return {"name": name, "distill": distill, "disc": disc, "steps": 100, "per_photo": per,
            "mean": {"psnr_y": 20.0, "grain": 1.0}, "std": {"psnr_y": 0.25}}


def test_ablation_contrasts_paired_by_construction(tmp_path):
    "val_hr preferred; paired differences over the crops both rows scored; mean, standard error and verdict known."
    crops = [f"c{i}" for i in range(5)]
    a = {c: {"psnr_y": 20.0 + i, "grain": 1.0, "texture": 0.5} for i, c in enumerate(crops)}
    shift = [0.30, 0.10, 0.20, 0.25, 0.15]                       # (c) - (a): mean 0.2, sample std sqrt(0.025/4)
    c_ = {c: {"psnr_y": 20.0 + i + d, "grain": 1.0 + (0.5 if i % 2 else -0.5), "texture": 0.5}
          for (i, c), d in zip(enumerate(crops), shift)}          # grain: +-0.5 around (a): within noise
    b = {c: dict(v, psnr_y=v["psnr_y"] - 1.0) for c, v in a.items()}
    b.pop("c4")                                                   # (b) lacks one crop: its contrasts have n = 4
    ours = {c: dict(v) for c, v in c_.items()}
    van = {c: dict(v, psnr_y=None) for c, v in a.items()}         # vanilla without PSNR: that score is skipped
    val = [_abl_row("SDS + GAN", "sds", "plain", a), _abl_row("SDS + t-GAN", "sds", "time", b),
           _abl_row("HSD + GAN", "hsd", "plain", c_), _abl_row("HSD + t-GAN", "hsd", "time", ours),
           _abl_row("vanilla", "none", "none", van)]
    f = tmp_path / "abl.json"
    f.write_text(json.dumps({"rows": [_abl_row("bicubic", None, None, {"x": {"psnr_y": 1.0}})],
                             "val_hr": {"folder": "V", "images": "tadsr.evaluate.crop_pairs(side=256)",
                                        "photos": {c: [256, 256] for c in crops}, "rows": val}}))
    rows = load_ablation(f)
    assert [r["name"] for r in rows] == [r["name"] for r in val]
    assert rows[0]["image_set"] == "val_hr" and rows[0]["n_images"] == 5 and "crop_pairs" in rows[0]["images"]
    assert rows[0]["psnr_y_std"] == 0.25 and rows[0]["ssim_y"] is None and rows[0]["ssim_y_std"] is None
    assert [r["name"] for r in load_ablation(f, images="heldout")] == ["bicubic"]
    assert "20.00 ± 0.25" in format_ablation(rows) and "5 crops" in format_ablation(rows)
    cs = {(c["difference"], c["score"]): c for c in ablation_contrasts(rows)}
    hsd = cs[("(c) − (a)", "psnr_y")]
    assert hsd["n"] == 5 and hsd["mean"] == pytest.approx(0.2)
    assert hsd["se"] == pytest.approx(math.sqrt(0.025 / 4) / math.sqrt(5)) and hsd["verdict"] == "clear"
    g = cs[("(c) − (a)", "grain")]                                # -0.5, +0.5, -0.5, +0.5, -0.5
    assert g["mean"] == pytest.approx(-0.1) and g["se"] == pytest.approx(math.sqrt(0.3) / math.sqrt(5))
    assert g["verdict"] == "within noise"
    assert cs[("(c) − (a)", "texture")]["verdict"] == "no difference"          # identical texture on every crop
    assert cs[("ours − (b)", "psnr_y")]["n"] == 4 and cs[("(b) − (a)", "psnr_y")]["mean"] == pytest.approx(-1.0)
    assert ("ours − (c)", "psnr_y") in cs and cs[("ours − (c)", "psnr_y")]["mean"] == 0.0
    assert ("ours − vanilla", "psnr_y") not in cs and ("ours − vanilla", "grain") in cs
    assert all(c["score"] != "detail_corr" for c in cs.values())             # not in the file: skipped
    md = format_contrasts(list(cs.values()))
    assert md.count("\n") == len(cs) + 1 and "| +0.2000 |" not in md and "| +0.200 |" in md
    text = ablation_reading(list(cs.values()))
    n_clear = sum(c["verdict"] == "clear" for c in cs.values())
    assert f"{n_clear} of the {len(cs)} contrasts are larger than twice their standard error" in text
    assert "HSD vs SDS, plain GAN — PSNR-Y (dB) higher by 0.200" in text
    assert "grain" not in text.split("within noise")[0].split("twice their standard error")[1]   # grain not called clear
    # rows missing: no crash, only the computable contrasts
    assert {c["contrast"] for c in ablation_contrasts([r for r in rows if r["paper_row"] != "(a)"])} == {
        "HSD vs SDS, t-GAN", "t-GAN vs GAN, HSD", "TAD-SR vs vanilla"}
    assert ablation_contrasts(None) == [] and "nothing to read" in ablation_reading([])


def test_paired_difference_verdicts():
    one = lambda vals: {f"i{k}": {"s": v} for k, v in enumerate(vals)}
    d = paired_difference(one([3.0, 5.0, 4.0]), one([1.0, 1.0, 1.0]), "s")      # differences 2, 4, 3
    assert (d["mean"], d["n"], d["verdict"]) == (3.0, 3, "clear") and d["se"] == pytest.approx(1 / math.sqrt(3))
    d = paired_difference(one([1.0, -1.0, 1.5]), one([0.0, 0.0, 0.0]), "s", z=2.0)
    assert d["verdict"] == "within noise"
    assert paired_difference(one([1.0, 2.0]), one([0.0, 0.0]), "s")["verdict"] == "too few images"
    assert paired_difference(one([1.0, 2.0]), one([0.0, 0.0]), "s", min_n=2)["verdict"] == "clear"
    d = paired_difference(one([1.0, float("inf"), None, 2.0, 3.0]), one([0.0] * 5), "s")
    assert d["n"] == 3 and d["mean"] == pytest.approx(2.0)                     # inf and None dropped


def test_paper_tables_are_the_papers():
    "Golden values copied from the paper (Tables I, II, V)."
    t = paper_tables()
    assert t["Table I"]["rows"][0] == ["ResShift-15", 0.231, 0.592, 53.660, 0.682, "118.59 + 55.32"]
    assert t["Table I"]["rows"][-1][:5] == ["TAD-SR-1", 0.227, 0.652, 57.533, 0.058]
    assert t["Table II"]["rows"][-1] == ["TAD-SR-1", 0.741, 65.701, 0.734, 67.500]
    assert t["Table V"]["rows"][0] == ["(a)", "SDS + GAN", "0.489 / 0.528", "57.290 / 57.567"]


# ----------------------------------------------------------------------------------------------------------------
# the command line

def _eval(tmp_path, weights, hr_dir, *extra):
    return main(["eval", "--hr", str(hr_dir), "--models", f"bicubic,{weights}:1,{weights}:2", "--no-progress", *extra])


@pytest.mark.parametrize("suffix", [".md", ".csv", ".json"])
def test_cli_eval_tiny_folder(tmp_path, weights, hr_dir, suffix, capsys):
    out = tmp_path / f"results{suffix}"
    assert _eval(tmp_path, weights, hr_dir, "-o", str(out)) == 0
    o, e = capsys.readouterr()
    assert "| bicubic |" in o and "| tiny-2 |" in o and "Traceback" not in o + e
    text = out.read_text()
    if suffix == ".json": assert [r["method"] for r in json.loads(text)["summary"]] == ["bicubic", "tiny-1", "tiny-2", "HR"]
    if suffix == ".csv": assert text.count("\ncoffee,") == 4
    if suffix == ".md": assert "## Mean over 2 images" in text
    assert files_in(tmp_path) == [out.name]


def test_cli_eval_grid(tmp_path, weights, hr_dir):
    assert _eval(tmp_path, weights, hr_dir, "--grid", str(tmp_path / "g")) == 0
    assert files_in(tmp_path / "g") == ["astro_grid.png", "coffee_grid.png"]
    assert Image.open(tmp_path / "g" / "astro_grid.png").size[0] > 100


def _truncated(p: Path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(p)
    p.write_bytes(p.read_bytes()[:400])


@pytest.mark.parametrize("case,words", [
    ("truncated", ["bad.png: truncated"]),
    ("text", ["bad.png: not an image"]),
    ("lr_size", ["astro.png: LR is 10x10", "exactly HR/4 = 16x12"]),
    ("suffix", ["results.txt: unknown report type '.txt'"]),
    ("models", ["unknown model 'bicubc'"]),
    ("steps", ["--steps must be whole numbers"]),
    ("lr_only", ["--lr needs --hr"]),
    ("no_folder", ["nowhere: no such folder"]),
])
def test_cli_eval_bad_input_one_line(case, words, tmp_path, weights, hr_dir, capsys):
    d = tmp_path / "in"; d.mkdir()
    photo(64, 48).save(d / "astro.png")
    args = ["eval", "--hr", str(d), "--models", f"bicubic,{weights}:1", "--no-progress", "-o", str(tmp_path / "out" / "results.md")]
    if case == "truncated": _truncated(d / "bad.png")
    if case == "text": (d / "bad.png").write_text("not an image\n" * 10)
    if case == "lr_size":
        (tmp_path / "lr").mkdir(); photo(10, 10).save(tmp_path / "lr" / "astro.png"); args += ["--lr", str(tmp_path / "lr")]
    if case == "suffix": args[-1] = str(tmp_path / "out" / "results.txt")
    if case == "models": args[4] = "bicubc"
    if case == "steps": args += ["--steps", "15,four"]
    if case == "lr_only": args = ["eval", "--lr", str(d), "-o", args[-1]]
    if case == "no_folder": args[2] = str(tmp_path / "nowhere")
    rc = main(args)
    o, e = capsys.readouterr()
    lines = e.strip().splitlines()
    assert rc == 1 and len(lines) == 1 and lines[0].startswith("tadsr: error: "), e
    for w in words: assert w in lines[0], lines[0]
    assert "Traceback" not in o + e
    assert files_in(tmp_path / "out") == []


def test_top_level_help_lists_eval(capsys):
    with pytest.raises(SystemExit): main(["--help"])
    assert "eval" in capsys.readouterr().out


def test_cli_eval_help(capsys):
    with pytest.raises(SystemExit) as e: main(["eval", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for w in ("--hr", "--lr", "--models", "--steps", "--output", "--seed", "--grid", "examples:", "teacher:K",
              "student_vanilla", "not available", "held-out"):
        assert w in text, w


@pytest.mark.skipif(not TADSR.is_file(), reason=f"console script {TADSR} not installed (pip install -e .)")
def test_console_script_eval(tmp_path, weights, hr_dir):
    "The installed `tadsr` runs `eval` with a progress bar on stderr and the table on stdout."
    r = subprocess.run([str(TADSR), "eval", "--hr", str(hr_dir), "--models", f"bicubic,{weights}:1",
                        "-o", str(tmp_path / "r.md")], capture_output=True, text=True, timeout=300, check=False,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    assert "tadsr eval" in r.stderr and "Traceback" not in r.stdout + r.stderr
    assert "| tiny-1 |" in r.stdout and (tmp_path / "r.md").is_file()
