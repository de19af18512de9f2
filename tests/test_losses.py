"""Properties of the distillation losses (lesson 09, `tadsr.losses`): the HSD gradient identity, no bias at the optimum,
stop-gradient through the teacher, shared noise, t' range, the two legacy switches of the released code; the 1-D toy
against its closed forms (SDS bias, HSD zero, posterior sample = 2 x MMSE); the explorer's plain functions."""
import pytest
import torch
import torch.nn as nn

from tadsr.diffusion import ScheduleConfig, make_schedule, q_sample, scale_input
from tadsr.losses import (GaussMix, ToyTeacher, eps_from_x0, explorer_png, explorer_text, gauss_gain, gauss_mmse,
                          gauss_param_grads, hsd_explorer, hsd_loss, photo_grads, posterior_errors, renoise_noise,
                          sample_tprime, score_distill_loss, sds_loss, toy_eps_hat, toy_g, toy_grad_curves,
                          toy_param_grads, toy_posterior, toy_posterior_sample, toy_sds_bias, toy_teacher_map,
                          toy_x0_hat, vanilla_loss)
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
    from tadsr.degradation import make_lr
    from tiny_model import photo
    teacher = load_pretrained("teacher")
    hr = load_image(photo(128, 128, "chelsea"))
    lr = make_lr(hr)
    _, zy = teacher.encode_pair(None, lr)
    z0_tch = teacher.sample_latent(zy, lr, steps=3, generator=torch.Generator().manual_seed(0))
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


# --- the 1-D toy with an exact teacher (closed forms) -------------------------------------------------------------

K05 = make_schedule(ScheduleConfig.realsr_v1(kappa=0.5))     # the shipped teacher's schedule family
K2 = make_schedule(ScheduleConfig.realsr_v1())               # the official one
GAUSS = GaussMix((0.03,), (0.05,), (1.0,))                   # mu != 0 exercises every term of the closed forms
MIX = GaussMix((-0.1, 0.1), (0.03, 0.03), (0.5, 0.5))


def _coefs(sched, t):
    eta = sched.etas[t].item()
    return 1 - eta, eta, sched.kappa * eta ** 0.5


def _gen(seed): return torch.Generator().manual_seed(seed)


def test_gaussmix_validation_and_sampling():
    with pytest.raises(ValueError, match="one entry per component"): GaussMix((0.0, 1.0), (0.1,), (1.0,))
    with pytest.raises(ValueError, match="sum 1"): GaussMix((0.0,), (0.1,), (0.5,))
    with pytest.raises(ValueError, match="stds must be > 0"): GaussMix((0.0,), (0.0,), (1.0,))
    x = MIX.sample(200000, _gen(0))
    assert abs(x.mean().item()) < 1e-3 and abs(x.var().item() - (0.1 ** 2 + 0.03 ** 2)) < 2e-4   # mixture moments


