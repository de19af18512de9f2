"""`tadsr.analysis` (lesson 08, the paper's Fig. 2): the re-noising noise is really shared, the gap vanishes when the
one-step output equals the teacher's, curves have the right shapes and are finite, `hf_share` separates a
checkerboard from a smooth ramp, results are deterministic for a seed, and the explorer works without a front-end.

Most tests use the tiny random model of tests/tiny_model.py (weights std 0.1 so that the network's contribution is
visible); one test runs the shipped teacher on a 128 px crop to guard the physics the lesson's verdict rests on."""
import copy
import io

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_model import photo, tiny_model

from tadsr.analysis import (
    CURVE_KEYS,
    claim_check,
    diff_image,
    gap_curves,
    gap_explorer,
    gap_panel,
    hf_share,
    renoise_to,
    score_gaps,
    sr_latents,
    verdict,
    white_hf_share,
    x0_predictions,
)
from tadsr.core import load_image, load_pretrained, registry
from tadsr.data import bundled_photos
from tadsr.metrics import hf_energy
from tadsr.teacher import DiffusionSR, TeacherConfig, center_crop_multiple, make_lr

TS = [0, 2, 7, 14]


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    "The CPU is shared: every test runs torch on one thread."
    yield


@pytest.fixture(scope="module")
def net():
    return tiny_model(seed=0, std=0.1)


@pytest.fixture(scope="module")
def hr():
    "Two 64x64 HR crops (tiny model: multiples of 4 * lr_multiple = 32)."
    return torch.cat([load_image(photo(64, 64, "astronaut")), load_image(photo(64, 64, "coffee"))])


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------------------------
# re-noising and predictions

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


# ---------------------------------------------------------------------------------------------------------------
# score_gaps

def test_gap_is_zero_when_student_output_equals_teacher_output(net, hr):
    r = score_gaps(net, hr, steps=1, ts=TS)                     # 1-step teacher == the one-step output
    assert torch.equal(r["outputs"]["tch"], r["outputs"]["stu"])
    assert (r["mean_gap"]["tch"] == 0).all() and (r["raw_gap"]["tch"] == 0).all()
    assert (r["mean_gap"]["hr"] > 0).all()                      # the HR gap stays: the check can fail


def test_student_copy_of_teacher_reproduces_paper_setting(net, hr):
    "A student with the teacher's weights and default_steps=1 is exactly the paper's Fig. 2 setting (student=None)."
    stu = copy.deepcopy(net); stu.default_steps = 1
    a, b = score_gaps(net, hr, ts=TS, seed=4), score_gaps(net, hr, student=stu, ts=TS, seed=4)
    for k in ("tch", "hr"): torch.testing.assert_close(a["gap"][k], b["gap"][k], atol=1e-6, rtol=0)
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
    for k in ("hr", "tch", "stu"):
        assert r["x0_hat"][k].shape == (len(TS), B, 3, H, H) and r["outputs"][k].shape == (B, 3, H, H)
    for k in ("tch", "hr"):
        assert r["gap"][k].shape == (len(TS), B, 3, H, H)
        assert r["mean_gap"][k].shape == r["hf_share"][k].shape == (len(TS), B)
        assert r["raw_gap"][k].shape == (B,) and torch.isfinite(r["mean_gap"][k]).all()
    torch.testing.assert_close(r["outputs"]["hr"], hr, atol=1e-6, rtol=0)           # s2d latent decodes exactly
    again = score_gaps(net, hr, ts=TS, seed=7)
    for k in ("tch", "hr"): assert torch.equal(again["gap"][k], r["gap"][k])
    other = score_gaps(net, hr, ts=TS, seed=8)
    assert not torch.equal(other["gap"]["tch"], r["gap"]["tch"])


def test_score_gaps_all_steps_by_default(net, hr):
    assert score_gaps(net, hr[:1])["ts"] == list(range(net.T))


def test_bad_inputs(net, hr):
    with pytest.raises(ValueError, match="multiple of 32"): score_gaps(net, hr[..., :48, :48])
    odd = DiffusionSR(TeacherConfig(**{**net.cfg.to_dict(), "latent": "identity"}))
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
    hr = load_image(photo(96, 96, "rocket"))
    grey = hr.mean(1, keepdim=True).expand(-1, 3, -1, -1)
    torch.testing.assert_close(hf_share(grey), hf_energy(grey), atol=1e-9, rtol=0)


# ---------------------------------------------------------------------------------------------------------------
# curves and the verdict

