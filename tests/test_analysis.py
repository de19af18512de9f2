"""`tadsr.analysis` (lesson 08, the paper's Fig. 2): Tweedie's score formula against autograd, the re-noising noise
is really shared, the gap vanishes when the one-step output equals the teacher's, the white-noise reference has the
compared difference's power, gains follow their definition, curves have the right shapes, the verdict is decided row
by row from the numbers, and the explorer opens on the gap at t = 0 and works without a front-end.

Most tests use the tiny random model of tests/tiny_model.py (weights std 0.1 so that the network's contribution is
visible); one test runs the shipped teacher on a 128 px crop. Photos are the held-out validation photos (china,
flower), never the training photos."""
import copy
import io

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_model import tiny_model

from tadsr.analysis import (
    CURVE_KEYS,
    GAP_KEYS,
    claim_check,
    curve_table,
    diff_image,
    explorer_view,
    gap_curves,
    gap_explorer,
    gap_panel,
    grid_crops,
    hf_share,
    renoise_to,
    score_from_x0,
    score_gaps,
    sr_latents,
    verdict,
    white_hf_share,
    white_like,
    x0_predictions,
)
from tadsr.core import load_image, load_pretrained, registry
from tadsr.data import validation_photos
from tadsr.metrics import hf_energy
from tadsr.model import DiffusionSR, TeacherConfig
from tadsr.core import center_crop_multiple
from tadsr.degradation import make_lr

TS = [0, 2, 7, 14]


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    "The CPU is shared: every test runs torch on one thread."
    yield


@pytest.fixture(scope="module")
def net():
    return tiny_model(seed=0, std=0.1)


def _val(w: int, h: int, name: str = "china") -> torch.Tensor:
    "A held-out validation photo resized to w x h, (1,3,h,w) in [-1,1]."
    return load_image(validation_photos()[name].resize((w, h), Image.BICUBIC))


@pytest.fixture(scope="module")
def hr():
    "Two 64x64 HR crops (tiny model: multiples of 4 * lr_multiple = 32)."
    return torch.cat([_val(64, 64, "china"), _val(64, 64, "flower")])


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------------------------
# the score and re-noising

@pytest.mark.parametrize("t", [0, 5, 14])
def test_score_from_x0_is_the_gradient_of_the_log_density(net, t):
    "Two-point prior z0 in {a, b}: q_t is a mixture of two Gaussians, its score comes from autograd, E[z0|z_t] exactly."
    sched, (a, b, wa, y) = net.sched, (0.4, -0.2, 0.3, 0.1)
    eta, k2 = sched.etas[t].item(), sched.kappa ** 2
    zt = torch.linspace(-1, 1, 33, dtype=torch.float64).view(1, 1, 1, -1).requires_grad_()
    logp = torch.stack([np.log(p) - (zt - (1 - eta) * z - eta * y) ** 2 / (2 * k2 * eta) for p, z in ((wa, a), (1 - wa, b))])
    score, = torch.autograd.grad(torch.logsumexp(logp, 0).sum(), zt)
    r = torch.softmax(logp, 0).detach()
    got = score_from_x0(zt.detach(), r[0] * a + r[1] * b, torch.full_like(zt, y), t, sched)
    torch.testing.assert_close(got, score, atol=1e-8 * score.abs().max().item(), rtol=1e-8)
    if t < 14:                                                           # (at t=14 the posterior is nearly the prior)
        wrong = score_from_x0(zt.detach(), torch.full_like(zt, wa * a + (1 - wa) * b), torch.full_like(zt, y), t, sched)
        assert (wrong - score).abs().max() > 1e-3 * score.abs().max()   # the prior mean is not the posterior mean


