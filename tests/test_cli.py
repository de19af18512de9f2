"""`tadsr upscale` end to end (issue #3, "Bad input"): exit codes, one-line errors naming the file, no traceback, no
partial output; unusual image modes become RGB exactly 4x; the same seed gives the same bytes.

The console script runs in subprocesses (4 of them, ~8 s of start-up each on the shared CPU); the per-kind bad-input
checks and the sub-command `--help`s call `tadsr.cli.main` in-process (same code path, no start-up cost).
The model is a tiny random-weight `DiffusionSR` written by `tiny_model.save_tiny_weights` (see tests/tiny_model.py).
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny_model import files_in, photo

from tadsr.cli import main

TADSR = Path(sys.executable).parent / "tadsr"                 # the console script of this venv
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}                   # the CPU is shared: one thread per run

pytestmark = pytest.mark.skipif(not TADSR.is_file(), reason=f"console script {TADSR} not installed (pip install -e .)")


pytestmark = pytest.mark.usefixtures("one_thread")   # fixture in conftest.py


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([str(TADSR), *map(str, args)], capture_output=True, text=True, env=ENV, timeout=300,
                          check=False)


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("good") / "good.png"
    photo(40, 24).save(p)                       # 40x24: not a multiple of the model's 8 -> padded and cropped back
    return p


# ----------------------------------------------------------------------------------------------------------------
# the bad input kinds: (file name, how to make it, a word of the expected problem)

def _truncated_png(p: Path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(p)   # noise: IDAT is most of the file
    data = p.read_bytes(); p.write_bytes(data[: len(data) * 6 // 10])


BAD = {
    "missing": ("missing.png", lambda p: None, "not found"),
    "text": ("notes.txt", lambda p: p.write_text("this is not an image\n" * 20), "not an image"),
    "zero_bytes": ("empty.png", lambda p: p.write_bytes(b""), "empty"),
    "truncated": ("truncated.png", _truncated_png, "truncated"),
    "too_small": ("tiny4.png", lambda p: photo(4, 4).save(p), "at least"),
}


def make_bad(kind: str, folder: Path) -> Path:
    name, make, _ = BAD[kind]
    Path(folder).mkdir(parents=True, exist_ok=True)
    p = Path(folder) / name; make(p)
    return p


@pytest.mark.parametrize("kind", list(BAD))
def test_bad_input_one_line_no_output(kind, weights, tmp_path, capsys):
    src, out = make_bad(kind, tmp_path / "in"), tmp_path / "out"
    if kind != "missing": assert src.exists()
    rc = main(["upscale", str(src), "-o", str(out), "--model", str(weights), "--steps", "1"])
    o, e = capsys.readouterr()
    assert rc == 1
    lines = e.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tadsr: error: "), e
    assert BAD[kind][2] in lines[0], lines[0]
    assert "Traceback" not in o + e
    assert files_in(out) == [], f"{kind}: something was written: {files_in(out)}"


@pytest.mark.parametrize("kind", list(BAD))
def test_bad_input_line_names_the_file(kind, weights, tmp_path, capsys):
    src = make_bad(kind, tmp_path / "in")
    main(["upscale", str(src), "-o", str(tmp_path / "out"), "--model", str(weights), "--steps", "1"])
    assert str(src) in capsys.readouterr().err


def test_bad_model_path_one_line(tmp_path, good, capsys):
    rc = main(["upscale", str(good), "-o", str(tmp_path / "out"), "--model", str(tmp_path / "nope.safetensors")])
    o, e = capsys.readouterr()
    assert rc == 1 and len(e.strip().splitlines()) == 1 and "nope.safetensors" in e and "Traceback" not in o + e
    assert files_in(tmp_path / "out") == []


def test_mix_of_good_and_bad_subprocess(weights, good, tmp_path):
    bad = [make_bad(k, tmp_path / "in") for k in BAD]
    out = tmp_path / "out"
    r = run_cli("upscale", bad[0], good, *bad[1:], "-o", out, "--model", weights, "--steps", "1")
    assert r.returncode != 0
    assert "Traceback" not in r.stdout + r.stderr
    errors = r.stderr.strip().splitlines()
    assert len(errors) == len(BAD) and all(line.startswith("tadsr: error: ") for line in errors), r.stderr
    for kind, p in zip(BAD, bad):
        assert sum(str(p) in line for line in errors) == 1, (kind, r.stderr)
    assert files_in(out) == ["good.png"], files_in(out)      # good one written; no temp files, nothing for the bad ones
    assert Image.open(out / "good.png").size == (160, 96)
    assert f"{good} -> " in r.stdout


# ----------------------------------------------------------------------------------------------------------------
# unusual but valid inputs, and determinism

@pytest.fixture(scope="module")
def unusual(tmp_path_factory, weights, good):
    "Run `tadsr upscale --steps 3 --seed 0` once on every unusual mode plus the good RGB photo."
    d = tmp_path_factory.mktemp("unusual")
    srcs = {"good": good}
    srcs["gray"] = d / "gray.png"; photo(24, 32).convert("L").save(srcs["gray"])
    rgba = np.zeros((32, 40, 4), np.uint8); rgba[..., :3] = np.asarray(photo(40, 32)); rgba[..., 3] = 255
    rgba[:, :20] = (0, 0, 0, 0)                               # left half: fully transparent over black RGB
    srcs["rgba"] = d / "rgba.png"; Image.fromarray(rgba, "RGBA").save(srcs["rgba"])
    g16 = (np.asarray(photo(32, 24).convert("L"), np.uint16) * 257)
    srcs["gray16"] = d / "gray16.png"; Image.fromarray(g16).save(srcs["gray16"])
    srcs["palette"] = d / "palette.png"; photo(32, 32).convert("P", palette=Image.ADAPTIVE, colors=64).save(srcs["palette"])
    srcs["odd"] = d / "odd_37x53.png"; photo(37, 53).save(srcs["odd"])
    out = d / "out"
    r = run_cli("upscale", *srcs.values(), "-o", out, "--model", weights, "--steps", 3, "--seed", 0)
    return srcs, out, r


def test_unusual_inputs_were_what_they_claim(unusual):
    srcs, _, _ = unusual
    modes = {k: Image.open(p).mode for k, p in srcs.items()}
    assert modes["gray"] == "L" and modes["rgba"] == "RGBA" and modes["palette"] == "P"
    assert modes["gray16"] in ("I;16", "I;16B", "I") and np.asarray(Image.open(srcs["gray16"])).max() > 255
    assert Image.open(srcs["odd"]).size == (37, 53)


def test_unusual_inputs_rgb_exactly_4x(unusual):
    srcs, out, r = unusual
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stdout + r.stderr and r.stderr == ""
    assert files_in(out) == sorted(f"{Path(p).stem}.png" for p in srcs.values())
    for k, p in srcs.items():
        w, h = Image.open(p).size
        res = Image.open(out / f"{Path(p).stem}.png")
        assert res.mode == "RGB" and res.size == (4 * w, 4 * h), (k, res.mode, res.size)


def test_rgba_is_composited_over_white(unusual):
    "tadsr.core.load_pil composites alpha over white: the transparent (black-RGB) half comes out white, not black."
    _, out, _ = unusual
    a = np.asarray(Image.open(out / "rgba.png"), dtype=np.float64)      # (128,160,3)
    assert a[8:-8, 8:72].mean() > 230, a[8:-8, 8:72].mean()             # transparent half, away from the seam
    assert a[8:-8, 88:-8].mean() < 200                                  # the photo half is a photo, not white


def test_same_seed_same_bytes_other_seed_other_pixels(unusual, weights, tmp_path, capsys):
    srcs, out, _ = unusual
    again = tmp_path / "again"
    r = run_cli("upscale", srcs["good"], "-o", again, "--model", weights, "--steps", 3, "--seed", 0)   # another process
    assert r.returncode == 0, r.stderr
    assert (again / "good.png").read_bytes() == (out / "good.png").read_bytes()
    assert main(["upscale", str(srcs["good"]), "-o", str(tmp_path / "s1"), "--model", str(weights),
                 "--steps", "3", "--seed", "1"]) == 0
    a0 = np.asarray(Image.open(out / "good.png"), np.int16)
    a1 = np.asarray(Image.open(tmp_path / "s1" / "good.png"), np.int16)
    assert np.abs(a0 - a1).max() > 0, "--seed 1 gave the same pixels as --seed 0 (3 steps)"


def test_one_step_depends_on_seed_too(weights, good, tmp_path):
    "One step also draws z_T = zy + kappa*sqrt(eta_T)*noise, and both head terms see it: the seed matters."
    res = []
    for seed in (0, 1):
        assert main(["upscale", str(good), "-o", str(tmp_path / str(seed)), "--model", str(weights),
                     "--steps", "1", "--seed", str(seed)]) == 0
        res.append(np.asarray(Image.open(tmp_path / str(seed) / "good.png"), np.int16))
    assert np.abs(res[0] - res[1]).max() > 0


# ----------------------------------------------------------------------------------------------------------------
# --help

def test_top_level_help_subprocess():
    r = run_cli("--help")
    assert r.returncode == 0 and r.stderr == ""
    for word in ("upscale", "demo", "train-teacher"): assert word in r.stdout


@pytest.mark.parametrize("cmd,words", [
    ("upscale", ["INPUT", "--outdir", "--model", "--steps", "--tile", "--seed", "RGBA"]),
    ("demo", ["--outdir", "--model", "--seed"]),
    ("train-teacher", ["--data", "--out", "--steps", "--batch-size", "--crop", "--restart", "--export", "--kappa"]),
])
def test_subcommand_help(cmd, words, capsys):
    with pytest.raises(SystemExit) as e: main([cmd, "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    missing = [w for w in words if w not in text]
    assert not missing, f"`tadsr {cmd} --help` does not mention {missing}"


def test_upscale_no_sync_norm_flag(tmp_path):
    "--no-sync-norm gives the cheaper per-tile result: same size, different pixels from the synced default."
    from PIL import Image
    from tiny_model import photo
    from tadsr.cli import main
    src = tmp_path / "in.png"; photo(128, 96).save(src)
    assert main(["upscale", str(src), "-o", str(tmp_path / "a"), "--tile", "64"]) == 0
    assert main(["upscale", str(src), "-o", str(tmp_path / "b"), "--tile", "64", "--no-sync-norm"]) == 0
    a, b = Image.open(tmp_path / "a" / "in.png"), Image.open(tmp_path / "b" / "in.png")
    assert a.size == b.size == (512, 384)
    assert a.tobytes() != b.tobytes()


def test_upscale_temperature_flag(tmp_path, capsys):
    "--temperature 0 ignores the seed; out of [0, 1] it is a one-line usage error (exit 2) and writes nothing."
    from PIL import Image
    from tiny_model import photo
    from tadsr.cli import main
    src = tmp_path / "in.png"; photo(64, 48).save(src)
    for d, seed in (("a", "1"), ("b", "2")):
        assert main(["upscale", str(src), "-o", str(tmp_path / d), "--temperature", "0", "--seed", seed]) == 0
    assert Image.open(tmp_path / "a" / "in.png").tobytes() == Image.open(tmp_path / "b" / "in.png").tobytes()
    capsys.readouterr()
    with pytest.raises(SystemExit) as e: main(["upscale", str(src), "-o", str(tmp_path / "c"), "--temperature", "2"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "must be between 0 and 1" in err[-1] and not (tmp_path / "c").exists()
