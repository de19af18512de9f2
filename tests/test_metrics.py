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


# ---- the detail yardstick: fine band, flat mask, grain, texture, detail correlation, LR consistency ----
from tadsr.metrics import (Summary, _hf_share, detail_corr, detail_measures, detail_rows, fine_band, flat_mask,  # noqa: E402
                           grain, hf_share, lr_consistency, summarize_rows, texture)


@pytest.fixture(scope="module")
def photos():
    "Three real 192x192 crops (astronaut face, coffee cup, chelsea), their LR images and the candidates of lesson 03."
    hr = torch.cat([_tensor(skdata.astronaut()[40:232, 200:392]), _tensor(skdata.coffee()[100:292, 200:392]),
                    _tensor(skdata.chelsea()[40:232, 100:292])])
    lr = bicubic_down(hr)
    noise = torch.randn(hr.shape, generator=torch.Generator().manual_seed(0))
    return dict(hr=hr, lr=lr, bicubic=upsample_resshift(lr).clamp(-1, 1), noisy=(hr + 0.04 * noise).clamp(-1, 1),
                shifted=torch.roll(hr, 1, dims=-1))


def test_detail_hr_vs_itself_is_one(photos):
    hr, one = photos["hr"], torch.ones(3, dtype=torch.float64)
    for f in (grain, texture, detail_corr):
        torch.testing.assert_close(f(hr, hr), one, atol=1e-12, rtol=0)
    assert lr_consistency(hr, photos["lr"]).isinf().all()     # the photo reproduces its own 8-bit LR exactly


def test_white_noise_raises_grain_lowers_corr_and_fools_hf_energy(photos):
    hr, noisy = photos["hr"], photos["noisy"]
    assert (grain(noisy, hr) > 1.1).all() and (detail_corr(noisy, hr) < 0.99).all()
    assert (hf_energy(noisy) > hf_energy(hr)).all()           # E_HF calls the noise detail


def test_bicubic_is_smoother_than_the_photo(photos):
    hr, bic = photos["hr"], photos["bicubic"]
    assert (grain(bic, hr) < 1).all() and (texture(bic, hr) < 1).all() and (detail_corr(bic, hr) < 0.6).all()
    assert (lr_consistency(bic, photos["lr"]) < lr_consistency(photos["noisy"], photos["lr"])).all()


def test_shift_lowers_corr_not_amount(photos):
    hr, sh = photos["hr"], photos["shifted"]
    assert (detail_corr(sh, hr) < 0.6).all()
    assert ((texture(sh, hr) - 1).abs() < 0.02).all() and ((grain(sh, hr) - 1).abs() < 0.2).all()
    assert (lr_consistency(sh, photos["lr"]) < 40).all()


def test_detail_corr_ignores_gain_and_sharpening():
    from tadsr.metrics import _inner, _pearson
    f = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    torch.testing.assert_close(_pearson(2.5 * f, f, _inner(f.shape, 4)), torch.ones(2, dtype=torch.float64))
    hr = _tensor(skdata.astronaut()[40:232, 200:392])
    bic = upsample_resshift(bicubic_down(hr)).clamp(-1, 1)
    sharp = (3 * bic - 2 * filter2d(bic, gaussian_kernel(7, 1.0))).clamp(-1, 1)   # unsharp mask, amount 2
    assert texture(sharp, hr).item() > 1.3 * texture(bic, hr).item()
    assert detail_corr(sharp, hr).item() < detail_corr(bic, hr).item() + 0.01


def test_fine_band_known_answers():
    const = torch.zeros(1, 3, 32, 32)
    assert fine_band(const).abs().max() < 1e-9 and fine_band(const).dtype == torch.float64
    ramp = (torch.arange(64.0) / 63 - 0.5).expand(1, 3, 64, 64)
    assert fine_band(ramp)[..., 4:-4, 4:-4].abs().max() < 1.0  # a symmetric kernel reproduces a ramp: only 8-bit rounding
    taps = torch.arange(-3, 4, dtype=torch.float64)
    k = torch.exp(-taps ** 2 / 2); k /= k.sum()
    xx = torch.arange(64.0).expand(64, 64)
    for fr in (0.125, 0.25, 0.5):
        x = (0.5 * torch.cos(2 * math.pi * fr * xx)).expand(1, 3, 64, 64)
        y = rgb_to_y(((x + 1) * 127.5).round() / 127.5 - 1)
        resp = 1 - (k * torch.cos(2 * math.pi * fr * taps)).sum()
        err = fine_band(x) - resp * (y - y.mean())
        assert err[..., 8:-8, 8:-8].abs().max() < 1.0, fr
    assert abs((1 - (k * torch.cos(2 * math.pi * 0.25 * taps)).sum()).item() - 0.709) < 1e-3   # as the lesson states
    assert abs((1 - (k * torch.cos(2 * math.pi * 0.5 * taps)).sum()).item() - 0.986) < 1e-3


