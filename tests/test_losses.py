"""Properties of the distillation losses (lesson 09, `tadsr.losses`): the HSD gradient identity, no bias at the optimum,
stop-gradient through the teacher, shared noise, t' range, and the two legacy switches of the released code."""
import pytest
import torch
import torch.nn as nn

from tadsr.diffusion import ScheduleConfig, make_schedule, q_sample, scale_input
from tadsr.losses import (eps_from_x0, hsd_loss, renoise_noise, sample_tprime, score_distill_loss, sds_loss,
                          vanilla_loss)
from tiny_model import tiny_model


class StandIn(nn.Module):
    "A float64 stand-in teacher with the `DiffusionSR` interface the losses use (.sched, .T, .predict_x0)."
    def __init__(self, channels: int = 4, kappa: float = 2.0, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.sched = make_schedule(ScheduleConfig.realsr_v1(kappa=kappa))
        self.conv = nn.Conv2d(channels, channels, 3, padding=1).double()

    @property
    def T(self): return self.sched.T

    def predict_x0(self, zt, t, zy, lq):
        "A smooth nonlinear, t-dependent x0 estimate (enough to make F(z_stu) != F(z_tch))."
        return zy + 0.5 * torch.tanh(self.conv(zt - zy) + 0.1 * t.to(zt).view(-1, 1, 1, 1))


class Recorder:
    "Wrap a teacher's predict_x0 and keep every (zt, t) it is called with."
    def __init__(self, teacher):
        self.calls, self.inner = [], teacher.predict_x0
        teacher.predict_x0 = self

    def __call__(self, zt, t, zy, lq):
        self.calls.append((zt.detach().clone(), t.clone()))
        return self.inner(zt, t, zy, lq)


def _batch(dtype=torch.float32, C=48, B=3, hw=32, seed=0):
    "(z0_stu, z0_tch, zy, lq): student/teacher latents that differ, an LR latent and an LR image in [-1,1]."
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)
    zy = 0.3 * r(B, C, hw, hw)
    z0_tch = zy + 0.1 * r(B, C, hw, hw)
    z0_stu = z0_tch + 0.05 * r(B, C, hw, hw)
    lq = torch.rand(B, 3, hw, hw, generator=g, dtype=dtype) * 2 - 1
    return z0_stu, z0_tch, zy, lq


def _w2(sched, t, like):
    eta = sched.etas[t].to(like).view(-1, 1, 1, 1)
    return (1 - eta) / (sched.kappa * eta.sqrt())


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    return tiny_model()


def test_hsd_gradient_identity_float64():
    "autograd grad of hsd_loss = w2 (z0_stu - z0_tch + F(z_tch) - F(z_stu)) / (B C H W), to 1e-6, at every t'."
    teacher = StandIn()
    z0_stu, z0_tch, zy, lq = _batch(torch.float64, C=4)
    for t in ([0, 1, 2], [2, 0, 1]):
        zs = z0_stu.clone().requires_grad_(True)
        loss, info = hsd_loss(teacher, zs, z0_tch, zy, lq, t=torch.tensor(t), generator=torch.Generator().manual_seed(1))
        loss.backward()
        w2 = _w2(teacher.sched, torch.tensor(t), zs)
        expected = w2 * (z0_stu - z0_tch + info["x0_hat_tch"] - info["x0_hat_stu"]) / zs.numel()
        torch.testing.assert_close(zs.grad, expected, rtol=1e-6, atol=1e-6 * expected.abs().max().item())
        # the paper's printed weights (eq. 8: sqrt(eta*kappa); eq. 16: sqrt(eta)) are not what the loss computes
        eta = teacher.sched.etas[torch.tensor(t)].view(-1, 1, 1, 1)
        wrong = (1 - eta) / (eta * teacher.sched.kappa).sqrt() * expected / w2
        assert (zs.grad - wrong).abs().max() > 0.1 * expected.abs().max()


def test_hsd_gradient_identity_tiny_teacher(tiny):
    "The same identity with a real (tiny, float32) DiffusionSR, to float32 round-off."
    z0_stu, z0_tch, zy, lq = _batch()
    zs = z0_stu.clone().requires_grad_(True)
    loss, info = hsd_loss(tiny, zs, z0_tch, zy, lq, generator=torch.Generator().manual_seed(2))
    loss.backward()
    expected = _w2(tiny.sched, info["t"], zs) * (z0_stu - z0_tch + info["x0_hat_tch"] - info["x0_hat_stu"])
    torch.testing.assert_close(zs.grad * zs.numel(), expected, rtol=1e-4, atol=1e-5 * expected.abs().max().item())


