"""`tadsr.inference`: tiling helpers, tiled == untiled within 1/255 away from the borders (issue #3), exact 4x sizes,
and the 'student' -> one-step teacher fallback.

The tiling check uses the tiny random model of tests/tiny_model.py with weights of std 0.1, so that the network's
contribution is visible (several grey levels, asserted) and the check can fail; with std 0.02 the network moves the
output by < 1/255 and any tiling would pass."""
import warnings

import pytest
import torch
from tiny_model import photo, save_tiny_weights, tiny_model

import tadsr.inference as inf
from tadsr.core import registry
from tadsr.inference import (
    load_model,
    pad_to_multiple,
    ramp,
    tile_starts,
    upscale,
    upscale_tensor,
)
from tadsr.teacher import DiffusionSR, make_lr

BORDER = 8          # HR pixels excluded at the image border


# ---------------------------------------------------------------------------------------------------------------
# helpers

@pytest.mark.parametrize("H,W,m", [(37, 53, 8), (8, 8, 8), (5, 3, 8), (16, 40, 16), (1, 9, 4)])
def test_pad_to_multiple(H, W, m):
    x = torch.randn(1, 3, H, W)
    y = pad_to_multiple(x, m)
    assert y.shape[-2] % m == 0 and y.shape[-1] % m == 0
    assert y.shape[-2] - H < m and y.shape[-1] - W < m
    assert torch.equal(y[..., :H, :W], x)                                   # the image itself is untouched
    reflect = y.shape[-2] - H < H and y.shape[-1] - W < W                   # else replicate (image too small)
    if y.shape[-2] > H: assert torch.equal(y[..., H, :W], x[..., H - 2 if reflect else H - 1, :])


@pytest.mark.parametrize("L,tile,stride", [(96, 32, 24), (128, 32, 24), (40, 32, 24), (32, 32, 24), (24, 32, 24),
                                           (200, 64, 48), (72, 16, 8)])
def test_tile_starts_cover_every_pixel(L, tile, stride):
    s = tile_starts(L, tile, stride)
    assert s == sorted(set(s)) and s[0] == 0
    covered = torch.zeros(L, dtype=torch.bool)
    for a in s:
        assert 0 <= a and (a + tile <= L or L <= tile)
        covered[a:a + tile] = True
    assert covered.all()
    assert all(b - a <= stride for a, b in zip(s, s[1:]))                     # overlap >= tile - stride everywhere
    if L > tile: assert s[-1] == L - tile


def test_ramp_shape_and_range():
    w = ramp(128, 32, lo=True, hi=True)
    assert w.shape == (128,) and (w >= 0).all() and (w <= 1).all()
    assert (w[32:96] == 1).all() and torch.equal(w, w.flip(0))
    assert (w[:8] == 0).all() and (w[8:32] > 0).all() and (w[8:32].diff() > 0).all()   # dead quarter, then a rise
    assert torch.equal(ramp(128, 32, False, False), torch.ones(128))
    assert torch.equal(ramp(128, 0, True, True), torch.ones(128))