def test_score_difference_of_shared_noise_inputs(net):
    "s(z_t^a) - s(z_t^b) = (1-eta)/(kappa^2 eta) [(x0_hat_a - x0_hat_b) - (z0_a - z0_b)] (HSD eq. 8's bracket)."
    za, zb, zy, n, xa, xb = (_randn(2, 48, 4, 4, seed=s).double() for s in range(6))
    for t in (0, 7, 14):
        eta, k2 = net.sched.etas[t].item(), net.sched.kappa ** 2
        d = score_from_x0(renoise_to(za, zy, t, net.sched, n), xa, zy, t, net.sched) - \
            score_from_x0(renoise_to(zb, zy, t, net.sched, n), xb, zy, t, net.sched)
        torch.testing.assert_close(d, (1 - eta) / (k2 * eta) * ((xa - xb) - (za - zb)), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("t", [0, 1, 7, 14])
def test_shared_noise_cancels_in_differences(net, t):
    za, zb, zy, n = (_randn(2, 48, 8, 8, seed=s) for s in range(4))
    d = renoise_to(za, zy, t, net.sched, n) - renoise_to(zb, zy, t, net.sched, n)
    torch.testing.assert_close(d, (1 - net.sched.etas[t].item()) * (za - zb), atol=1e-5, rtol=1e-5)
    other = renoise_to(zb, zy, t, net.sched, _randn(2, 48, 8, 8, seed=9))           # a different noise does not cancel
    assert (renoise_to(za, zy, t, net.sched, n) - other - (1 - net.sched.etas[t].item()) * (za - zb)).abs().max() > 1e-3


def test_renoise_needs_explicit_matching_noise(net):
    z = _randn(1, 48, 8, 8)
    with pytest.raises(ValueError, match="noise"): renoise_to(z, z, 0, net.sched, None)
    with pytest.raises(ValueError, match="shaped like"): renoise_to(z, z, 0, net.sched, _randn(1, 48, 4, 4))


def test_identical_latents_give_identical_predictions(net, hr):
    "One noise for all latents: two copies of a latent must get the same x0_hat at every t (zero gap)."
    lq = make_lr(hr)
    z0, zy = net.encode_pair(hr, lq)
    p = x0_predictions(net, {"a": z0, "b": z0.clone(), "y": zy}, zy, lq, TS, _randn(*zy.shape, seed=1))
    assert p["a"].shape == (len(TS), *z0.shape)
    torch.testing.assert_close(p["a"], p["b"], atol=1e-6, rtol=0)
    assert (p["a"] - p["y"]).abs().mean() > 1e-3                                      # different inputs do differ


def test_white_like_matches_power_per_image():
    d = _randn(3, 48, 8, 8, seed=5) * torch.tensor([0.01, 0.1, 0.0]).view(3, 1, 1, 1)
    w = white_like(d, torch.Generator().manual_seed(6))
    rms = lambda x: x.pow(2).mean((1, 2, 3)).sqrt()
    torch.testing.assert_close(rms(w), rms(d), rtol=1e-5, atol=0)
    assert w[2].abs().max() == 0                                                      # no difference -> no noise
    assert abs(hf_share(w[:2].reshape(2, 3, 32, 32)).mean().item() - white_hf_share(32, 32)) < 0.03
    assert not torch.equal(w, white_like(d, torch.Generator().manual_seed(7)))


# ---------------------------------------------------------------------------------------------------------------
# score_gaps

def test_gap_is_zero_when_student_output_equals_teacher_output(net, hr):
    r = score_gaps(net, hr, steps=1, ts=TS)                     # 1-step teacher == the one-step output
    assert torch.equal(r["outputs"]["tch"], r["outputs"]["stu"])
    assert (r["mean_gap"]["tch"] == 0).all() and (r["raw_gap"]["tch"] == 0).all()
    assert (r["mean_gap"]["white_tch"] == 0).all()              # a zero difference gets a zero reference
    assert torch.isnan(r["gain"]["tch"]).all()                  # 0/0: no gain to speak of, not a fake number
    assert (r["mean_gap"]["hr"] > 0).all() and (r["mean_gap"]["white_hr"] > 0).all()   # the check can fail


def test_student_copy_of_teacher_reproduces_paper_setting(net, hr):
    "A student with the teacher's weights and default_steps=1 is exactly the paper's Fig. 2 setting (student=None)."
    stu = copy.deepcopy(net); stu.default_steps = 1
    a, b = score_gaps(net, hr, ts=TS, seed=4), score_gaps(net, hr, student=stu, ts=TS, seed=4)
    for k in GAP_KEYS: torch.testing.assert_close(a["gap"][k], b["gap"][k], atol=1e-6, rtol=0)
    assert (a["mean_gap"]["tch"] > 0).all()                     # 15 steps differ from one step


def test_other_student_changes_the_gap(net, hr):
    stu = tiny_model(seed=1, std=0.1); stu.default_steps = 1
    a, b = score_gaps(net, hr, ts=TS), score_gaps(net, hr, student=stu, ts=TS)
    assert torch.equal(a["outputs"]["tch"], b["outputs"]["tch"])        # same teacher output (same noise)
    assert (a["outputs"]["stu"] - b["outputs"]["stu"]).abs().max() > 1e-3
    assert not torch.allclose(a["mean_gap"]["tch"], b["mean_gap"]["tch"])


def test_score_gaps_shapes_and_determinism(net, hr):
    r = score_gaps(net, hr, ts=TS, seed=7)
    B, H = hr.shape[0], hr.shape[-1]
    assert r["ts"] == TS and r["eta"].shape == (len(TS),)
    for k in ("hr", "tch", "stu", "white_tch", "white_hr"):
        assert r["x0_hat"][k].shape == (len(TS), B, 3, H, H) and r["outputs"][k].shape == (B, 3, H, H)
    for k in GAP_KEYS:
        assert r["gap"][k].shape == (len(TS), B, 3, H, H)
        for q in ("mean_gap", "rms_gap", "gain", "hf_share"): assert r[q][k].shape == (len(TS), B), q
        assert r["raw_gap"][k].shape == r["raw_rms"][k].shape == (B,) and torch.isfinite(r["gain"][k]).all()
    torch.testing.assert_close(r["outputs"]["hr"], hr, atol=1e-6, rtol=0)           # s2d latent decodes exactly
    again = score_gaps(net, hr, ts=TS, seed=7)
    for k in GAP_KEYS: assert torch.equal(again["gap"][k], r["gap"][k])
    other = score_gaps(net, hr, ts=TS, seed=8)
    assert not torch.equal(other["gap"]["tch"], r["gap"]["tch"])


def test_white_references_and_gain_definition(net, hr):
    r = score_gaps(net, hr, ts=TS, seed=2)
    for k in ("tch", "hr"):                                         # same power as the difference under study
        torch.testing.assert_close(r["raw_rms"][f"white_{k}"], r["raw_rms"][k], rtol=1e-4, atol=0)
        assert not torch.allclose(r["outputs"][f"white_{k}"], r["outputs"][k])     # ... but another structure
    assert (r["raw_hf"]["white_tch"] > 0.85).all()                  # white: near white_hf_share (0.95)
    rms = lambda x: x.double().pow(2).mean((-3, -2, -1)).sqrt()
    for i, t in enumerate(TS):                                       # gain = rms(d x0_hat) / ((1-eta_t) rms(d z0))
        want = rms(r["gap"]["tch"][i]) / ((1 - r["eta"][i]) * rms(r["outputs"]["tch"] - r["outputs"]["stu"]))
        torch.testing.assert_close(r["gain"]["tch"][i], want, rtol=1e-9, atol=0)
        torch.testing.assert_close(r["rms_gap"]["hr"][i], rms(r["gap"]["hr"][i]), rtol=1e-9, atol=0)


def test_score_gaps_all_steps_by_default(net, hr):
    assert score_gaps(net, hr[:1])["ts"] == list(range(net.T))


def test_bad_inputs(net, hr):
    with pytest.raises(ValueError, match="multiple of 32"): score_gaps(net, hr[..., :48, :48])
    d = net.cfg.to_dict()
    odd = DiffusionSR(TeacherConfig(**{**d, "latent": "identity", "unet": {**d["unet"], "in_channels": 3, "out_channels": 3}}))
    with pytest.raises(ValueError, match="latent"): sr_latents(net, hr, student=odd)
    with pytest.raises(ValueError, match="t must be in"): score_gaps(net, hr, ts=[15])


# ---------------------------------------------------------------------------------------------------------------
# hf_share

def test_hf_share_checkerboard_and_ramp():
    yy, xx = torch.meshgrid(torch.arange(64.), torch.arange(64.), indexing="ij")
    checker = ((yy + xx) % 2 * 2 - 1).expand(1, 3, 64, 64)
    ramp = (0.3 + 0.01 * xx - 0.004 * yy).expand(1, 3, 64, 64)
    assert hf_share(checker).item() > 0.99
    assert hf_share(ramp).item() < 0.01
    assert hf_share(torch.zeros(2, 3, 16, 16)).tolist() == [0.0, 0.0]


def test_hf_share_range_reference_and_cutoff():
    x = _randn(32, 3, 48, 64, seed=3)
    s = hf_share(x)
    assert s.shape == (32,) and ((s >= 0) & (s <= 1)).all()
    assert abs(s.mean().item() - white_hf_share(48, 64)) < 0.01                      # white noise: its closed form
    assert (hf_share(x, cutoff=0.5) < s).all() and (hf_share(x, cutoff=0.0) > 0.999).all()


def test_hf_share_matches_metrics_hf_energy_on_grey_images():
    grey = _val(96, 96, "flower").mean(1, keepdim=True).expand(-1, 3, -1, -1)
    torch.testing.assert_close(hf_share(grey), hf_energy(grey), atol=1e-9, rtol=0)


# ---------------------------------------------------------------------------------------------------------------
# crops, curves and the verdict

def test_grid_crops_positions_and_errors():
    x = torch.arange(300 * 400.).view(1, 1, 300, 400)
    torch.testing.assert_close(grid_crops(x, 128), x[..., 86:214, 136:264])          # one crop: the centre
    c = grid_crops(x, 128, 3)                                   # 2 x 3 tiles, offset (22, 8): tiles 0, 2, 5
    assert c.shape == (3, 1, 128, 128)
    assert [c[i, 0, 0, 0].item() for i in range(3)] == [x[0, 0, 22, 8].item(), x[0, 0, 22, 264].item(), x[0, 0, 150, 264].item()]
    with pytest.raises(ValueError, match="holds 6"): grid_crops(x, 128, 7)


def test_gap_curves_shapes_finite_and_spread(net):
    photos = {k: load_image(v) for k, v in validation_photos().items()}
    c = gap_curves(net, photos, n_noise=2, crop=64, n_crops=2, ts=TS, keep=True)
    assert c["names"] == [f"{p}#{b}/seed{s}" for p in ("china", "flower") for s in (0, 1) for b in (0, 1)]
    for k in CURVE_KEYS:
        assert c[k].shape == (8, len(TS)) and np.isfinite(c[k]).all(), k
        for s in ("mean", "std", "min", "max"): assert c[s][k].shape == (len(TS),)
        assert (c["min"][k] <= c["mean"][k] + 1e-12).all() and (c["mean"][k] <= c["max"][k] + 1e-12).all()
    assert ((c["hf_tch"] >= 0) & (c["hf_tch"] <= 1)).all()
    assert (c["std"]["gain_tch"] > 0).all()                         # crops and draws differ: a real spread
    assert c["raw_gap_tch"].shape == c["hf_photo"].shape == (8,)
    assert set(c["results"]) == set(photos) and c["results"]["flower"]["outputs"]["stu"].shape[0] == 2
    table = curve_table(c, "tch").splitlines()
    assert len(table) == 1 + len(TS) and table[1].startswith("t= 0") and f"{c['mean']['gain_tch'][0]:.3f}" in table[1]
    with pytest.raises(ValueError, match="no photos"): gap_curves(net, {})


def _fake(gains, wgains, hfs, whfs, photo=0.1):
    "A `gap_curves`-like dict over 6 steps, one row per list."
    rows = {"gain_tch": np.array(gains), "gain_white_tch": np.array(wgains), "hf_tch": np.array(hfs),
            "hf_white_tch": np.array(whfs), "gap_tch": np.array(gains) * np.linspace(1, 0.1, 6)}
    return dict(rows, ts=np.arange(6), eta=np.linspace(0.01, 0.9, 6), hf_photo=np.full(len(gains), photo), white=0.95,
                mean={k: v.mean(0) for k, v in rows.items()})


FALL, FLAT, HI = [4., 3, 2, 1, 1, 1], [1.] * 6, [.95] * 6


def test_claim_check_decides_row_by_row():
    c = claim_check(_fake([FALL], [FALL], [HI], [HI]))              # falls exactly like white noise
    assert c["outcome"] == "grain" and c["counts"]["grain"] == 1 and c["ratio_median"] == 3.0
    assert "holds only as grain" in verdict(c)
    c = claim_check(_fake([FALL] * 4, [FLAT] * 4, [HI] * 4, [[.8] * 6] * 4))   # unlike the reference everywhere
    assert c["outcome"] == "holds" and c["counts"]["claim"] == 4 and c["claim_grain"] == 0
    assert "claim HOLDS" in verdict(c) and "holds on 4 of 4 rows, 0 of them" in verdict(c)
    c = claim_check(_fake([FALL, FLAT], [FALL, FALL], [HI] * 2, [HI] * 2))      # crops disagree
    assert c["outcome"] == "mixed" and "depends on the crop" in verdict(c)
    c = claim_check(_fake([FALL] + [FLAT] * 4, [FALL] * 5, [HI] * 5, [HI] * 5))  # 1 of 5 < 1/4
    assert c["outcome"] == "fails" and "does NOT hold" in verdict(c)


def test_claim_check_uses_the_gain_not_the_raw_gap():
    "A flat gain with a raw gap that falls (as (1-eta_t) makes it) must not count as 'small t'."
    f = _fake([FLAT], [FALL], [HI], [HI])
    f["gap_tch"] = f["mean"]["gap_tch"] = np.array([1., .95, .9, .5, .3, .1])
    c = claim_check(f)
    assert c["raw_ratio"] > 2 and c["counts"]["small_t"] == 0 and c["outcome"] == "fails"


def test_claim_check_high_frequency_and_white_criteria():
    c = claim_check(_fake([FALL], [FALL], [[.05] * 6], [HI], photo=0.1))           # below the photo's share
    assert c["counts"]["high_freq"] == 0 and c["outcome"] == "fails"
    c = claim_check(_fake([FALL], [FALL], [HI], [[.90] * 6]))                      # spectrum 0.05 off the reference
    assert c["counts"]["white_gain"] == 1 and c["counts"]["flat"] == 0 and c["outcome"] == "holds"
    with pytest.raises(ValueError, match="below"): claim_check(dict(_fake([FALL], [FALL], [HI], [HI]), ts=np.arange(3, 9)))


def test_shipped_teacher_removes_white_noise_but_sees_its_own_output_difference():
    "Physics behind the lesson's reading, on the central 128 px crop of china: white noise of the gap's power is"
    " mostly removed by t=2 and gone at T-1; the gap itself is HF-rich, unlike the photo."
    if "teacher" not in registry(): pytest.skip("the shipped teacher is not in the registry")
    teacher = load_pretrained("teacher")
    hr = center_crop_multiple(load_image(validation_photos()["china"]), 128, 128)
    r = score_gaps(teacher, hr, ts=[0, 2, teacher.T - 1])
    w, g = r["gain"]["white_tch"][:, 0], r["gain"]["tch"][:, 0]
    # a denoiser: keeps a good part of small noise (kappa 1 teacher: 0.40 at t=0), removes most of it by t=2 (0.09)
    assert w[0] > 0.25 and w[1] < 0.5 * w[0] and w[2] < 0.1 * w[0]
    assert (g > 0).all() and g[2] < g[0]
    assert r["hf_share"]["tch"][0, 0] > 0.5 > r["hf_photo"][0]        # mostly above 0.25 Nyquist, unlike the photo


# ---------------------------------------------------------------------------------------------------------------
# display helpers and the explorer

def test_diff_image_and_gap_panel(net, hr):
    assert torch.equal(diff_image(torch.zeros(3, 2, 2)), -torch.ones(3, 2, 2))
    assert torch.equal(diff_image(torch.full((3, 2, 2), -0.5), amp=2), torch.zeros(3, 2, 2))
    assert torch.equal(diff_image(torch.full((3, 2, 2), 5.0)), torch.ones(3, 2, 2))
    r = score_gaps(net, hr, ts=TS)
    assert gap_panel(r, 7, "tch-stu", b=1, view=16).shape == (3, 16, 16)
    i = TS.index(7)
    torch.testing.assert_close(gap_panel(r, 7, "hr-stu", amp=3, b=1), diff_image(r["gap"]["hr"][i, 1], 3))
    torch.testing.assert_close(gap_panel(r, 7, "white_tch-stu", b=1), diff_image(r["gap"]["white_tch"][i, 1]))
    torch.testing.assert_close(gap_panel(r, None, "stu"), r["outputs"]["stu"][0].clamp(-1, 1))
    with pytest.raises(ValueError, match="not computed"): gap_panel(r, 1, "hr")
    with pytest.raises(ValueError, match="which"): gap_panel(r, 0, "nope")


def _decode_png(b: bytes) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(io.BytesIO(b)))).permute(2, 0, 1).float() / 127.5 - 1


