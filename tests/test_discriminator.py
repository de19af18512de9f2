"""The time-aware discriminator (lesson 10): t-dependence, gradient routing through the frozen
teacher, logit shapes for the CPU and official presets, hinge-loss values."""
from types import SimpleNamespace

import pytest
import torch

from tadsr.discriminator import (TimeAwareDiscriminator, d_hinge_loss, feature_shapes, freeze, g_hinge_loss,
                                 make_discriminator, noisy_features, sample_t_disc)
from tadsr.model import DiffusionSR, TeacherConfig
from tadsr.unet import UNetConfig, count_params
from tiny_model import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")   # fixture in conftest.py

OFFICIAL_SHAPES = [(160, 32, 32), (320, 16, 16), (320, 8, 8), (640, 8, 8), (640, 8, 8)]   # the official UNet's encoder, 64x64 latent


def perturb_(disc, seed=0, std=0.05):
    "Random weights for the zero-initialised convs (D is constant until training moves them)."
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for s in disc.scales: s.conv.weight.copy_(torch.randn(s.conv.weight.shape, generator=g) * std)
    return disc


def random_feats(shapes, B=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, *s, generator=g) for s in shapes]


@pytest.fixture(scope="module")
def tiny():
    return freeze(tiny_model(seed=0))


def tiny_batch(teacher, B=2, seed=0):
    "Latents (z0, zy) and lq for a 32x32 HR / 8x8 LR batch of the tiny model."
    g = torch.Generator().manual_seed(seed)
    hr = torch.rand(B, 3, 32, 32, generator=g) * 2 - 1
    lq = torch.nn.functional.avg_pool2d(hr, 4)
    z0, zy = teacher.encode_pair(hr, lq)
    return z0, zy, lq


# --- t-dependence -------------------------------------------------------------------------------------------------

def test_constant_at_init():
    disc = TimeAwareDiscriminator([32, 64], embed_dim=16).eval()
    a = disc(random_feats([(32, 8, 8), (64, 4, 4)], seed=0), torch.tensor([0, 3]))
    b = disc(random_feats([(32, 8, 8), (64, 4, 4)], seed=1), torch.tensor([13, 7]))
    assert torch.equal(a, b), "zero-initialised convs: D must ignore its input at initialisation"


@pytest.mark.parametrize("time_aware", [True, False])
def test_output_depends_on_t_only_when_time_aware(time_aware):
    torch.manual_seed(0)
    disc = perturb_(TimeAwareDiscriminator([32, 64, 96], embed_dim=32, time_aware=time_aware)).eval()
    feats = random_feats([(32, 8, 8), (64, 4, 4), (96, 4, 4)])
    t_a, t_b = torch.tensor([0, 0]), torch.tensor([13, 13])
    with torch.no_grad():
        diff = (disc(feats, t_a) - disc(feats, t_b)).abs().max().item()
    if time_aware: assert diff > 1e-3, f"time-aware D should change with t; max |diff| = {diff}"
    else: assert diff == 0.0, f"plain D must not see t; max |diff| = {diff}"


def test_per_sample_t():
    "Each sample uses its own t: changing sample 1's t leaves sample 0's logits alone."
    torch.manual_seed(0)
    disc = perturb_(TimeAwareDiscriminator([32], embed_dim=32)).eval()
    feats = random_feats([(32, 4, 4)])
    with torch.no_grad():
        a, b = disc(feats, torch.tensor([2, 2])), disc(feats, torch.tensor([2, 11]))
    assert torch.equal(a[0], b[0]) and not torch.allclose(a[1], b[1])


# --- gradient routing ---------------------------------------------------------------------------------------------