def test_gap_curves_shapes_finite_and_spread(net):
    photos = {k: v for k, v in bundled_photos().items() if k in ("astronaut", "chelsea")}
    c = gap_curves(net, photos, n_noise=2, crop=64, ts=TS, keep=True)
    assert c["names"] == ["astronaut/seed0", "astronaut/seed1", "chelsea/seed0", "chelsea/seed1"]
    for k in CURVE_KEYS:
        assert c[k].shape == (4, len(TS)) and np.isfinite(c[k]).all()
        for s in ("mean", "std", "min", "max"): assert c[s][k].shape == (len(TS),)
        assert (c["min"][k] <= c["mean"][k] + 1e-12).all() and (c["mean"][k] <= c["max"][k] + 1e-12).all()
    assert ((c["hf_tch"] >= 0) & (c["hf_tch"] <= 1)).all()
    assert (c["std"]["gap_tch"] > 0).all()                          # two photos, two draws: a real spread
    assert c["raw_gap_tch"].shape == c["hf_photo"].shape == (4,)
    assert set(c["results"]) == set(photos) and c["results"]["chelsea"]["ts"] == TS
    with pytest.raises(ValueError, match="no photos"): gap_curves(net, {})


def test_claim_check_decides_from_numbers():
    ts = np.arange(6)
    base = dict(ts=ts, eta=np.full(6, 0.5), hf_photo=np.array([0.1]), white=0.95,
                gap_tch=np.array([[4., 3, 2, 1, 1, 1]]), raw_gap_tch=np.array([8.]))
    good = dict(base, mean={"gap_tch": np.array([4., 3, 2, 1, 1, 1]), "hf_tch": np.array([.9, .9, .9, .8, .7, .6])})
    c = claim_check(good)
    assert c["small_t"] and c["high_freq"] and c["peak_t"] == 0 and c["ratio"] == 3.0 and c["gain_small"] == 0.75
    assert "HOLDS" in verdict(c) and "NOT" not in verdict(c)
    flat = dict(base, mean={"gap_tch": np.array([1.2, 1.1, 1.0, 1., 1., 1.]), "hf_tch": np.full(6, 0.9)})
    assert not claim_check(flat)["small_t"]                          # peak at t=0 but not 2x: fails
    low = dict(base, mean={"gap_tch": np.array([4., 3, 2, 1, 1, 1]), "hf_tch": np.full(6, 0.05)})
    assert not claim_check(low)["high_freq"] and "does NOT hold" in verdict(claim_check(low))
    with pytest.raises(ValueError, match="below"): claim_check(dict(good, ts=np.arange(3, 9)))


def test_shipped_teacher_gap_shrinks_with_t_and_is_high_frequency():
    "The physics behind the lesson's verdict, on a 128 px crop: gap(t=0) ~ output gap, gap(T-1) ~ 0, HF-rich."
    if "teacher" not in registry(): pytest.skip("the shipped teacher is not in the registry")
    teacher = load_pretrained("teacher")
    hr = center_crop_multiple(load_image(bundled_photos()["astronaut"]), 128, 128)
    r = score_gaps(teacher, hr, ts=[0, 7, teacher.T - 1])
    g, raw = r["mean_gap"]["tch"][:, 0], r["raw_gap"]["tch"][0]
    assert 0.5 * raw < g[0] <= 1.2 * raw                             # t=0: the teacher nearly passes its input on
    assert g[0] > g[1] > g[2] and g[2] < 0.05 * g[0]                  # ... and the gap shrinks with t
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
    torch.testing.assert_close(gap_panel(r, None, "stu"), r["outputs"]["stu"][0].clamp(-1, 1))
    with pytest.raises(ValueError, match="not computed"): gap_panel(r, 1, "hr")
    with pytest.raises(ValueError, match="which"): gap_panel(r, 0, "nope")


def test_explorer_runs_without_a_front_end(net, hr):
    pytest.importorskip("ipywidgets")
    results = {"a": score_gaps(net, hr[:1], ts=TS), "b": score_gaps(net, hr[1:], ts=TS)}
    ex = gap_explorer(results, view=None, zoom=1)
    photo_w, amp_w = ex.children[0].children
    t_w, which_w, img_w, info_w = ex.children[1:]
    first = img_w.value
    assert first[:8] == b"\x89PNG\r\n\x1a\n" and "mean |d|" in info_w.value
    t_w.value = 14
    assert img_w.value != first                                       # the callback re-rendered
    photo_w.value = "b"; which_w.value = "hr-stu"; amp_w.value = 8.0
    shown = torch.from_numpy(np.array(Image.open(io.BytesIO(img_w.value)))).permute(2, 0, 1).float() / 127.5 - 1
    torch.testing.assert_close(shown, gap_panel(results["b"], 14, "hr-stu", amp=8.0), atol=1 / 127.5, rtol=0)