@pytest.mark.parametrize("sched", [K05, K2])
def test_toy_posterior_gaussian_closed_form(sched):
    "One Gaussian: posterior N(mu + a s^2 r / D, s^2 sigma^2 / D), r = z - a mu - eta y; eps_hat = sigma r / D (Tweedie)."
    z = torch.linspace(-1, 1, 41, dtype=torch.float64)
    mu, s, y = 0.03, 0.05, 0.2
    for t in (0, 1, 7, 14):
        a, eta, sig = _coefs(sched, t)
        r, D = z - a * mu - eta * y, a * a * s * s + sig * sig
        resp, m, v = toy_posterior(z, t, GAUSS, sched, y)
        torch.testing.assert_close(resp[:, 0], torch.ones_like(z))
        torch.testing.assert_close(m[:, 0], mu + a * s * s * r / D, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(v[:, 0], torch.full_like(z, s * s * sig * sig / D), rtol=1e-12, atol=0)
        torch.testing.assert_close(toy_x0_hat(z, t, GAUSS, sched, y), mu + a * s * s * r / D, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(toy_eps_hat(z, t, GAUSS, sched, y), sig * r / D, rtol=1e-9, atol=1e-9)


def test_toy_posterior_mixture_is_bayes_rule():
    "Mixture: posterior mean and variance equal brute-force Bayes' rule on a fine grid."
    z, t = torch.tensor([-0.15, -0.02, 0.0, 0.05, 0.2], dtype=torch.float64), 1
    a, _, sig = _coefs(K05, t)
    grid = torch.linspace(-0.6, 0.6, 60001, dtype=torch.float64)
    x = (grid[1:] + grid[:-1]) / 2
    post = (MIX.cdf(grid[1:]) - MIX.cdf(grid[:-1])) * torch.exp(-0.5 * ((z[:, None] - a * x) / sig) ** 2)
    post = post / post.sum(1, keepdim=True)
    mean = (post * x).sum(1)
    resp, m, v = toy_posterior(z, t, MIX, K05)
    torch.testing.assert_close(toy_x0_hat(z, t, MIX, K05), mean, rtol=0, atol=1e-6)
    var_formula = (resp * (v + m * m)).sum(-1) - (resp * m).sum(-1) ** 2       # law of total variance
    torch.testing.assert_close(var_formula, (post * x * x).sum(1) - mean ** 2, rtol=1e-4, atol=1e-8)


def test_toy_eps_hat_is_the_lessons_eq14():
    "toy_eps_hat = eps_from_x0 (the losses' eq. 14) applied to the exact x0, for y != 0 and per-sample t."
    z = torch.linspace(-0.3, 0.3, 15, dtype=torch.float64).view(-1, 1, 1, 1)
    t = torch.arange(15)
    zy = torch.full_like(z, 0.1)
    tt = t.view(-1, 1, 1, 1)
    x0 = toy_x0_hat(z, tt, MIX, K05, zy)
    torch.testing.assert_close(toy_eps_hat(z, tt, MIX, K05, zy), eps_from_x0(z, x0, zy, t, K05))


def test_toy_teacher_map():
    "Q(u) = mu + s u for one Gaussian; for the mixture cdf(Q(u)) = Phi(u) and Q is increasing."
    u = torch.randn(1000, generator=_gen(0), dtype=torch.float64)
    torch.testing.assert_close(toy_teacher_map(u, GAUSS), 0.03 + 0.05 * u, rtol=0, atol=1e-12)
    q = toy_teacher_map(u, MIX)
    torch.testing.assert_close(MIX.cdf(q), 0.5 * (1 + torch.erf(u / 2 ** 0.5)), rtol=0, atol=1e-12)
    order = u.argsort()
    assert (q[order].diff() > 0).all()


def test_toy_posterior_sample_moments():
    "Posterior samples of one Gaussian at a fixed z_t have the closed-form mean and variance."
    t, z = 2, torch.full((200000,), 0.07, dtype=torch.float64)
    a, _, sig = _coefs(K05, t)
    D = a * a * 0.05 ** 2 + sig * sig
    x = toy_posterior_sample(z, t, GAUSS, K05, generator=_gen(1))
    m, v = 0.03 + a * 0.05 ** 2 * (0.07 - a * 0.03) / D, 0.05 ** 2 * sig * sig / D
    assert abs(x.mean().item() - m) < 4 * (v / 2e5) ** 0.5
    assert abs(x.var().item() / v - 1) < 0.02
    xm = toy_posterior_sample(torch.full((100000,), 0.0, dtype=torch.float64), 0, MIX, K05, generator=_gen(2))
    assert 0.45 < (xm > 0).double().mean().item() < 0.55                  # z_t = 0 at t'=0: both modes, equally


def test_toy_sds_direction_closed_form():
    "Gaussian: per draw g_SDS = k (z0 - mu) + (sigma^2/D - 1) eps' exactly; its mean over eps' is the bias k (z0 - mu)."
    z0 = torch.linspace(-0.2, 0.2, 9, dtype=torch.float64)
    noise = torch.randn(9, generator=_gen(0), dtype=torch.float64)
    for t in (0, 1, 2):
        a, _, sig = _coefs(K05, t)
        D, k = a * a * 0.05 ** 2 + sig * sig, gauss_gain(0.05, K05, t).item()
        torch.testing.assert_close(k, a * sig / D)
        want = k * (z0 - 0.03) + (sig * sig / D - 1) * noise
        torch.testing.assert_close(toy_g("sds", z0, None, t, GAUSS, K05, noise), want, rtol=1e-9, atol=1e-12)
        b, se = toy_sds_bias(z0, t, GAUSS, K05, 20000, _gen(t))
        assert ((b - k * (z0 - 0.03)).abs() < 4 * se).all()
        assert (b[[0, -1]].abs() > 10 * se[[0, -1]]).all()                 # the bias is real, not MC noise


def test_toy_hsd_direction():
    "HSD: g = k (z0_stu - z0_tch) exactly for one Gaussian (the noise cancels); exactly 0 when z0_stu == z0_tch."
    z0s = torch.linspace(-0.2, 0.2, 9, dtype=torch.float64)
    z0t = z0s.flip(0)
    noise = torch.randn(9, generator=_gen(0), dtype=torch.float64)
    for t in (0, 1, 2, 10):
        k = gauss_gain(0.05, K05, t)
        torch.testing.assert_close(toy_g("hsd", z0s, z0t, t, GAUSS, K05, noise), k * (z0s - z0t), rtol=1e-9, atol=1e-12)
        assert toy_g("hsd", z0s, z0s, t, MIX, K05, noise).abs().max() == 0
        assert toy_g("hsd", z0s, z0t, t, MIX, K05, noise).abs().max() > 0
    with pytest.raises(ValueError, match="kind"): toy_g("dmd", z0s, z0t, 0, MIX, K05, noise)


def test_toy_student_gradients_closed_form():
    "E[g dz0/dtheta]: SDS's spread gradient at the optimum is k (mu^2 + s^2) - k mu^2 = k s^2 > 0; HSD's is exactly 0."
    for t in (0, 1, 2):
        k = gauss_gain(0.05, K05, t).item()
        torch.testing.assert_close(gauss_param_grads("sds", GAUSS, K05, t, 0.0, 1.0),
                                   torch.tensor([0.0, k * 0.05 ** 2], dtype=torch.float64))
        torch.testing.assert_close(gauss_param_grads("hsd", GAUSS, K05, t, 0.0, 1.0), torch.zeros(2, dtype=torch.float64))
        sds = toy_param_grads("sds", GAUSS, K05, t, 0.0, 1.0, 40000, _gen(t))
        assert ((sds["mean"] - gauss_param_grads("sds", GAUSS, K05, t, 0.0, 1.0)).abs() < 4 * sds["se"]).all()
        assert sds["mean"][1] > 10 * sds["se"][1]
        for data in (GAUSS, MIX):
            assert toy_param_grads("hsd", data, K05, t, 0.0, 1.0, 2000, _gen(t))["mean"].abs().max() == 0
        for kind, m, c in (("sds", 0.01, 0.7), ("hsd", 0.01, 0.7), ("hsd", 0.0, -1.0), ("sds", -0.02, 0.0)):
            r = toy_param_grads(kind, GAUSS, K05, t, m, c, 40000, _gen(10 + t))
            assert ((r["mean"] - gauss_param_grads(kind, GAUSS, K05, t, m, c)).abs() <= 4 * r["se"] + 1e-12).all(), (kind, m, c)
    with pytest.raises(ValueError, match="one Gaussian"): gauss_param_grads("sds", MIX, K05, 0, 0.0, 1.0)


def test_posterior_sample_has_twice_the_mmse():
    "E(sample - z0)^2 = 2 E(mean - z0)^2 = 2 MMSE (closed form for one Gaussian), any data."
    n = 100000
    for t in (0, 2, 14):
        em, es = posterior_errors(GAUSS, K05, t, n, _gen(t))
        mmse = gauss_mmse(0.05, K05, t).item()
        a, _, sig = _coefs(K05, t)
        torch.testing.assert_close(mmse, 0.05 ** 2 * sig ** 2 / (a * a * 0.05 ** 2 + sig ** 2))
        assert abs(em.mean().item() - mmse) < 4 * em.std().item() / n ** 0.5
        for data in (GAUSS, MIX):
            em, es = posterior_errors(data, K05, t, n, _gen(100 + t))
            ex = es - 2 * em
            assert abs(ex.mean().item()) < 4 * ex.std().item() / n ** 0.5
            assert 1.9 < (es.mean() / em.mean()).item() < 2.1


def test_toy_teacher_through_the_exported_losses():
    "ToyTeacher in sds_loss / hsd_loss gives toy_g's g, and autograd on (m, c) gives the mean of g * dz0/dtheta."
    teacher = ToyTeacher(MIX, K05)
    assert teacher.T == 15
    u, noise = torch.randn(500, generator=_gen(0), dtype=torch.float64), torch.randn(500, generator=_gen(1), dtype=torch.float64)
    q = toy_teacher_map(u, MIX)
    for kind in ("sds", "hsd"):
        theta = torch.tensor([0.02, 0.7], dtype=torch.float64, requires_grad=True)
        z0 = (theta[0] + theta[1] * q).view(-1, 1, 1, 1)
        loss, info = score_distill_loss(kind, teacher, z0, q.view(-1, 1, 1, 1), torch.zeros_like(z0), None, t=2,
                                        noise=noise.view(-1, 1, 1, 1))
        loss.backward()
        g = toy_g(kind, 0.02 + 0.7 * q, q, 2, MIX, K05, noise)
        torch.testing.assert_close(info["g"].flatten(), g, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(theta.grad, torch.stack([g.mean(), (g * q).mean()]), rtol=1e-9, atol=1e-15)
    # a per-sample t' and a non-zero LR value y go through as well
    zy = torch.full((3, 1, 1, 1), 0.2, dtype=torch.float64)
    zt = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64).view(-1, 1, 1, 1)
    x0 = teacher.predict_x0(zt, torch.tensor([0, 1, 2]), zy)
    torch.testing.assert_close(x0.flatten(), torch.stack([toy_x0_hat(zt[i, 0, 0, 0], i, MIX, K05, 0.2) for i in range(3)]))


# --- the explorer's plain functions --------------------------------------------------------------------------------

def test_toy_grad_curves():
    cs = [0.0, 1.0]
    r = toy_grad_curves(GaussMix((0.0,), (0.05,), (1.0,)), K05, cs, n=500)
    assert r["mean"].shape == r["se"].shape == r["closed"].shape == (2, 15, 2)
    assert r["mean"][1, :, 1].abs().max() == 0 and (r["mean"][0, :, 1] > 0).all()          # HSD 0, SDS not, at c = 1
    torch.testing.assert_close(r["closed"][0, 3, 1], gauss_param_grads("sds", GaussMix((0.0,), (0.05,), (1.0,)), K05, 3, 0.0, 1.0)[1])
    assert toy_grad_curves(MIX, K05, cs, n=200)["closed"] is None


def test_photo_grads_and_explorer(tiny):
    "photo_grads batches t' = 0..T-1 without changing g; the explorer's picture and text follow the slider."
    z0_stu, z0_tch, zy, lq = (x[:1] for x in _batch())
    noise = renoise_noise(z0_stu, _gen(4))
    photo = photo_grads(tiny, z0_stu, z0_tch, zy, lq, noise=noise)
    assert photo["hsd"].shape == photo["sds"].shape == (15, 48, 32, 32)
    for t in (0, 7):
        _, h = hsd_loss(tiny, z0_stu, z0_tch, zy, lq, t=t, noise=noise)
        torch.testing.assert_close(photo["hsd"][t:t + 1], h["g"], rtol=1e-4, atol=1e-4 * h["g"].abs().max().item())
        assert abs(photo["rms_hsd"][t].item() - h["g_rms"]) < 1e-4 * h["g_rms"]
    assert ((photo["hf_hsd"] > 0) & (photo["hf_hsd"] < 1)).all() and 0.9 < photo["hf_white"] < 1
    same = photo_grads(tiny, z0_tch, z0_tch, zy, lq, noise=noise)
    assert same["hsd"].abs().max() == 0 and (same["rms_sds"] > 0).all()
    with pytest.raises(ValueError, match="one image"): photo_grads(tiny, *(x[:2] for x in _batch()), noise=None)
    curves = toy_grad_curves(GaussMix((0.0,), (0.05,), (1.0,)), tiny.sched, [0.5, 1.0], n=200)
    png0, png3 = explorer_png(curves, photo, 0), explorer_png(curves, photo, 3)
    assert png0[:8] == b"\x89PNG\r\n\x1a\n" and png0 != png3
    assert (int.from_bytes(png0[16:20], "big"), int.from_bytes(png0[20:24], "big")) == (640, 400)   # fits 1280x900
    text = explorer_text(curves, photo, tiny.sched, 3)
    assert "t' = 3" in text and f"{photo['rms_hsd'][3]:.3f}" in text
    ex = hsd_explorer(curves, photo, tiny.sched)
    slider, img, info = ex.children
    assert img.layout.width == "640px" and img.layout.height == "400px"             # natural size, not stretched
    slider.value = 3
    assert img.value == png3 and info.value == text