@pytest.mark.parametrize("L,tile,overlap,sf", [(96, 32, 8, 4), (128, 32, 8, 4), (120, 32, 16, 4), (64, 32, 24, 4)])
def test_blend_weights_positive_everywhere(L, tile, overlap, sf):
    "The summed weights of all tiles (as upscale_tensor builds them) are > 0 at every HR pixel: no division by 0."
    m = 8
    stride = max(m, ((tile - overlap) // m) * m)
    wsum = torch.zeros(L * sf)
    for a in tile_starts(L, tile, stride):
        wsum[a * sf:(a + tile) * sf] += ramp(tile * sf, (tile - stride) * sf, a > 0, a + tile < L)
    assert wsum.min() > 0, wsum.min()


# ---------------------------------------------------------------------------------------------------------------
# tiled vs untiled

pytestmark = pytest.mark.usefixtures("one_thread")   # fixture in conftest.py


@pytest.fixture(scope="module")
def net():
    return tiny_model(std=0.1)


@pytest.fixture(scope="module")
def lr():
    "A 96x128 LR crop of scikit-image's astronaut (x4 bicubic of a 384x512 HR crop), (1,3,96,128) in [-1,1]."
    from skimage.data import astronaut
    hr = torch.from_numpy(astronaut()[64:448].copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
    return make_lr(hr, 4)


def _seam_mask(H, W, tile, overlap, m=8, sf=4):
    "HR pixels inside an overlap band of two tiles."
    stride = max(m, ((tile - overlap) // m) * m)
    mask = torch.zeros(H * sf, W * sf, dtype=torch.bool)
    for L, dim in ((H, 0), (W, 1)):
        s = tile_starts(L, tile, stride)
        for a, b in zip(s, s[1:]):
            if dim == 0: mask[b * sf:(a + tile) * sf] = True
            else: mask[:, b * sf:(a + tile) * sf] = True
    return mask


@pytest.mark.parametrize("steps", [1, 15])
def test_tiled_matches_untiled(net, lr, steps):
    zero = tiny_model(std=0.0)                                   # the network output is 0: only the skip path
    ref = upscale_tensor(net, lr, steps, tile=None)
    base = upscale_tensor(zero, lr, steps, tile=None)
    effect = ((ref - base).abs() * 127.5).amax()
    assert effect > 5, f"the network moves the output by only {effect:.2f}/255: the tiling check would be vacuous"
    tiled = upscale_tensor(net, lr, steps, tile=32)              # default overlap: tile // 4 = 8 LR pixels
    assert tiled.shape == ref.shape == (1, 3, 384, 512)
    d = ((tiled - ref).abs() * 127.5).amax(1)[0]                # (384,512), in [0,255] grey levels
    inner = torch.zeros_like(d, dtype=torch.bool); inner[BORDER:-BORDER, BORDER:-BORDER] = True
    seam = _seam_mask(96, 128, 32, 8)
    print(f"\nsteps {steps}: network effect max {effect:.2f}/255; tiled vs untiled max |diff| (grey levels): "
          f"whole image {d.max():.3f}, interior {d[inner].max():.3f}, seams {d[seam & inner].max():.3f}, "
          f"inside tiles {d[~seam & inner].max():.3f}, mean {d.mean():.4f}")
    assert d[inner].max() <= 1.0, f"tiled result differs by {d[inner].max():.3f}/255 away from the borders"


@pytest.mark.skipif("teacher" not in registry(), reason="no 'teacher' in tadsr/weights/registry.json yet")
@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "known gap of issue #3: with the TRAINED CPU teacher, tile 96 on a 96x128 LR differs from the one-pass result by "
    "up to ~2.7/255 (1 step) and ~7/255 (15 steps) in the interior (mean 0.1-0.2/255), and a larger overlap does not "
    "help: GroupNorm statistics are computed per tile. Needs global GroupNorm statistics (two-pass tiling) or larger tiles"))
def test_tiled_matches_untiled_shipped_teacher(lr):
    """The same check with the trained CPU teacher (lr_multiple 32: tile 96, default overlap 24 -> stride 64, 2 tiles).

    Tile 96, not 64: with the CPU preset at its default random init (network effect ~30 grey levels) tile 64 gave
    1.33/255 (inside tiles as much as at seams: GroupNorm statistics are per tile), tile 96 gave 0.38/255."""
    net, steps = load_model("teacher")
    ref = upscale_tensor(net, lr, steps, tile=None)
    tiled = upscale_tensor(net, lr, steps, tile=96)
    d = ((tiled - ref).abs() * 127.5).amax(1)[0]
    inner = torch.zeros_like(d, dtype=torch.bool); inner[BORDER:-BORDER, BORDER:-BORDER] = True
    seam = _seam_mask(96, 128, 96, 24, m=net.lr_multiple)
    print(f"\nshipped teacher, {steps} steps: tiled vs untiled max |diff| (grey levels): whole {d.max():.3f}, "
          f"interior {d[inner].max():.3f}, seams {d[seam & inner].max():.3f}, inside tiles {d[~seam & inner].max():.3f}")
    assert d[inner].max() <= 1.0


# ---------------------------------------------------------------------------------------------------------------
# sizes, model loading

@pytest.mark.parametrize("w,h,tile", [(37, 53, None), (37, 53, 16), (8, 8, None), (9, 30, 8), (61, 17, 24)])
def test_output_exactly_4x(w, h, tile):
    out = upscale(photo(w, h), tiny_model(), steps=1, tile=tile)
    assert out.mode == "RGB" and out.size == (4 * w, 4 * h)


def test_too_small_is_an_image_error():
    from tadsr.core import ImageError
    with pytest.raises(ImageError, match="at least"): upscale(photo(7, 20), tiny_model(), steps=1)


def test_load_model_path_default_steps(tmp_path):
    p = save_tiny_weights(tmp_path / "t.safetensors")
    net, steps = load_model(str(p))
    assert isinstance(net, DiffusionSR) and steps == net.T == 15 and not net.training
    p1 = save_tiny_weights(tmp_path / "s.safetensors", default_steps=1)
    assert load_model(str(p1))[1] == 1


def test_student_falls_back_to_teacher_in_one_step(tmp_path, monkeypatch):
    "Registry stand-in: a 'teacher' only; 'student' must warn and return the teacher with 1 step."
    p = save_tiny_weights(tmp_path / "teacher.safetensors")
    from tadsr.core import load_pretrained as real
    monkeypatch.setattr(inf, "registry", lambda: {"teacher": {"file": p.name}})
    monkeypatch.setattr(inf, "load_pretrained", lambda name: real(p) if name == "teacher" else real(name))
    with pytest.warns(UserWarning, match="ONE step"):
        net, steps = load_model("student")
    assert isinstance(net, DiffusionSR) and steps == 1


@pytest.mark.skipif("teacher" not in registry() or "student" in registry(),
                    reason="needs a registered 'teacher' and no 'student' in tadsr/weights/registry.json")
def test_student_fallback_with_shipped_teacher():
    with pytest.warns(UserWarning, match="teacher"):
        net, steps = load_model("student")
    assert steps == 1 and isinstance(net, DiffusionSR)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_model("teacher")[1] == net.T