def test_explorer_view_is_the_panel_and_its_numbers(net, hr):
    results = {"a": score_gaps(net, hr, ts=TS)}
    png, html = explorer_view(results, ("a", 1), 7, "hr-stu", amp=8.0, view=None, zoom=1)
    torch.testing.assert_close(_decode_png(png), gap_panel(results["a"], 7, "hr-stu", amp=8.0, b=1), atol=1 / 127.5, rtol=0)
    i = TS.index(7)
    assert f"gain {results['a']['gain']['tch'][i, 1]:.3f}" in html and f"gain {results['a']['gain']['white_hr'][i, 1]:.3f}" in html
    png2, html2 = explorer_view(results, ("a", 0), -1, "tch", view=32, zoom=2)     # -1: the clean outputs
    assert Image.open(io.BytesIO(png2)).size == (64, 64) and "outputs" in html2


def test_explorer_opens_on_gap_at_t0_at_natural_size_and_follows_controls(net, hr):
    pytest.importorskip("ipywidgets")
    results = {"a": score_gaps(net, hr[:1], ts=TS), "b": score_gaps(net, hr[1:], ts=TS)}
    ex = gap_explorer(results, view=32, zoom=3)
    photo_w, amp_w = ex.children[0].children
    t_w, which_w, img_w, info_w = ex.children[1:]
    assert (photo_w.value, t_w.value, which_w.value) == (("a", 0), 0, "tch-stu")   # opens on the gap at t = 0
    assert img_w.layout.width == "96px" and img_w.layout.align_self == "flex-start"  # not stretched to the box
    assert (img_w.value, info_w.value) == explorer_view(results, ("a", 0), 0, "tch-stu", 4.0, 32, 3)
    t_w.value = 14
    photo_w.value = ("b", 0); which_w.value = "hr-stu"; amp_w.value = 8.0
    assert (img_w.value, info_w.value) == explorer_view(results, ("b", 0), 14, "hr-stu", 8.0, 32, 3)
    first = gap_explorer(results, view=32, zoom=3)                   # a new instance is not affected by the last one
    assert (first.children[1].value, first.children[2].value) == (0, "tch-stu")
