"tadsr.metrics: BasicSR-style PSNR/SSIM on Y (checked against scikit-image), LPIPS offline behaviour, HF energy, timing."
import math

import numpy as np
import pytest
import torch
from skimage import data as skdata
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from tadsr.degradation import bicubic_down, filter2d, gaussian_kernel, upsample_resshift
from tadsr.metrics import (LPIPS, Timer, hf_energy, hf_energy_map, lpips_available, psnr_y, rgb_to_y, ssim_y,
                           time_it)


def _tensor(u8):
    return torch.from_numpy(u8.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1


@pytest.fixture(scope="module")
def pair():
    "HR crops of two photos (2,3,192,192) and degraded versions (bicubic x4, noisy)."
    hr = torch.cat([_tensor(skdata.astronaut()[:192, 160:352]), _tensor(skdata.chelsea()[40:232, 100:292])])
    sr = upsample_resshift(bicubic_down(hr)).clamp(-1, 1)
    sr[1] = (hr[1] + 0.05 * torch.randn(hr[1].shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    return sr, hr


def _y_np(x, crop):  # the reference path: 8-bit images -> uint8 HWC -> MATLAB Y -> crop
    u8 = ((x.permute(1, 2, 0).double() + 1) * 127.5).round().clamp(0, 255).numpy().astype(np.uint8)
    y = rgb_to_y(u8)
    return y[crop:-crop, crop:-crop]


def test_rgb_to_y_values():
    x = torch.tensor([-1.0, 1.0]).view(2, 1, 1, 1).expand(2, 3, 2, 2)
    y = rgb_to_y(x)
    assert y.dtype == torch.float64 and y.shape == (2, 1, 2, 2)
    assert torch.allclose(y[:, 0, 0, 0], torch.tensor([16.0, 235.0], dtype=torch.float64))
    assert abs(rgb_to_y(np.array([[[255, 0, 0]]], np.uint8))[0, 0] - (16 + 65.481)) < 1e-12


def test_psnr_ssim_match_skimage(pair):
    sr, hr = pair
    p, s = psnr_y(sr, hr, crop_border=4), ssim_y(sr, hr, crop_border=4)
    assert p.shape == (2,) and s.shape == (2,) and p.dtype == torch.float64
    for i in range(2):
        ys, yh = _y_np(sr[i], 4), _y_np(hr[i], 4)
        assert abs(p[i].item() - peak_signal_noise_ratio(yh, ys, data_range=255)) < 1e-6
        # skimage filters the full image (reflect) and drops a 5-px margin of the SSIM map = our valid region
        ref = structural_similarity(yh, ys, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                    data_range=255)
        assert abs(s[i].item() - ref) < 1e-3
        assert abs(s[i].item() - ref) < 1e-9          # in fact identical up to float64 rounding
    assert p[0] != p[1]                                 # per-sample values, not a batch mean


def test_quantize_flag_and_identity(pair):
    sr, hr = pair
    assert psnr_y(hr, hr).isinf().all() and torch.allclose(ssim_y(hr, hr), torch.ones(2, dtype=torch.float64))
    off = hr + 0.3 / 255                                # 0.15 of a grey level: vanishes only when quantizing to 8 bit
    assert psnr_y(off, hr, quantize=True).isinf().all()
    assert torch.isfinite(psnr_y(off, hr, quantize=False)).all()
    with pytest.raises(ValueError, match="differ"): psnr_y(sr, hr[..., :100])


def test_lpips_missing_weights_message(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))     # an empty cache: deterministic, whatever this machine has
    assert not lpips_available('alex')
    with pytest.raises(FileNotFoundError) as e: LPIPS('alex')
    msg = str(e.value)
    assert "alexnet-owt-7be5be79.pth" in msg and str(tmp_path / "hub" / "checkpoints") in msg and "\n" not in msg
    with pytest.raises(FileNotFoundError, match="vgg16-397923af.pth"): LPIPS('vgg')
    with pytest.raises(ValueError): LPIPS('resnet')


def test_lpips_random_backbone_path(pair):
    sr, hr = pair
    m = LPIPS(pnet_rand=True)
    d = m(sr[..., :64, :64], hr[..., :64, :64])
    assert d.shape == (2,) and torch.isfinite(d).all() and (d > 0).all()
    assert torch.allclose(m(hr[..., :64, :64], hr[..., :64, :64]), torch.zeros(2), atol=1e-6)


def test_hf_energy_sharp_vs_blurred(pair):
    _, hr = pair
    blurred = filter2d(hr, gaussian_kernel(11, 2.0))
    e_sharp, e_blur = hf_energy(hr), hf_energy(blurred)
    assert e_sharp.shape == (2,) and ((e_sharp >= 0) & (e_sharp <= 1)).all()
    assert (e_sharp > 3 * e_blur).all()
    assert hf_energy(torch.zeros(1, 3, 16, 16)).item() == 0.0
    assert hf_energy_map(hr, tile=32).shape == (2, 6, 6)


def test_hf_energy_of_pure_tones():
    xx = torch.arange(64.0).expand(64, 64)
    lo = (torch.cos(2 * math.pi * 0.05 * xx) * 0.5).expand(1, 3, 64, 64)   # 0.1 of Nyquist
    hi = (torch.cos(2 * math.pi * 0.40 * xx) * 0.5).expand(1, 3, 64, 64)   # 0.8 of Nyquist
    assert hf_energy(lo).item() < 0.01 and hf_energy(hi).item() > 0.99


def test_timing_helpers():
    import time
    with Timer() as t: time.sleep(0.01)
    assert t.ms >= 9.5
    calls = []
    r = time_it(lambda: calls.append(1), repeats=3, warmup=2)
    assert set(r) == {'median_ms', 'min_ms'} and r['min_ms'] <= r['median_ms'] and len(calls) == 5
    with pytest.raises(ValueError): time_it(print, repeats=0)