def test_sds_gradient_identity():
    "SDS: grad = w2 (z0_stu - F(z_stu)) / N (the noise cancels), and it equals sg(g)/N with g = eps_hat - eps'."
    teacher = StandIn()
    z0_stu, _, zy, lq = _batch(torch.float64, C=4)
    zs = z0_stu.clone().requires_grad_(True)
    noise = renoise_noise(zs, torch.Generator().manual_seed(3))
    loss, info = sds_loss(teacher, zs, zy, lq, t=1, noise=noise)
    loss.backward()
    expected = _w2(teacher.sched, info["t"], zs) * (z0_stu - info["x0_hat_stu"]) / zs.numel()
    torch.testing.assert_close(zs.grad, expected, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(zs.grad * zs.numel(), info["g"])


def test_hsd_zero_at_optimum_sds_not(tiny):
    "z0_stu == z0_tch: HSD's g (and gradient) is exactly zero; SDS's is not (its bias)."
    _, z0_tch, zy, lq = _batch()
    for t in range(3):
        zs = z0_tch.clone().requires_grad_(True)
        loss, info = hsd_loss(tiny, zs, z0_tch, zy, lq, t=t, generator=torch.Generator().manual_seed(t))
        loss.backward()
        assert info["g"].abs().max().item() == 0.0 and zs.grad.abs().max().item() == 0.0
        zs = z0_tch.clone().requires_grad_(True)
        loss, info = sds_loss(tiny, zs, zy, lq, t=t, generator=torch.Generator().manual_seed(t))
        loss.backward()
        assert info["g_rms"] > 1e-3 and zs.grad.abs().max().item() > 0


def test_hsd_is_sds_difference(tiny):
    "With the same t' and eps': g_HSD(stu, tch) = g_SDS(stu) - g_SDS(tch)."
    z0_stu, z0_tch, zy, lq = _batch()
    gen = lambda: torch.Generator().manual_seed(5)
    _, h = hsd_loss(tiny, z0_stu, z0_tch, zy, lq, generator=gen())
    _, s1 = sds_loss(tiny, z0_stu, zy, lq, generator=gen())
    _, s2 = sds_loss(tiny, z0_tch, zy, lq, generator=gen())
    torch.testing.assert_close(h["g"], s1["g"] - s2["g"], rtol=1e-4, atol=1e-4 * h["g"].abs().max().item())


def test_no_gradient_reaches_teacher(tiny):
    "Teacher parameters that require grad get none from HSD/SDS; the student graph still backpropagates."
    z0_stu, z0_tch, zy, lq = _batch()
    for p in tiny.parameters(): p.requires_grad_(True)
    try:
        for kind in ("hsd", "sds"):
            zs = z0_stu.clone().requires_grad_(True)
            loss, info = score_distill_loss(kind, tiny, zs, z0_tch.clone().requires_grad_(True), zy, lq,
                                            generator=torch.Generator().manual_seed(0))
            assert info["x0_hat_stu"].grad_fn is None and not info["g"].requires_grad   # no graph through F_phi
            loss.backward()
            assert all(p.grad is None for p in tiny.parameters()), kind
            assert zs.grad is not None and zs.grad.abs().sum() > 0
    finally:
        for p in tiny.parameters(): p.requires_grad_(False)


def test_same_noise_for_both_branches():
    "Both teacher calls get latents re-noised with one eps' at one t': z_stu - z_tch = (1 - eta)(z0_stu - z0_tch)."
    teacher = StandIn()
    rec = Recorder(teacher)
    z0_stu, z0_tch, zy, lq = _batch(torch.float64, C=4)
    _, info = hsd_loss(teacher, z0_stu, z0_tch, zy, lq, generator=torch.Generator().manual_seed(6))
    (z_stu, t_stu), (z_tch, t_tch) = rec.calls
    assert torch.equal(t_stu, t_tch) and torch.equal(t_stu, info["t"])
    eta = teacher.sched.etas[info["t"]].view(-1, 1, 1, 1)
    torch.testing.assert_close(z_stu - z_tch, (1 - eta) * (z0_stu - z0_tch))
    # and the injected noise is the one used
    noise = renoise_noise(z0_stu, torch.Generator().manual_seed(7))
    rec.calls.clear()
    hsd_loss(teacher, z0_stu, z0_tch, zy, lq, t=1, noise=noise)
    torch.testing.assert_close(rec.calls[0][0], q_sample(z0_stu, zy, torch.tensor([1] * 3), teacher.sched, noise=noise))
    torch.testing.assert_close(rec.calls[1][0], q_sample(z0_tch, zy, torch.tensor([1] * 3), teacher.sched, noise=noise))


def test_tprime_in_small_range():
    "t' is uniform over {0,1,2} (paper steps 1..3), capped at T-1, reproducible from a generator."
    t = sample_tprime(3000, 15, torch.Generator().manual_seed(0))
    assert t.dtype == torch.int64 and t.shape == (3000,)
    counts = torch.bincount(t, minlength=3)
    assert len(counts) == 3 and counts.min() > 900
    assert int(sample_tprime(500, 4, torch.Generator().manual_seed(0), t_high=10).max()) == 3
    assert int(sample_tprime(500, 15, torch.Generator().manual_seed(0), t_high=14).max()) == 13   # 'all t' variant
    assert torch.equal(sample_tprime(8, 15, torch.Generator().manual_seed(1)), sample_tprime(8, 15, torch.Generator().manual_seed(1)))
    with pytest.raises(ValueError, match="t_high"): sample_tprime(2, 15, t_high=0)
    teacher = StandIn()
    z0_stu, z0_tch, zy, lq = _batch(torch.float64, C=4, B=16)
    seen = set()
    for s in range(5):
        _, info = hsd_loss(teacher, z0_stu, z0_tch, zy, lq, generator=torch.Generator().manual_seed(s))
        seen |= set(info["t"].tolist())
    assert seen == {0, 1, 2}


def test_uniform_legacy_noise():
    "uniform_legacy draws U[0,1): in range, mean 0.5, so z_t' is shifted by 0.5 kappa sqrt(eta) vs Gaussian."
    like = torch.zeros(4, 48, 32, 32)
    nu = renoise_noise(like, torch.Generator().manual_seed(0), "uniform_legacy")
    ng = renoise_noise(like, torch.Generator().manual_seed(0))
    assert nu.min() >= 0 and nu.max() < 1 and abs(nu.mean().item() - 0.5) < 0.01
    assert abs(ng.mean().item()) < 0.01 and abs(ng.std().item() - 1) < 0.01
    with pytest.raises(ValueError, match="noise_dist"): renoise_noise(like, noise_dist="uniform")
    teacher = StandIn()
    z0_stu, z0_tch, zy, lq = _batch(torch.float64, C=4, B=4, hw=64)
    shift = {}
    for nd in ("gaussian", "uniform_legacy"):
        rec = Recorder(teacher)
        hsd_loss(teacher, z0_stu, z0_tch, zy, lq, t=2, generator=torch.Generator().manual_seed(1), noise_dist=nd)
        teacher.predict_x0 = rec.inner
        clean = q_sample(z0_stu, zy, torch.tensor([2] * 4), teacher.sched, noise=torch.zeros_like(z0_stu))
        shift[nd] = (rec.calls[0][0] - clean).mean().item()
    std = teacher.sched.kappa_times_sqrt_etas[2].item()
    assert abs(shift["gaussian"]) < 0.02 * std
    assert abs(shift["uniform_legacy"] - 0.5 * std) < 0.02 * std


def test_double_scale_legacy_teacher_input():
    "double_scale_legacy hands predict_x0 scale_input(z); the official x0 head then sees z/(kappa^2 eta+1)."
    teacher = StandIn()
    z0_stu, z0_tch, zy, lq = _batch(torch.float64, C=4)
    noise = renoise_noise(z0_stu, torch.Generator().manual_seed(2))
    t = torch.tensor([0, 1, 2])
    z_stu = q_sample(z0_stu, zy, t, teacher.sched, noise=noise)
    for legacy in (False, True):
        rec = Recorder(teacher)
        _, info = hsd_loss(teacher, z0_stu, z0_tch, zy, lq, t=t, noise=noise, double_scale_legacy=legacy)
        teacher.predict_x0 = rec.inner
        want = scale_input(z_stu, t, teacher.sched) if legacy else z_stu
        torch.testing.assert_close(rec.calls[0][0], want)
    model = tiny_model(head="x0")
    seen = []
    hook = model.unet.register_forward_pre_hook(lambda mod, args: seen.append(args[0].clone()))
    z0_stu, z0_tch, zy, lq = _batch()
    noise = renoise_noise(z0_stu, torch.Generator().manual_seed(3))
    with torch.no_grad():
        for legacy in (False, True):
            hsd_loss(model, z0_stu, z0_tch, zy, lq, t=t, noise=noise, double_scale_legacy=legacy)
    hook.remove()
    z_stu = q_sample(z0_stu, zy, t, model.sched, noise=noise)
    s2 = (model.sched.kappa ** 2 * model.sched.etas[t] + 1).float().view(-1, 1, 1, 1)
    torch.testing.assert_close(seen[0], z_stu / s2.sqrt())                   # ours: scaled once
    torch.testing.assert_close(seen[2], z_stu / s2)                          # released code: scaled twice
    assert not torch.allclose(seen[0], seen[2])


def test_eps_from_x0_kappa_placement():
    "A perfect x0 gives back the exact noise with std kappa*sqrt(eta) (the paper's sqrt(eta*kappa) would not)."
    sched = make_schedule(ScheduleConfig.realsr_v1())
    z0, _, zy, _ = _batch(torch.float64, C=4)
    noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.tensor([0, 5, 14])
    zt = q_sample(z0, zy, t, sched, noise=noise)
    torch.testing.assert_close(eps_from_x0(zt, z0, zy, t, sched), noise)


def test_vanilla_loss():
    z0_stu, z0_tch, _, _ = _batch()
    zs, zt = z0_stu.clone().requires_grad_(True), z0_tch.clone().requires_grad_(True)
    loss = vanilla_loss(zs, zt)
    loss.backward()
    torch.testing.assert_close(loss, torch.nn.functional.mse_loss(z0_stu, z0_tch))
    torch.testing.assert_close(zs.grad, 2 * (z0_stu - z0_tch) / zs.numel())
    assert zt.grad is None
    with pytest.raises(ValueError, match="same shape"): vanilla_loss(zs, zt[:1])


def test_score_distill_loss_dispatch(tiny):
    z0_stu, z0_tch, zy, lq = _batch()
    zs = z0_stu.clone().requires_grad_(True)
    zero, info = score_distill_loss("none", tiny, zs, z0_tch, zy, lq)
    zero.backward()
    assert zero.item() == 0.0 and info == {} and zs.grad is not None and zs.grad.abs().max() == 0
    gen = lambda: torch.Generator().manual_seed(9)
    for kind, fn, args in (("hsd", hsd_loss, (z0_stu, z0_tch)), ("sds", sds_loss, (z0_stu,))):
        a, ia = score_distill_loss(kind, tiny, z0_stu, z0_tch, zy, lq, generator=gen(), t_high=2)
        b, ib = fn(tiny, *args, zy, lq, generator=gen(), t_high=2)
        assert torch.equal(a, b) and torch.equal(ia["t"], ib["t"]) and ia["t"].max() <= 1
        assert {"t", "g_rms", "w2", "x0_hat_stu"} <= set(ia)
    with pytest.raises(ValueError, match="kind must be"): score_distill_loss("dmd", tiny, z0_stu, z0_tch, zy, lq)


def test_bad_inputs(tiny):
    z0_stu, z0_tch, zy, lq = _batch()
    with pytest.raises(ValueError, match="shape"): hsd_loss(tiny, z0_stu, z0_tch[:1], zy, lq)
    with pytest.raises(ValueError, match="noise"): hsd_loss(tiny, z0_stu, z0_tch, zy, lq, noise=z0_stu[:1])
    with pytest.raises(ValueError, match=r"t must be in \[0, 15\)"): hsd_loss(tiny, z0_stu, z0_tch, zy, lq, t=15)
    with pytest.raises(TypeError, match="integer"): sds_loss(tiny, z0_stu, zy, lq, t=torch.tensor([0.5] * 3))


def test_shipped_teacher_real_photo():
    "On a real photo with the shipped teacher: HSD is exactly zero at z0_stu == z0_tch, SDS is not."
    from tadsr.core import load_image, load_pretrained
    from tadsr.teacher import make_lr, sample_latent
    from tiny_model import photo
    teacher = load_pretrained("teacher")
    hr = load_image(photo(128, 128, "chelsea"))
    lr = make_lr(hr)
    _, zy = teacher.encode_pair(None, lr)
    z0_tch = sample_latent(teacher, zy, lr, steps=3, generator=torch.Generator().manual_seed(0))
    _, h = hsd_loss(teacher, z0_tch, z0_tch, zy, lr, generator=torch.Generator().manual_seed(1))
    _, s = sds_loss(teacher, z0_tch, zy, lr, generator=torch.Generator().manual_seed(1))
    assert h["g_rms"] == 0.0 and s["g_rms"] > 0.05


def test_nonfinite_scores_are_zeroed():
    "A NaN from the teacher is zeroed in g (nan_to_num, as the released code) and counted in info['nonfinite']."
    teacher = StandIn()
    inner = teacher.predict_x0
    def leaky(zt, t, zy, lq):
        x = inner(zt, t, zy, lq).clone(); x[0, 0, 0, :2] = float("nan"); return x
    teacher.predict_x0 = leaky
    z0_stu, _, zy, lq = _batch(torch.float64, C=4)
    zs = z0_stu.clone().requires_grad_(True)
    loss, info = sds_loss(teacher, zs, zy, lq, t=0, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert info["nonfinite"] == 2 and torch.isfinite(loss) and torch.isfinite(zs.grad).all()
    assert (info["g"][0, 0, 0, :2] == 0).all() and info["g"].abs().sum() > 0
