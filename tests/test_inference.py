"""`tadsr.inference`: tiling helpers, tiled == untiled within 1/255 away from the borders (issue #3) with GroupNorm
statistics synced across tiles (`sync_norm`, `TiledGroupNorm`), exact 4x sizes, and the 'student' -> one-step
teacher fallback.

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
    SYNC_PASSES,
    TiledGroupNorm,
    load_model,
    pad_to_multiple,
    ramp,
    tile_grid,
    tile_starts,
    upscale,
    upscale_tensor,
)
from tadsr.model import DiffusionSR
from tadsr.degradation import make_lr

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


@pytest.mark.parametrize("H,W,tile,stride,m", [(96, 128, 96, 64, 32), (200, 296, 64, 40, 8), (96, 128, 32, 24, 8),
                                                 (64, 64, 64, 48, 8), (160, 96, 64, 8, 8)])
def test_tile_grid_owned_parts_partition_the_image(H, W, tile, stride, m):
    "Every LR pixel is owned by exactly one tile, inside that tile; cuts lie on multiples of m (exact at every UNet level)."
    owned = torch.zeros(H, W, dtype=torch.int)
    for t in tile_grid(H, W, tile, stride, m):
        r0, r1, c0, c1 = (round(f * n) for f, n in zip(t.owned, (t.h, t.h, t.w, t.w)))
        assert 0 <= r0 <= r1 <= t.h and 0 <= c0 <= c1 <= t.w
        assert all(v % m == 0 for v in (t.top + r0, t.top + r1, t.left + c0, t.left + c1) if v not in (H, W))
        owned[t.top + r0:t.top + r1, t.left + c0:t.left + c1] += 1
    assert owned.min() == owned.max() == 1


def _two_tiles(module, x, norm):
    "Run `module` on two overlapping column tiles of x (W=24: 0-16 owns 0-12, 8-24 owns 12-24); owned parts joined."
    outs = []
    with norm, torch.no_grad():
        for i, (a, b, owned) in enumerate([(0, 16, (0., 1., 0., .75)), (8, 24, (0., 1., .25, 1.))]):
            norm.at(i, owned); outs.append(module(x[..., a:b]))
    return torch.cat([outs[0][..., :12], outs[1][..., 4:]], -1)


def test_tiled_group_norm_matches_whole_image():
    from tadsr.unet import GroupNorm32
    torch.manual_seed(0)
    gn = GroupNorm32(64)
    with torch.no_grad(): gn.weight.normal_(); gn.bias.normal_()
    x = torch.randn(2, 64, 16, 24) + torch.linspace(-3, 3, 24)            # the two tiles differ in mean
    with torch.no_grad(): full = gn(x)
    norm = TiledGroupNorm(gn, n_tiles=2)
    first = _two_tiles(gn, x, norm)
    assert (first[..., :12] - full[..., :12]).abs().max() > 0.1          # tile 0 ran alone: per-tile statistics
    torch.testing.assert_close(_two_tiles(gn, x, norm), full, atol=1e-4, rtol=0)   # then the whole image's
    assert "forward" not in vars(gn)


def test_tiled_group_norm_unpatches_on_error():
    net = tiny_model()
    norm = TiledGroupNorm(net.unet, n_tiles=2)
    assert len(norm.norms) > 0
    with pytest.raises(RuntimeError, match="boom"):
        with norm: raise RuntimeError("boom")
    assert not any("forward" in vars(m) for m in norm.norms)


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


@pytest.mark.parametrize("steps,sync_norm", [(1, True), (4, True), (1, False), (15, False)])   # 15 synced: slow
def test_tiled_matches_untiled(net, lr, steps, sync_norm):
    "Both tilings stay within 1/255 with the tiny model (small per-tile GroupNorm error); the shipped models below need sync."
    zero = tiny_model(std=0.0)                                   # the network output is 0: only the skip path
    ref = upscale_tensor(net, lr, steps, tile=None)
    base = upscale_tensor(zero, lr, steps, tile=None)
    effect = ((ref - base).abs() * 127.5).amax()
    assert effect > 5, f"the network moves the output by only {effect:.2f}/255: the tiling check would be vacuous"
    tiled = upscale_tensor(net, lr, steps, tile=32, sync_norm=sync_norm)   # default overlap: tile // 4 = 8 LR px
    assert tiled.shape == ref.shape == (1, 3, 384, 512)
    d = ((tiled - ref).abs() * 127.5).amax(1)[0]                # (384,512), in [0,255] grey levels
    inner = torch.zeros_like(d, dtype=torch.bool); inner[BORDER:-BORDER, BORDER:-BORDER] = True
    seam = _seam_mask(96, 128, 32, 8)
    print(f"\nsteps {steps}, sync_norm {sync_norm}: network effect max {effect:.2f}/255; tiled vs untiled max |diff| (grey levels): "
          f"whole image {d.max():.3f}, interior {d[inner].max():.3f}, seams {d[seam & inner].max():.3f}, "
          f"inside tiles {d[~seam & inner].max():.3f}, mean {d.mean():.4f}")
    assert d[inner].max() <= 1.0, f"tiled result differs by {d[inner].max():.3f}/255 away from the borders"


def _interior_diff(a, b):
    "max over channels of |a - b| in grey levels, without BORDER HR pixels at the image border: (H-2B, W-2B)."
    return ((a - b).abs() * 127.5).amax(1)[0, BORDER:-BORDER, BORDER:-BORDER]


@pytest.mark.parametrize("name,steps", [("teacher", 1), ("teacher", None), ("student", 1)])
def test_tiled_matches_untiled_shipped(lr, name, steps):
    """Issue #3 with the TRAINED models (lr_multiple 32: tile 96, default overlap 24 -> stride 64, 2 tiles).

    Per-tile GroupNorm statistics (sync_norm=False) differ from the one pass by 2.5-12/255 inside the tiles, and more
    overlap does not help; synced statistics (sync_norm=True: SYNC_PASSES calibration passes per step, twice that at
    the first) stay within 1/255. At 1 step the per-tile result is checked to fail, so the test cannot pass vacuously."""
    if name not in registry(): pytest.skip(f"no '{name}' in tadsr/weights/registry.json")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net, default_steps = load_model(name)
    steps = steps or default_steps
    ref = upscale_tensor(net, lr, steps, tile=None)
    d = _interior_diff(upscale_tensor(net, lr, steps, tile=96), ref)
    seam = _seam_mask(96, 128, 96, 24, m=net.lr_multiple)[BORDER:-BORDER, BORDER:-BORDER]
    msg = (f"shipped {name}, {steps} steps, sync_norm=True: tiled vs untiled max |diff| (grey levels): "
           f"{d.max():.3f} (seams {d[seam].max():.3f}, inside tiles {d[~seam].max():.3f}), mean {d.mean():.4f}")
    if steps == 1:
        per_tile = _interior_diff(upscale_tensor(net, lr, steps, tile=96, sync_norm=False), ref).max()
        msg += f"; per-tile statistics (sync_norm=False): {per_tile:.3f}"
        assert per_tile > 1.0, "per-tile GroupNorm no longer breaks the 1/255 bound: this check has become vacuous"
    print("\n" + msg)
    assert d.max() <= 1.0, msg


def test_sync_norm_cost_model(lr):
    "UNet forwards of a synced tiled run: K tiles x (2p + 1 + (S-1)(p+1)) for p passes per step, S steps; K x S without."
    net, calls = tiny_model(), [0]
    hook = net.unet.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    small = lr[..., :32, :48]                                   # tile 32, stride 24 on 32x48: 2 tiles
    try:
        for steps, sync, p in [(1, False, 0), (3, False, 0), (1, True, SYNC_PASSES), (3, 1, 1), (3, 3, 3)]:
            calls[0] = 0
            upscale_tensor(net, small, steps, tile=32, sync_norm=sync)
            assert calls[0] == 2 * (steps if not p else 2 * p + 1 + (steps - 1) * (p + 1)), (steps, sync, calls[0])
    finally: hook.remove()


def test_sync_norm_deterministic_and_checked(lr):
    net, small = tiny_model(std=0.1), lr[..., :32, :48]
    a, b = (upscale_tensor(net, small, 2, tile=32, seed=5) for _ in range(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, upscale_tensor(net, small, 2, tile=32, seed=5, sync_norm=False))
    assert torch.equal(upscale_tensor(net, small, 2, tile=64, sync_norm=False), upscale_tensor(net, small, 2, tile=64))
    with pytest.raises(ValueError, match="sync_norm"): upscale_tensor(net, small, 1, tile=32, sync_norm=-1)


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


def test_load_model_caches_and_reloads_a_changed_file(tmp_path):
    "The same file on the same device loads once; another model written to that path is loaded again."
    p = save_tiny_weights(tmp_path / "m.safetensors", default_steps=1)
    a, ka = load_model(str(p))
    assert load_model(str(p))[0] is a and ka == 1
    save_tiny_weights(p, seed=1, std=0.03)                          # a different model in the same file
    b, kb = load_model(str(p))
    assert b is not a and kb == b.T
    assert not torch.equal(next(a.unet.parameters()), next(b.unet.parameters()))


def test_unknown_model_is_one_clear_error():
    with pytest.raises(ValueError, match="no such model file or shipped model"): load_model("nonsense")


# ---------------------------------------------------------------------------------------------------------------
# temperature (lesson 07): the scale of the prior noise

def test_temperature_one_is_the_default_sampler(net, lr):
    a = upscale_tensor(net, lr[..., :32, :32], 4, seed=1)
    b = upscale_tensor(net, lr[..., :32, :32], 4, seed=1, temperature=1.0)
    assert torch.equal(a, b)


def test_temperature_zero_ignores_the_seed(net, lr):
    "At temperature 0, z_T = z_y and the deterministic sampler is a function of the image alone."
    x = lr[..., :32, :32]
    a, b = upscale_tensor(net, x, 4, seed=1, temperature=0.0), upscale_tensor(net, x, 4, seed=2, temperature=0.0)
    assert torch.equal(a, b)
    c, d = upscale_tensor(net, x, 4, seed=1, temperature=0.5), upscale_tensor(net, x, 4, seed=2, temperature=0.5)
    assert (c - d).abs().max() > 1e-3                           # any noise at all: the seed matters again


def test_temperature_scales_the_prior_noise(net, lr):
    "One step at temperature tau equals one step with the noise multiplied by tau."
    _, zy = net.encode_pair(None, lr[..., :32, :32])
    eps = torch.randn(zy.shape, generator=torch.Generator().manual_seed(0))
    a = net.sample_latent(zy, lr[..., :32, :32], 3, noise=eps, temperature=0.3)
    b = net.sample_latent(zy, lr[..., :32, :32], 3, noise=0.3 * eps)
    assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("tau", [-0.1, 1.5])
def test_temperature_out_of_range(net, lr, tau):
    with pytest.raises(ValueError, match="temperature must be in"):
        upscale_tensor(net, lr[..., :32, :32], 1, temperature=tau)


def test_for_inference_channels_last_same_output(lr):
    "On the CPU `for_inference` stores conv weights channels-last; the output moves by float rounding only."
    from tadsr.inference import for_inference
    a = tiny_model(std=0.1)
    b = for_inference(tiny_model(std=0.1))                      # same seed inside tiny_model: same weights
    conv = [p for p in b.unet.parameters() if p.ndim == 4]
    assert conv and all(p.is_contiguous(memory_format=torch.channels_last) for p in conv)
    x = lr[..., :32, :48]
    ya, yb, y0 = upscale_tensor(a, x, 2), upscale_tensor(b, x, 2), upscale_tensor(tiny_model(std=0.0), x, 2)
    assert (ya - y0).abs().max() > 4 / 255                      # the network matters at this scale, so the check can fail
    assert (ya - yb).abs().max() < 1e-4