def test_flat_mask_share_border_and_ties(photos):
    m = flat_mask(photos["hr"])
    assert m.shape == (3, 1, 192, 192) and m.dtype == torch.bool
    assert not m[..., :4, :].any() and not m[..., -4:, :].any() and not m[..., :4].any() and not m[..., -4:].any()
    share = m[..., 4:-4, 4:-4].double().mean((1, 2, 3))
    assert ((share >= 0.3) & (share < 0.32)).all()
    half = torch.zeros(1, 3, 32, 32)
    half[..., 16:, :] = torch.rand(1, 3, 16, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    assert flat_mask(half, frac=0.25)[..., 4:12, 4:-4].all()  # ties at 0 std: all of the constant rows are flat


def test_constant_reference_is_an_error_constant_output_is_zero(photos):
    hr, flat = photos["hr"][:1, :, :64, :64], torch.zeros(1, 3, 64, 64)
    for f in (grain, texture, detail_corr):
        with pytest.raises(ValueError, match="undefined") as e: f(hr, flat)
        assert "\n" not in str(e.value)
        assert abs(f(flat, hr).item()) < 1e-9                 # an output without fine detail: 0, not NaN
    with pytest.raises(ValueError, match="undefined"): detail_measures(hr, flat)


@pytest.mark.parametrize("call, match", [
    (lambda hr: grain(hr, hr[..., :100, :]), "differ"),
    (lambda hr: texture(hr[:, :1], hr[:, :1]), r"\(B,3,H,W\)"),
    (lambda hr: fine_band(hr[0]), r"\(B,3,H,W\)"),
    (lambda hr: detail_corr(hr * 127.5 + 127.5, hr), "/ 127.5 - 1"),
    (lambda hr: grain(hr, torch.full_like(hr, float("nan"))), r"\[-1,1\]"),
    (lambda hr: texture(hr[..., :12, :12], hr[..., :12, :12]), "too small"),
    (lambda hr: flat_mask(hr, frac=1.5), "frac"),
    (lambda hr: flat_mask(hr, window=4), "window"),
    (lambda hr: fine_band(hr, sigma=0), "sigma"),
    (lambda hr: lr_consistency(hr, hr), "shrunk by scale=4"),
    (lambda hr: detail_rows(hr, hr, names=["a"]), "names"),
])
def test_bad_input_one_line_value_error(photos, call, match):
    with pytest.raises(ValueError, match=match) as e: call(photos["hr"])
    assert "\n" not in str(e.value)


def test_detail_measures_equal_building_blocks(photos):
    hr, lr = photos["hr"], photos["lr"]
    sr = torch.cat([photos["bicubic"][:1], photos["noisy"][1:2], photos["shifted"][2:]])
    m = detail_measures(sr, hr, lr)
    assert list(m) == ["psnr_y", "ssim_y", "grain", "texture", "detail_corr", "lr_consistency"]
    assert all(v.shape == (3,) and v.dtype == torch.float64 for v in m.values())
    for k, f in [("grain", grain), ("texture", texture), ("detail_corr", detail_corr)]:
        torch.testing.assert_close(m[k], f(sr, hr), atol=1e-12, rtol=0)
    torch.testing.assert_close(m["psnr_y"], psnr_y(sr, hr)); torch.testing.assert_close(m["ssim_y"], ssim_y(sr, hr))
    torch.testing.assert_close(m["lr_consistency"], lr_consistency(sr, lr))
    assert "lr_consistency" not in detail_measures(sr, hr)


def test_rows_and_summary(photos):
    hr = photos["hr"]
    rows = detail_rows(photos["bicubic"], hr, photos["lr"], names=["astronaut", "coffee", "chelsea"])
    assert [r["name"] for r in rows] == ["astronaut", "coffee", "chelsea"] and isinstance(rows[0]["grain"], float)
    s = summarize_rows(rows)
    assert set(s) == {"psnr_y", "ssim_y", "grain", "texture", "detail_corr", "lr_consistency"}
    g = [r["grain"] for r in rows]
    assert s["grain"].n == 3 and abs(s["grain"].mean - np.mean(g)) < 1e-12 and abs(s["grain"].std - np.std(g, ddof=1)) < 1e-12
    s2 = summarize_rows([{"x": 1.0, "y": None, "ok": True}, {"x": 3, "y": 2.0}])
    assert s2["x"] == Summary(2.0, math.sqrt(2), 2) and s2["y"].n == 1 and math.isnan(s2["y"].std) and "ok" not in s2
    assert str(s2["x"]) == "2.000 ± 1.414 (n=2)"
    with pytest.raises(ValueError, match="no rows"): summarize_rows([])
    with pytest.raises(ValueError, match="no numeric"): summarize_rows(rows, ["missing"])


def test_hf_share_public_and_old_name():
    y = torch.rand(2, 32, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert _hf_share is hf_share
    torch.testing.assert_close(hf_share(y), _hf_share(y, 0.25))
    assert hf_share(torch.zeros(4, 4, dtype=torch.float64)).item() == 0.0