def test_teacher_frozen_through_d_and_g_steps(tiny):
    teacher = tiny
    snapshot = {k: v.clone() for k, v in teacher.state_dict().items()}
    z0, zy, lq = tiny_batch(teacher)
    z0_fake = (z0 + 0.1 * torch.randn_like(z0)).requires_grad_(True)          # stands in for the student output
    g = torch.Generator().manual_seed(0)
    t = sample_t_disc(2, teacher.T, generator=g)
    noise = torch.randn(z0.shape, generator=g)
    disc = make_discriminator(teacher)
    opt = torch.optim.AdamW(disc.parameters(), lr=1e-3, weight_decay=0.0)
    with torch.no_grad(): real = noisy_features(teacher, z0, zy, lq, t, noise)
    fake = noisy_features(teacher, z0_fake, zy, lq, t, noise)
    assert all(f.requires_grad for f in fake), "fake features must keep the graph back to z0_fake"

    before = [p.detach().clone() for p in disc.parameters()]
    opt.zero_grad(); d_hinge_loss(disc, real, fake, t).backward(); opt.step()
    assert z0_fake.grad is None, "the D loss must detach the fake features"
    assert any(not torch.equal(a, p) for a, p in zip(before, disc.parameters())), "D step did not move D"

    g_hinge_loss(disc, fake, t).backward()
    assert z0_fake.grad is not None and z0_fake.grad.abs().sum() > 0, "G loss sent no gradient to the student output"
    assert all(p.grad is None for p in teacher.parameters()), "the frozen teacher collected gradient"
    for k, v in teacher.state_dict().items(): assert torch.equal(v, snapshot[k]), f"teacher tensor {k} changed"


def test_freeze():
    m = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 1))
    assert freeze(m) is m and not any(p.requires_grad for p in m.parameters())


def test_noisy_features_matches_q_sample(tiny):
    from tadsr.diffusion import q_sample
    z0, zy, lq = tiny_batch(tiny)
    t, noise = torch.tensor([0, 13]), torch.randn_like(z0)
    with torch.no_grad():
        a = noisy_features(tiny, z0, zy, lq, t, noise)
        b = tiny.features(q_sample(z0, zy, t, tiny.sched, noise=noise), t, zy, lq)
    assert all(torch.equal(x, y) for x, y in zip(a, b))


# --- shapes and sizes ---------------------------------------------------------------------------------------------

def test_cpu_teacher_shapes():
    teacher = freeze(DiffusionSR(TeacherConfig.cpu()))                   # random weights: only shapes matter here
    disc = make_discriminator(teacher)
    assert disc.channels == [64, 64, 96, 96, 96]
    assert disc.scales[0].mod.embed_dim == 32                           # the CPU UNet's model_channels
    shapes = feature_shapes(teacher, side=32)
    assert shapes == [(64, 16, 16), (64, 8, 8), (96, 4, 4), (96, 4, 4), (96, 4, 4)]
    out = disc(random_feats(shapes, B=3), torch.tensor([0, 5, 13]))
    assert out.shape == (3, 64 * (256 + 64 + 3 * 16))


def test_official_shapes_on_meta():
    with torch.device("meta"): unet = UNetConfig.official_realsr().build()
    assert feature_shapes(unet, side=64) == OFFICIAL_SHAPES
    fake_teacher = SimpleNamespace(unet=unet, features=lambda zt, t, zy, lq: unet.encode_features(zt, t, lq))
    disc = make_discriminator(fake_teacher)                              # built where the teacher lives: meta
    assert disc.channels == [160, 320, 320, 640, 640]
    assert [s.head.cls.in_channels for s in disc.scales] == [160, 320, 320, 640, 640]
    assert disc.scales[0].mod.embed_dim == 160
    assert next(disc.parameters()).device.type == "meta"
    out = disc([torch.zeros(2, *s, device="meta") for s in OFFICIAL_SHAPES], torch.zeros(2, dtype=torch.long, device="meta"))
    assert out.shape == (2, 94_208)
    plain = TimeAwareDiscriminator(disc.channels, embed_dim=160, time_aware=False)   # CPU: meta builds are slow
    assert count_params(disc) - count_params(plain) == sum(160 * 2 * c + 2 * c for c, _, _ in OFFICIAL_SHAPES)


