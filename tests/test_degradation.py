"tadsr.degradation: Pillow-exact bicubic, ResShift's upsampler, and the seeded Real-ESRGAN pipeline."
import dataclasses
import io
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from skimage import data as skdata

from tadsr.degradation import (RealESRGANConfig, RealESRGANDegradation, bicubic_down, bicubic_resize, filter2d,
                               gaussian_kernel, generalized_gaussian_kernel, jpeg_compress, make_rng, plateau_kernel,
                               random_blur_kernel, random_final_sinc, sinc_kernel, upsample_resshift)


def _tensor(u8):  # uint8 (H,W,3) -> (1,3,H,W) in [-1,1]
    return torch.from_numpy(u8.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1


def _u8(x):  # (1,3,H,W) in [-1,1] -> int (H,W,3), rounded like a saved PNG
    return ((x[0].permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).numpy().astype(int)


def _pil(u8, size, mode):  # Pillow BICUBIC per channel; mode 'L' (8-bit path) or 'F' (float path)
    out = []
    for c in range(3):
        ch = u8[..., c].astype(np.float32) if mode == 'F' else u8[..., c]
        out.append(np.asarray(Image.fromarray(ch, mode).resize(size[::-1], Image.BICUBIC), dtype=np.float64))
    return np.stack(out, -1)


@pytest.fixture(scope="module")
def astronaut():
    return skdata.astronaut()


def test_bicubic_down_x4_matches_pillow(astronaut):
    x = _tensor(astronaut)
    ours = bicubic_down(x)
    # the same algorithm as Pillow's float path (no intermediate rounding): float precision
    assert np.abs((ours[0].permute(1, 2, 0).numpy() + 1) * 127.5 - _pil(astronaut, (128, 128), 'F')).max() < 1e-3
    ref = _pil(astronaut, (128, 128), 'L')
    # Pillow's uint8 path clips its horizontal pass to 0..255; emulated, we are within one grey level everywhere
    assert np.abs(_u8(bicubic_resize(x, (128, 128), pillow_8bit=True)) - ref).max() <= 1
    # without the emulation (our default, no clamp inside) only a few saturated-edge pixels differ by more than 1
    d = np.abs(_u8(ours) - ref)
    assert (d > 1).mean() < 0.005 and d.max() <= 4


def test_bicubic_up_x4_matches_pillow(astronaut):
    small = astronaut[:128, :128]
    up = bicubic_resize(_tensor(small), scale=4)
    assert up.shape == (1, 3, 512, 512)
    assert np.abs(_u8(up) - _pil(small, (512, 512), 'L')).max() <= 1


def test_bicubic_bad_arguments():
    x = torch.zeros(1, 3, 30, 30)
    with pytest.raises(ValueError, match="not divisible"): bicubic_down(x, 4)
    with pytest.raises(ValueError, match="exactly one"): bicubic_resize(x)


def test_upsample_resshift_is_torch_bicubic():
    y = torch.rand(2, 3, 16, 12) * 2 - 1
    up = upsample_resshift(y)
    assert torch.equal(up, F.interpolate(y, scale_factor=4, mode='bicubic'))
    assert up.shape == (2, 3, 64, 48)
    assert torch.equal(upsample_resshift(y, sf=1), y)
    # a=-0.75 and no antialias: not the Pillow-style bicubic
    assert (up - bicubic_resize(y, scale=4)).abs().max() > 1e-2


def test_upsample_resshift_matches_official_fixture(fixtures_dir):
    from safetensors.torch import load_file
    d = load_file(str(fixtures_dir / "sampler_e2e.safetensors"))
    ours = upsample_resshift(d["lq"])
    assert (ours - d["lq_bicubic_x4"]).abs().max().item() < 1e-6


@pytest.mark.parametrize("k", [
    gaussian_kernel(21, 2.0), gaussian_kernel(21, 3.0, 0.5, 1.0), generalized_gaussian_kernel(21, 1.0, 2.0, 0.3, beta=0.6),
    plateau_kernel(21, 1.5, 0.7, -0.4, beta=1.8), sinc_kernel(13, math.pi / 4, pad_to=21), sinc_kernel(7, 2.5)])
def test_kernels_sum_to_one(k):
    assert abs(k.sum() - 1) < 1e-12 and np.isfinite(k).all()


def test_random_kernels_sum_to_one_and_have_fixed_size():
    rng = np.random.default_rng(0)
    for _ in range(100):
        k1 = random_blur_kernel(rng, tuple(range(3, 21, 2)), 21, 0.1, (0.2, 3.0))
        ks = random_final_sinc(rng)
        assert k1.shape == (21, 21) and ks.shape == (15, 15)
        assert abs(k1.sum() - 1) < 1e-9 and abs(ks.sum() - 1) < 1e-9


def test_sinc_centre_value():
    omega = 2.0
    k = sinc_kernel(9, omega)
    from scipy.special import j1
    assert abs(k[4, 4] / k[4, 5] - (omega ** 2 / (4 * math.pi)) / (omega * j1(omega) / (2 * math.pi))) < 1e-12


def test_filter2d_per_sample_kernels():
    img = torch.rand(2, 3, 32, 32)
    ks = torch.from_numpy(np.stack([gaussian_kernel(7, 1.0), gaussian_kernel(7, 2.5)]))
    out = filter2d(img, ks)
    assert torch.allclose(out[1:], filter2d(img[1:], ks[1]), atol=1e-6)
    assert not torch.allclose(out[:1], filter2d(img[:1], ks[1]), atol=1e-3)
    with pytest.raises(ValueError): filter2d(img, torch.ones(2, 4, 4) / 16)


def _psnr01(a, b):
    return (10 * torch.log10(1 / ((a - b) ** 2).mean())).item()


def test_jpeg_quality_ordering_and_libjpeg_ballpark(astronaut):
    x = (_tensor(astronaut[:256, 128:384]) + 1) / 2
    p95, p30 = _psnr01(jpeg_compress(x, 95.), x), _psnr01(jpeg_compress(x, 30.), x)
    assert p95 > 38 and p95 - p30 > 5
    for q, ours in [(95, p95), (30, p30)]:   # within 1 dB of real libjpeg (Pillow) at the same quality
        buf = io.BytesIO(); Image.fromarray(astronaut[:256, 128:384]).save(buf, 'JPEG', quality=q)
        ref = torch.from_numpy(np.array(Image.open(buf))).permute(2, 0, 1)[None].float() / 255
        assert abs(ours - _psnr01(ref, x)) < 1.0
    # odd sizes are padded internally and cropped back; per-sample quality
    y = jpeg_compress(torch.rand(2, 3, 50, 37), torch.tensor([30., 95.]))
    assert y.shape == (2, 3, 50, 37) and y.min() >= 0 and y.max() <= 1


@pytest.fixture(scope="module")
def hr_batch(astronaut):
    return _tensor(astronaut[:128, 192:320]).repeat(2, 1, 1, 1)   # (2,3,128,128)


def test_realesrgan_shapes_range_levels(hr_batch):
    deg = RealESRGANDegradation()
    for seed in range(4):
        lr = deg(hr_batch, seed=seed)
        assert lr.shape == (2, 3, 32, 32) and lr.dtype == torch.float32
        assert lr.min() >= -1 and lr.max() <= 1
        u = (lr + 1) * 127.5
        assert (u - u.round()).abs().max() < 1e-4          # 8-bit levels


def test_realesrgan_determinism(hr_batch):
    deg = RealESRGANDegradation()
    a, b, c = deg(hr_batch, seed=11), deg(hr_batch, seed=11), deg(hr_batch, seed=12)
    assert torch.equal(a, b) and not torch.equal(a, c)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(deg(hr_batch, generator=g1), deg(hr_batch, generator=g2))
    torch.manual_seed(3); d = deg(hr_batch)
    torch.manual_seed(3); e = deg(hr_batch)
    assert torch.equal(d, e)                                 # unseeded calls follow torch's global RNG
    assert make_rng(seed=4).uniform() == make_rng(seed=4).uniform()


def test_realesrgan_per_sample_randomness(hr_batch):
    lr, info = RealESRGANDegradation()(hr_batch, seed=0, return_info=True)
    assert not torch.equal(lr[0], lr[1])                     # identical HR, different per-sample kernels/noise/JPEG
    assert info['final_order'] in ('resize,sinc,jpeg', 'jpeg,resize,sinc') and isinstance(info['second_order'], bool)


def test_realesrgan_config_is_spec_and_frozen():
    c = RealESRGANConfig()
    assert c.kernel_sizes1 == tuple(range(3, 20, 2)) and c.kernel_sizes2 == tuple(range(3, 14, 2))   # odd sizes; stage 2 smaller
    assert c.second_order_prob == 0.5 and c.final_sinc_prob == 0.8 and c.jpeg_range1 == (30.0, 95.0)
    assert abs(sum(c.kernel_probs) - 1) < 1e-12 and RealESRGANConfig.official() == c
    with pytest.raises(dataclasses.FrozenInstanceError): c.sf = 2
    assert RealESRGANConfig.light().noise_range1[1] < c.noise_range1[1]


def test_realesrgan_rejects_bad_input():
    with pytest.raises(ValueError, match="multiples of 4"): RealESRGANDegradation()(torch.zeros(1, 3, 130, 128), seed=0)