def test_channel_mismatch_is_explained():
    disc = TimeAwareDiscriminator([32, 64], embed_dim=16)
    with pytest.raises(ValueError, match="make_discriminator"):
        disc(random_feats([(32, 4, 4), (32, 4, 4)]), torch.tensor([0, 1]))


def test_spectral_norm_is_active():
    disc = TimeAwareDiscriminator([64], embed_dim=16)
    for layer in (disc.scales[0].head.block_a[0], disc.scales[0].head.block_b[0], disc.scales[0].head.cls):
        sigma = torch.linalg.matrix_norm(layer.weight.detach().flatten(1), ord=2).item()
        assert abs(sigma - 1) < 0.05, f"largest singular value {sigma}, expected ~1 under spectral norm"


# --- t sampling and losses ----------------------------------------------------------------------------------------

def test_sample_t_disc():
    t = sample_t_disc(20_000, 15, generator=torch.Generator().manual_seed(0))
    assert t.dtype == torch.long and set(t.tolist()) == set(range(14))
    counts = torch.bincount(t, minlength=14).float()
    assert (counts / counts.mean() - 1).abs().max() < 0.1, "not uniform"
    assert torch.equal(sample_t_disc(4, 4, torch.Generator().manual_seed(1)), sample_t_disc(4, 4, torch.Generator().manual_seed(1)))
    assert sample_t_disc(4, 4).max() <= 2                                 # faces (T=4): {0, 1, 2}
    with pytest.raises(ValueError): sample_t_disc(3, 1)


def _identity_disc(feats, t): return feats[0]                             # logits in, logits out


def test_hinge_values():
    real, fake = torch.tensor([[2.0, 0.5, -1.0]]), torch.tensor([[-2.0, 0.0, 1.0]])
    assert d_hinge_loss(_identity_disc, [real], [fake], None).item() == pytest.approx(5 / 6 + 1)
    assert g_hinge_loss(_identity_disc, [fake], None).item() == pytest.approx(1 / 3)
    assert d_hinge_loss(_identity_disc, [torch.full((2, 5), 3.0)], [torch.full((2, 5), -3.0)], None).item() == 0.0


def test_hinge_is_flat_mean_over_all_logits():
    "Two scales of different sizes: the loss is the mean over all logits, not the mean of per-scale means."
    real = torch.cat([torch.full((1, 3), 0.0), torch.full((1, 1), 2.0)], dim=1)   # relu(1-x): 1,1,1,0 -> 0.75
    fake = torch.full((1, 4), -1.0)                                               # relu(1+x): 0
    assert d_hinge_loss(_identity_disc, [real], [fake], None).item() == pytest.approx(0.75)


def test_d_learns_to_separate_real_from_blurred(tiny):
    "With something to find (HR latents vs the LR latent itself, at t = 0), a few D steps pull the hinge loss below 2:"
    " the zero-initialised heads do move, so a loss that stays at 2.00 in a distillation run means real and fake look alike."
    teacher = tiny
    z0, zy, lq = tiny_batch(teacher, B=4, seed=1)
    torch.manual_seed(0)
    disc = make_discriminator(teacher)
    opt = torch.optim.AdamW(disc.parameters(), lr=1e-3, weight_decay=0.0)
    t = torch.zeros(4, dtype=torch.long)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(30):
        noise = torch.randn(z0.shape, generator=g)
        with torch.no_grad():
            real = noisy_features(teacher, z0, zy, lq, t, noise); fake = noisy_features(teacher, zy, zy, lq, t, noise)
        loss = d_hinge_loss(disc, real, fake, t)
        opt.zero_grad(); loss.backward(); opt.step(); losses.append(loss.item())
    assert abs(losses[0] - 2.0) < 1e-3                       # constant D at init: D(real) = D(fake)
    assert min(losses[-5:]) < 1.5, losses[::5]
